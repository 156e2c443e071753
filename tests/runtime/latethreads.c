/* Driven by a test through stdin: prints its pid, then for each input
 * line starts a thread that runs one round of calls, waits for it and
 * says so. Threads started late find the trace directory wherever it is
 * by then. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

__attribute__((noinline)) int late_work(int r) { return r * 3 + 1; }

static void *late_thread(void *arg) {
  int *r = arg;
  *r = late_work(*r);
  return NULL;
}

int main(void) {
  char line[64];
  int round = 0;
  printf("%d\n", (int)getpid());
  fflush(stdout);
  while (fgets(line, sizeof line, stdin)) {
    pthread_t t;
    int r = ++round;
    if (pthread_create(&t, NULL, late_thread, &r) != 0 ||
        pthread_join(t, NULL) != 0)
      return 1;
    printf("done %d\n", round);
    fflush(stdout);
  }
  return 0;
}

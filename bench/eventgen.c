/* Generates a trace of a chosen size for the analysis benchmarks:
 * THREADS threads (argv[1]) each make CALLS calls of outer(), which calls
 * middle() which calls leaf(): 6 events per outer call. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static volatile long sink;

__attribute__((noinline)) void leaf(long i) { sink += i; }
__attribute__((noinline)) void middle(long i) {
  leaf(i);
  sink ^= i;
}
__attribute__((noinline)) void outer(long i) {
  middle(i);
  sink -= 1;
}

static long calls;

static void *run(void *arg) {
  (void)arg;
  for (long i = 0; i < calls; i++)
    outer(i);
  return 0;
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 4;
  calls = argc > 2 ? atol(argv[2]) : 1000000;
  pthread_t t[64];
  for (int i = 0; i < threads && i < 64; i++)
    pthread_create(&t[i], 0, run, 0);
  for (int i = 0; i < threads && i < 64; i++)
    pthread_join(t[i], 0);
  printf("%ld\n", (long)sink);
  return 0;
}

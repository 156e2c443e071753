/* Driven by a test through stdin while `ftail ctl` switches its tracing:
 * prints its pid, then per input line calls two libc functions through
 * pointers and says so. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Filled at run time from the GOT, which names them. */
size_t (*volatile len)(const char *);
long (*volatile absolute)(long);

__attribute__((noinline)) long round_of_calls(long r) {
  return (long)len("four") + absolute(-r);
}

int main(void) {
  char line[64];
  long round = 0, sum = 0;
  len = strlen;
  absolute = labs;
  printf("%d\n", 0 + (int)getpid());
  fflush(stdout);
  while (fgets(line, sizeof line, stdin)) {
    sum += round_of_calls(++round);
    printf("done %ld\n", round);
    fflush(stdout);
  }
  return sum == 0;
}

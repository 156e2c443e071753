/* Makes CALLS calls of leaf() under nest(), then ends inside fail():
 * "abort" calls abort(), "segv" stores through a null pointer, "kill"
 * sends itself SIGKILL, "sleep" sleeps MS milliseconds and returns. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((noinline)) long leaf(long x) { return x ^ (x >> 3); }

__attribute__((noinline)) void fail(const char *how, int ms) {
  if (strcmp(how, "abort") == 0)
    abort();
  if (strcmp(how, "segv") == 0)
    *(volatile int *)(long)(ms - ms) = 1;
  if (strcmp(how, "kill") == 0)
    kill(getpid(), SIGKILL);
  usleep(ms * 1000);
}

__attribute__((noinline)) long nest(long calls, const char *how, int ms) {
  long sum = 0;
  for (long i = 0; i < calls; i++)
    sum += leaf(i);
  printf("%ld\n", sum);
  fflush(stdout);
  fail(how, ms);
  return sum;
}

int main(int argc, char **argv) {
  long calls = argc > 1 ? atol(argv[1]) : 100000;
  const char *how = argc > 2 ? argv[2] : "sleep";
  int ms = argc > 3 ? atoi(argv[3]) : 0;
  return nest(calls, how, ms) == 42;
}

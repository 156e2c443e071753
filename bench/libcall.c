/* A loop of library calls through the PLT (atoi, in libc): N calls from
 * one function, for bench/libcall.sh. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) long loop(long n, const char *s) {
  long sum = 0;
  for (long i = 0; i < n; i++) {
    sum += atoi(s);
    __asm__ volatile("" ::: "memory"); /* one call per iteration */
  }
  return sum;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000000;
  printf("%ld\n", loop(n, "42"));
  return 0;
}

/* A loop of library calls through the PLT (atoi, in libc): N calls from
 * one function, for bench/libcall.sh. With a second argument `own`, the
 * same loop calls a function of the program instead (the cost a library
 * call is compared with); with `ind`, it calls atoi through a function
 * pointer (`call *%reg`). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((noinline)) int own(const char *s) {
  __asm__ volatile("" ::: "memory");
  return s[0] - '0';
}

__attribute__((noinline)) long loop(long n, const char *s) {
  long sum = 0;
  for (long i = 0; i < n; i++) {
    sum += atoi(s);
    __asm__ volatile("" ::: "memory"); /* one call per iteration */
  }
  return sum;
}

__attribute__((noinline)) long loop_own(long n, const char *s) {
  long sum = 0;
  for (long i = 0; i < n; i++) {
    sum += own(s);
    __asm__ volatile("" ::: "memory");
  }
  return sum;
}

int (*volatile through)(const char *);

__attribute__((noinline)) long loop_ind(long n, const char *s) {
  long sum = 0;
  for (long i = 0; i < n; i++) {
    sum += through(s);
    __asm__ volatile("" ::: "memory");
  }
  return sum;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000000;
  const char *mode = argc > 2 ? argv[2] : "";
  through = atoi;
  long sum = strcmp(mode, "own") == 0   ? loop_own(n, "42")
             : strcmp(mode, "ind") == 0 ? loop_ind(n, "42")
                                        : loop(n, "42");
  printf("%ld\n", sum);
  return 0;
}

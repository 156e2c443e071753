/* Many calls under a few open frames: nest(DEPTH) calls leaf() CALLS
 * times at the bottom. Prints the sum, then sleeps MS milliseconds. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((noinline)) long leaf(long x) { return x ^ (x >> 3); }

__attribute__((noinline)) long nest(int depth, long calls) {
  if (depth > 0)
    return nest(depth - 1, calls) + 1;
  long sum = 0;
  for (long i = 0; i < calls; i++)
    sum += leaf(i);
  return sum;
}

int main(int argc, char **argv) {
  long calls = argc > 1 ? atol(argv[1]) : 1000000;
  printf("%ld\n", nest(20, calls));
  fflush(stdout);
  if (argc > 2)
    usleep(atoi(argv[2]) * 1000);
  return 0;
}

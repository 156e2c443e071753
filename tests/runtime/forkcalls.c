/* Several processes at once: forks N children, each of which (and the
 * parent) calls leaf() CALLS times under nest(); the parent waits for
 * them. Prints the parent's sum. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
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
  int n = argc > 1 ? atoi(argv[1]) : 4;
  long calls = argc > 2 ? atol(argv[2]) : 1000000;
  for (int i = 0; i < n; i++) {
    if (fork() == 0) {
      nest(10, calls);
      return 0;
    }
  }
  long sum = nest(10, calls);
  while (wait(NULL) > 0) {
  }
  printf("%ld\n", sum);
  return 0;
}

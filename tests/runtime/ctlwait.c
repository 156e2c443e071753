/* Driven by a test through stdin while `ftail ctl` switches its tracing:
 * prints its pid, then runs one round of calls per input line and says
 * so. */
#include <stdio.h>
#include <unistd.h>

__attribute__((noinline)) int alpha(int r) { return r * 2; }
__attribute__((noinline)) int beta(int r) { return r + 7; }
__attribute__((noinline)) int round_of_calls(int r) {
  return alpha(r) + beta(r);
}

int main(void) {
  char line[64];
  int round = 0, sum = 0;
  printf("%d\n", (int)getpid());
  fflush(stdout);
  while (fgets(line, sizeof line, stdin)) {
    sum += round_of_calls(++round);
    printf("done %d\n", round);
    fflush(stdout);
  }
  return sum == 0;
}

/* A program started as root that becomes another user, as daemons do:
 * prints its pid, waits for a line, drops to uid and gid 65534 and says
 * so, then runs one round of calls per input line. */
#include <grp.h>
#include <stdio.h>
#include <unistd.h>

__attribute__((noinline)) int alpha(int r) { return r * 2; }
__attribute__((noinline)) int round_of_calls(int r) { return alpha(r) + 1; }

int main(void) {
  char line[64];
  int round = 0, sum = 0;
  printf("%d\n", (int)getpid());
  fflush(stdout);
  if (!fgets(line, sizeof line, stdin))
    return 1;
  if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
    return 1;
  printf("dropped\n");
  fflush(stdout);
  while (fgets(line, sizeof line, stdin)) {
    sum += round_of_calls(++round);
    printf("done %d\n", round);
    fflush(stdout);
  }
  return sum == 0;
}

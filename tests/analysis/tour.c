/* The analysis commands' fixture: a fixed call structure (the counts in
 * the golden files are exact), one slow call (sleeps 3 ms) and one tail
 * call. Every function touches `calls`, so no compiler folds a call. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile int calls;

__attribute__((noinline)) int helper(int x) {
  calls++;
  return x * 3 + 1;
}

__attribute__((noinline)) int parse(const char *s) {
  int n = 0;
  calls++;
  for (size_t i = 0; i < strlen(s); i++)
    n += helper(s[i]);
  return n;
}

__attribute__((noinline)) int depth(int n) {
  if (n == 0)
    return 0;
  int r = depth(n - 1);
  calls++; /* after the call: no loop can replace the recursion */
  return r + 1;
}

__attribute__((noinline)) int slow(void) {
  calls++;
  usleep(3000);
  return 1;
}

/* Ends in a tail call (to helper). */
__attribute__((noinline)) int forward(int x) {
  calls++;
  return helper(x + 1);
}

int main(void) {
  int total = 0;
  for (int i = 0; i < 3; i++)
    total += parse("ab");
  total += depth(3);
  total += slow();
  total += forward(4);
  printf("%d %d\n", total, calls);
  return 0;
}

/* Killed with SIGKILL in the middle of traced frames: what was recorded
 * before must still be readable. */
#include <signal.h>
#include <unistd.h>

__attribute__((noinline)) int work(int n) { return n <= 1 ? 1 : work(n - 1) + 1; }
__attribute__((noinline)) void die(void) { kill(getpid(), SIGKILL); }
__attribute__((noinline)) void inner(void) { work(100); die(); }

int main(void) { inner(); return 0; }

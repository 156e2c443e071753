/* longjmp out of traced frames, signal handlers (on an alternate stack and
 * not), fork, and an exit from deep inside: each trace must be balanced. */
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static jmp_buf env;
static volatile int handled;

__attribute__((noinline)) void deepest(int n) { if (n == 0) longjmp(env, 1); deepest(n - 1); }
__attribute__((noinline)) int middle(int n) { deepest(n); return n; }
__attribute__((noinline)) int leaf(int x) { return x * 3; }
__attribute__((noinline)) void on_signal(int sig) { handled += leaf(sig); }
__attribute__((noinline)) void raise_it(int sig) { raise(sig); }
__attribute__((noinline)) int child_work(int n) { return n <= 1 ? 1 : n * child_work(n - 1); }
__attribute__((noinline)) void finish(int code) { exit(code); }

int main(void) {
    int jumps = 0;
    for (int i = 0; i < 5; i++)
        if (setjmp(env) == 0) middle(i + 3);
        else jumps++;

    signal(SIGUSR1, on_signal);
    raise_it(SIGUSR1);
    stack_t ss = {.ss_sp = malloc(1 << 16), .ss_size = 1 << 16};
    sigaltstack(&ss, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_ONSTACK;
    sigaction(SIGUSR2, &sa, NULL);
    raise_it(SIGUSR2);

    pid_t pid = fork();
    if (pid == 0) {
        printf("child %d\n", child_work(10) > 0);
        fflush(stdout);
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    printf("jumps=%d handled=%d leaf=%d\n", jumps, handled, leaf(2));
    fflush(stdout);
    finish(3);
}

/* What a program started under `ftail record` sees of its own process:
 * its pid (which must be the one its starter was given), its children
 * (none), a pending SIGCHLD (none) and its open descriptors (the ones it
 * inherited, no more). With the argument "wait" it then waits for a
 * signal; with "calls N" it makes N traced calls first. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

__attribute__((noinline)) static int leaf(int x) {
    __asm__ volatile("" ::: "memory");
    return x + 1;
}

static int cmp(const void *a, const void *b) {
    return *(const int *)a - *(const int *)b;
}

static void list_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    int fds[256], n = 0, self = d ? dirfd(d) : -1;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL && n < 256) {
        if (e->d_name[0] != '.' && atoi(e->d_name) != self)
            fds[n++] = atoi(e->d_name);
    }
    if (d)
        closedir(d);
    qsort(fds, n, sizeof fds[0], cmp);
    printf("fds");
    for (int i = 0; i < n; i++)
        printf(" %d", fds[i]);
    printf("\n");
}

int main(int argc, char **argv) {
    printf("pid %d\n", (int)getpid());
    int status;
    errno = 0;
    pid_t w = waitpid(-1, &status, WNOHANG);
    printf("children %s\n", w < 0 && errno == ECHILD ? "none" : "some");
    sigset_t pending;
    sigpending(&pending);
    printf("sigchld %s\n", sigismember(&pending, SIGCHLD) ? "pending" : "none");
    list_fds();
    int calls = argc > 2 && strcmp(argv[1], "calls") == 0 ? atoi(argv[2]) : 3;
    int sum = 0;
    for (int i = 0; i < calls; i++)
        sum = leaf(sum);
    printf("sum %d\n", sum);
    fflush(stdout);
    if (argc > 1 && strcmp(argv[1], "wait") == 0)
        for (;;)
            pause();
    return 0;
}

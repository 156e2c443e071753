/* errno is the program's: a slow path of the runtime that fails (here the
 * event file of a new thread cannot be opened: no file descriptor left)
 * must not change it. Run with `-N worker` so that the thread's first
 * traced call comes after it sets errno. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/resource.h>

/* noipa: the compiler must not assume the call leaves errno alone. */
__attribute__((noipa)) int traced(int x) { return x + 1; }

static void *worker(void *arg) {
    (void)arg;
    errno = EDOM;
    int r = traced(1);
    return (void *)(long)(errno == EDOM && r == 2);
}

int main(void) {
    struct rlimit none = {0, 0};
    getrlimit(RLIMIT_NOFILE, &none);
    none.rlim_cur = 3; /* stdin, stdout, stderr: nothing more opens */
    setrlimit(RLIMIT_NOFILE, &none);
    pthread_t t;
    void *ok = 0;
    pthread_create(&t, 0, worker, 0);
    pthread_join(t, &ok);
    printf("errno kept: %s\n", ok ? "yes" : "no");
    return ok ? 0 : 1;
}

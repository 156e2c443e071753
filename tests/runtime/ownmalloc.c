#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

/* An allocator that forwards to libc's, resolved in a constructor (as
 * many interposers do): a call before that constructor ran would jump
 * to a null pointer. Counts every call. */
static void *(*real_malloc)(size_t);
static void (*real_free)(void *);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static long calls;
static char early[1 << 16];
static size_t early_used;

__attribute__((constructor)) static void resolve(void) {
    real_calloc = dlsym(RTLD_NEXT, "calloc");
    real_malloc = dlsym(RTLD_NEXT, "malloc");
    real_free = dlsym(RTLD_NEXT, "free");
    real_realloc = dlsym(RTLD_NEXT, "realloc");
}

__attribute__((noinline)) void *malloc(size_t n) { calls++; return real_malloc(n); }
__attribute__((noinline)) void free(void *p) {
    if ((char *)p >= early && (char *)p < early + sizeof early) return;
    calls++;
    real_free(p);
}
__attribute__((noinline)) void *calloc(size_t a, size_t b) {
    calls++;
    if (!real_calloc) { /* dlsym's own calloc, inside resolve() */
        void *p = early + early_used;
        early_used += (a * b + 15) & ~15UL;
        return p;
    }
    return real_calloc(a, b);
}
__attribute__((noinline)) void *realloc(void *p, size_t n) { calls++; return real_realloc(p, n); }

__attribute__((noinline)) int work(int n) {
    char *s = malloc(32);
    snprintf(s, 32, "%d", n);
    s = realloc(s, 64);
    int r = strlen(s);
    free(s);
    return r;
}

int main(void) {
    long before = calls;
    int t = 0;
    for (int i = 0; i < 10; i++) t += work(i);
    long in_main = calls - before;
    pid_t pid = fork();
    if (pid == 0) {
        long c0 = calls;
        t += work(99);
        /* the child's count: its own calls only */
        char line[64];
        int n = snprintf(line, sizeof line, "child calls %ld\n", calls - c0);
        write(1, line, n);
        _exit(0);
    }
    waitpid(pid, 0, 0);
    char line[128];
    int n = snprintf(line, sizeof line, "before main %ld, in main %ld, sum %d\n", before, in_main, t);
    write(1, line, n);
    return 0;
}

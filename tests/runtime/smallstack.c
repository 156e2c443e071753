/* A coroutine on a small stack (8 KiB above a guard page) that uses most
 * of it, then, at its deepest, runs traced code whose events take the
 * runtime's slow paths: the first event after being resumed, buffer
 * extensions, and (with `ftail record -N thread_start -N bar -N dig`,
 * argument `thread`) a thread's very first event. Prints how much of the
 * coroutine stack was used; a traced run must use no more than a few
 * words more than an untraced one.
 *
 *   smallstack [thread] */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#define NOINLINE __attribute__((noinline))

enum { PAGE = 4096, STACK = 8 << 10, DEPTH = 11 };

static char *stack;
static ucontext_t main_uc, co_uc;
static volatile int sink;

NOINLINE int leaf(int x) {
    sink += x;
    return x;
}

/* A tail call at -O2. */
NOINLINE int tail(int x) { return leaf(x + 1); }

NOINLINE void work(void) {
    swapcontext(&co_uc, &main_uc);
    for (int i = 0; i < 300000; i++) tail(i);
}

/* About half a KiB per level. */
NOINLINE void dig(int n) {
    volatile char pad[448];
    pad[0] = (char)n;
    if (n == 0) work();
    else dig(n - 1);
    sink += pad[0];
}

NOINLINE void bar(void) { dig(DEPTH); }

static void *run(void *arg) {
    char *map = mmap(NULL, PAGE + STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) return NULL;
    mprotect(map, PAGE, PROT_NONE);
    stack = map + PAGE;
    memset(stack, 0xaa, STACK);
    getcontext(&co_uc);
    co_uc.uc_stack.ss_sp = stack;
    co_uc.uc_stack.ss_size = STACK;
    co_uc.uc_link = &main_uc;
    makecontext(&co_uc, bar, 0);
    swapcontext(&main_uc, &co_uc);
    swapcontext(&main_uc, &co_uc);
    int unused = 0;
    while (unused < STACK && (unsigned char)stack[unused] == 0xaa) unused++;
    printf("used %d of %d bytes\n", STACK - unused, STACK);
    return arg;
}

NOINLINE void *thread_start(void *arg) { return run(arg); }

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "thread") == 0) {
        pthread_t t;
        pthread_create(&t, NULL, thread_start, NULL);
        pthread_join(t, NULL);
    } else {
        run(NULL);
    }
    return 0;
}

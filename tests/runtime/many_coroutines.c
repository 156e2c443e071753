/* A round-robin scheduler over N coroutines (16 KiB stacks from malloc),
 * each yielding ROUNDS times, then returning through uc_link.
 *
 *   many_coroutines N ROUNDS */
#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>

#define NOINLINE __attribute__((noinline))

enum { STACK = 16 << 10 };

static int rounds;
static ucontext_t sched_uc, *current;
static volatile long sink;

NOINLINE int leaf(int x) {
    sink += x;
    return x;
}

NOINLINE void body(void) {
    ucontext_t *self = current;
    for (int r = 0; r < rounds; r++) {
        leaf(r);
        swapcontext(self, &sched_uc);
    }
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    int n = atoi(argv[1]);
    rounds = atoi(argv[2]);
    ucontext_t *co = calloc(n, sizeof *co);
    for (int i = 0; i < n; i++) {
        getcontext(&co[i]);
        co[i].uc_stack.ss_sp = malloc(STACK);
        co[i].uc_stack.ss_size = STACK;
        co[i].uc_link = &sched_uc;
        makecontext(&co[i], body, 0);
    }
    for (int r = 0; r <= rounds; r++)
        for (int i = 0; i < n; i++) {
            current = &co[i];
            swapcontext(&sched_uc, &co[i]);
        }
    printf("%d coroutines, %d rounds, sink=%ld\n", n, rounds, sink);
    return 0;
}

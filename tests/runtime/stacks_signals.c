/* Coroutines ping-pong through tail calls to swapcontext in five threads
 * (their stacks in the thread's frame or from malloc) while a timer signal
 * every 100 us runs traced code in its handler, interrupting the runtime's
 * switch bookkeeping, its slow paths and the switches themselves. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <ucontext.h>

#define NOINLINE __attribute__((noinline))

enum { STACK = 64 << 10, ROUNDS = 10000, THREADS = 4 };

static __thread ucontext_t main_uc, co_uc;
static volatile long sink;

NOINLINE int leaf(int x) {
    sink += x;
    return x;
}

NOINLINE int tail(int x) { return leaf(x + 1); }

/* A tail call at -O2. */
NOINLINE void yield_to(ucontext_t *from, ucontext_t *to) { swapcontext(from, to); }

NOINLINE void on_alarm(int sig) { tail(sig); }

NOINLINE void coro(void) {
    for (int i = 0; i < ROUNDS; i++) {
        tail(i);
        yield_to(&co_uc, &main_uc);
    }
    __asm__ volatile("" ::: "memory");
}

NOINLINE void *worker(void *arg) {
    char local[STACK];
    char *stack = arg ? (char *)arg : local;
    for (int k = 0; k < 3; k++) {
        getcontext(&co_uc);
        co_uc.uc_stack.ss_sp = stack;
        co_uc.uc_stack.ss_size = STACK;
        co_uc.uc_link = &main_uc;
        makecontext(&co_uc, coro, 0);
        for (int i = 0; i <= ROUNDS; i++) {
            yield_to(&main_uc, &co_uc);
            leaf(i);
        }
    }
    return NULL;
}

int main(void) {
    signal(SIGALRM, on_alarm);
    struct itimerval every = {{0, 100}, {0, 100}};
    setitimer(ITIMER_REAL, &every, NULL);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, worker, i % 2 ? malloc(STACK) : NULL);
    worker(NULL);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    printf("done %d\n", sink != 0);
    return 0;
}

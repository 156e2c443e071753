/* Threads: each worker recurses and tail-calls; every thread's trace must
 * be balanced and hold exactly the calls it made. */
#include <pthread.h>
#include <stdio.h>

/* XOR keeps gcc from turning the second call into a loop. */
__attribute__((noinline)) int fib(int n) { return n < 2 ? n : (fib(n - 1) ^ fib(n - 2)) + 1; }
__attribute__((noinline)) int leaf(int x) { return x + 1; }
__attribute__((noinline)) int tail(int x) { return leaf(x * 2); }

static void *worker(void *arg) {
    long id = (long)arg;
    long sum = fib(15);
    for (int i = 0; i < 1000; i++) sum += tail(i);
    return (void *)(sum + id);
}

int main(void) {
    pthread_t t[8];
    for (long i = 0; i < 8; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    long total = 0;
    for (int i = 0; i < 8; i++) {
        void *r;
        pthread_join(t[i], &r);
        total += (long)r;
    }
    printf("%ld\n", total);
    return 0;
}

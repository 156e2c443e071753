/* Thousands of short-lived threads, a few alive at a time: each records
 * into its own file; none may be lost and the process must not run out of
 * memory or mappings. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) long work(long x) { return x * 2 + 1; }

static void *run(void *arg) { return (void *)work((long)arg); }

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 3000;
    long sum = 0;
    for (int i = 0; i < n; i += 4) {
        pthread_t t[4];
        for (int k = 0; k < 4; k++) pthread_create(&t[k], NULL, run, (void *)(long)(i + k));
        for (int k = 0; k < 4; k++) {
            void *r;
            pthread_join(t[k], &r);
            sum += (long)r;
        }
    }
    printf("%ld\n", sum);
    return 0;
}

/* Truncates the file named by its first argument (the trace's budget
 * file, when recorded) while it runs, between rounds of threads that
 * each make enough calls to need their event files to grow several
 * times: it must run on and exit as it does untraced. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((noinline)) long leaf(long x) { return x * 3 + 1; }

__attribute__((noinline)) long calls(long n) {
    long sum = 0;
    for (long i = 0; i < n; i++) sum += leaf(i) & 0xff;
    return sum;
}

static long per_thread;

static void *run(void *arg) { return (void *)(calls(per_thread) + (long)arg); }

static long round_of_threads(int threads) {
    pthread_t t[8];
    long sum = 0;
    for (int k = 0; k < threads; k++) pthread_create(&t[k], NULL, run, (void *)(long)k);
    for (int k = 0; k < threads; k++) {
        void *r;
        pthread_join(t[k], &r);
        sum += (long)r;
    }
    return sum;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    per_thread = atol(argv[2]);
    long sum = round_of_threads(2);
    /* Untraced there is no such file: nothing to truncate. */
    (void)truncate(argv[1], 0);
    sum += calls(per_thread);
    sum += round_of_threads(3);
    printf("%ld\n", sum);
    return 0;
}

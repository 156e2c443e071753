/* One million nested calls on a big thread stack: the trace stack
 * overflows, which must cost only a lost-events count. */
#include <pthread.h>
#include <stdio.h>

__attribute__((noinline)) long down(long n) { return n == 0 ? 0 : 1 + down(n - 1) * 1; }

static void *run(void *arg) { return (void *)down((long)arg); }

int main(void) {
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setstacksize(&a, 1L << 30);
    pthread_t t;
    pthread_create(&t, &a, run, (void *)1000000L);
    void *r;
    pthread_join(t, &r);
    printf("%ld\n", (long)r);
    return 0;
}

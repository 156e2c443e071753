/* Recurses DEPTH levels deep on a big thread stack (argv[1]), then
 * returns; makes CALLS more short calls (argv[2]). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static volatile long calls;

__attribute__((noinline)) long down(long n) {
  calls++;
  long r = n == 0 ? 0 : down(n - 1);
  calls++; /* after the call: stays a recursion */
  return r + 1;
}

__attribute__((noinline)) void tick(void) { calls++; }

static void *run(void *arg) { return (void *)down((long)arg); }

int main(int argc, char **argv) {
  long depth = argc > 1 ? atol(argv[1]) : 1000;
  long more = argc > 2 ? atol(argv[2]) : 0;
  pthread_attr_t a;
  pthread_attr_init(&a);
  pthread_attr_setstacksize(&a, 1L << 28);
  pthread_t t;
  void *r;
  pthread_create(&t, &a, run, (void *)depth);
  pthread_join(t, &r);
  for (long i = 0; i < more; i++)
    tick();
  printf("%ld\n", (long)r);
  return 0;
}

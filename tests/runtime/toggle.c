/* Live switching: four threads call work() (through a tail call) in a
 * tight loop while the main thread switches tracing and the filter
 * TOGGLES times through the runtime's ftail_ctl(). Run untraced,
 * ftail_ctl is absent and nothing is switched. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static atomic_int stop;
static atomic_long calls;

__attribute__((noinline)) long work(long x) { return x * 3 + 1; }

/* A tail call: marked while work() is traced, converted while only
 * tail_work() is (under --tail=auto). */
__attribute__((noinline)) long tail_work(long x) { return work(x + 1); }

static void *spin(void *arg) {
  long n = 0, acc = 0;
  (void)arg;
  do {
    acc += tail_work(n);
    n++;
    /* Untraced work between calls: about a call per microsecond, so the
     * trace of the whole run fits the test's buffers. */
    for (volatile int spin = 0; spin < 300; spin++)
      ;
  } while (!atomic_load_explicit(&stop, memory_order_relaxed));
  atomic_fetch_add(&calls, n);
  return (void *)acc;
}

int main(int argc, char **argv) {
  static const char *const commands[] = {"on", "filter tail_work", "off",
                                         "filter", "on", "exclude work",
                                         "off", "exclude"};
  int toggles = argc > 1 ? atoi(argv[1]) : 10000;
  int (*ctl)(const char *) =
      (int (*)(const char *))dlsym(RTLD_DEFAULT, "ftail_ctl");
  pthread_t t[4];
  for (int i = 0; i < 4; i++)
    pthread_create(&t[i], 0, spin, 0);
  int failed = 0;
  for (int i = 0; ctl && i < toggles; i++)
    failed += ctl(commands[i % 8]) != 0;
  /* End with everything traced for a while. */
  if (ctl)
    failed += ctl("filter") + ctl("exclude") + ctl("on") != 0;
  usleep(20000);
  atomic_store(&stop, 1);
  for (int i = 0; i < 4; i++)
    pthread_join(t[i], 0);
  printf("runtime=%s toggles=%d failed=%d called=%d\n", ctl ? "yes" : "no",
         ctl ? toggles : 0, failed, calls > 0);
  return 0;
}

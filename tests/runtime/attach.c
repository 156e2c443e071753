#define _GNU_SOURCE
/* A program to attach to while it works: busy threads, one blocked in a
 * system call, one inside a signal handler, one creating threads. It
 * prints "ready" once everything runs, works until a line arrives on
 * standard input, then stops its threads and prints what they did that
 * does not depend on timing. Exits with 3.
 *
 * attach [BUSY [LIBRARY]]: BUSY busy threads (default 4); with LIBRARY,
 * a line "load" first makes it dlopen LIBRARY, print "loaded" and call
 * its plugin_entry in a loop on a thread of its own, about ten thousand
 * times a second.
 *
 * Before that, each line "gap" makes it print the longest time any busy
 * thread went without finishing a call of work since the last such line
 * (or "ready"), in microseconds: how long a thread was kept from its code
 * (stopped, or waiting for a CPU). A line "enter" makes it print "entered"
 * from inside wait_for_line, which returns (and prints "returned") when
 * the next line arrives. */
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int stop;
static int pipefd[2];
static atomic_long created;
static atomic_int handler_started, handler_done;
/* Where results go, so that the calls making them are not left out. */
static volatile long sink;

__attribute__((noinline)) long step(long x) { return x * 2654435761u % 1000003; }

__attribute__((noinline)) long work(long x) {
  for (int i = 0; i < 100; i++)
    x = step(x + i);
  return x;
}

/* The longest gap between two calls of work a busy thread has seen, in
 * counter ticks (the time-stamp counter: no library call in the loop). */
static atomic_ulong longest_gap;

static void note_gap(unsigned long gap) {
  unsigned long was = atomic_load(&longest_gap);
  while (gap > was && !atomic_compare_exchange_weak(&longest_gap, &was, gap))
    ;
}

static void *busy(void *arg) {
  long x = (long)arg;
  pthread_setname_np(pthread_self(), "busy");
  unsigned long last = __builtin_ia32_rdtsc();
  while (!atomic_load(&stop)) {
    x = work(x);
    unsigned long now = __builtin_ia32_rdtsc();
    note_gap(now - last);
    last = now;
  }
  return (void *)(x & 1);
}

/* Counter ticks per microsecond, measured over 20 ms. */
static double ticks_per_us(void) {
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  unsigned long t0 = __builtin_ia32_rdtsc();
  usleep(20000);
  clock_gettime(CLOCK_MONOTONIC, &b);
  unsigned long t1 = __builtin_ia32_rdtsc();
  double us = (b.tv_sec - a.tv_sec) * 1e6 + (b.tv_nsec - a.tv_nsec) / 1e3;
  return (t1 - t0) / us;
}

__attribute__((noinline)) long wait_for_data(void) {
  char buf[16];
  return read(pipefd[0], buf, sizeof buf);
}

static void *reader(void *arg) {
  (void)arg;
  pthread_setname_np(pthread_self(), "reader");
  return (void *)wait_for_data();
}

__attribute__((noinline)) long in_handler(long x) { return work(x); }

static void on_usr1(int sig) {
  (void)sig;
  long x = 1;
  atomic_store(&handler_started, 1);
  while (!atomic_load(&stop))
    x = in_handler(x);
  sink = x;
  atomic_store(&handler_done, 1);
}

static void *signalled(void *arg) {
  (void)arg;
  pthread_setname_np(pthread_self(), "handler");
  pthread_kill(pthread_self(), SIGUSR1);
  return NULL;
}

__attribute__((noinline)) void *short_lived(void *arg) {
  atomic_fetch_add(&created, 1);
  return (void *)work((long)arg);
}

static void *creator(void *arg) {
  (void)arg;
  pthread_setname_np(pthread_self(), "creator");
  while (!atomic_load(&stop)) {
    pthread_t t;
    if (pthread_create(&t, NULL, short_lived, (void *)1) == 0)
      pthread_join(t, NULL);
  }
  return NULL;
}

static int (*plugin_entry)(int);

static void *plugin_caller(void *arg) {
  (void)arg;
  pthread_setname_np(pthread_self(), "plugin");
  long x = 0;
  while (!atomic_load(&stop)) {
    x += plugin_entry((int)(x & 0xff));
    usleep(100);
  }
  sink = x;
  return NULL;
}

/* Loads the library at `path` and starts calling it; 0 when it could. */
static int load_plugin(const char *path, pthread_t *t) {
  void *lib = dlopen(path, RTLD_NOW);
  plugin_entry = lib ? (int (*)(int))dlsym(lib, "plugin_entry") : NULL;
  if (!plugin_entry || pthread_create(t, NULL, plugin_caller, NULL) != 0)
    return 1;
  printf("loaded\n");
  fflush(stdout);
  return 0;
}

/* Waits, inside a call that lasts, for the next line of input. */
__attribute__((noinline)) long wait_for_line(void) {
  char line[64];
  printf("entered\n");
  fflush(stdout);
  sink = fgets(line, sizeof line, stdin) != NULL;
  return sink;
}

int main(int argc, char **argv) {
  int nbusy = argc > 1 ? atoi(argv[1]) : 4;
  pthread_t t[nbusy + 3];
  struct sigaction sa = {.sa_handler = on_usr1};
  sigaction(SIGUSR1, &sa, NULL);
  if (pipe(pipefd) != 0)
    return 1;
  for (int i = 0; i < nbusy; i++)
    pthread_create(&t[i], NULL, busy, (void *)(long)(i + 1));
  pthread_create(&t[nbusy], NULL, reader, NULL);
  pthread_create(&t[nbusy + 1], NULL, signalled, NULL);
  pthread_create(&t[nbusy + 2], NULL, creator, NULL);
  /* Ready once every thread is where it works. */
  while (!atomic_load(&handler_started) || atomic_load(&created) == 0)
    usleep(1000);
  double rate = ticks_per_us();
  atomic_store(&longest_gap, 0);
  printf("ready\n");
  fflush(stdout);
  char line[64];
  line[0] = 0;
  while (fgets(line, sizeof line, stdin)) {
    if (strcmp(line, "gap\n") == 0) {
      printf("longest gap %.0f us\n", atomic_exchange(&longest_gap, 0) / rate);
    } else if (strcmp(line, "enter\n") == 0) {
      wait_for_line();
      printf("returned\n");
    } else {
      break;
    }
    fflush(stdout);
    line[0] = 0;
  }
  pthread_t plugin;
  int with_plugin = argc > 2;
  if (with_plugin) {
    if (load_plugin(argv[2], &plugin) != 0)
      return 1;
    if (!fgets(line, sizeof line, stdin))
      line[0] = 0;
  }
  atomic_store(&stop, 1);
  if (with_plugin)
    pthread_join(plugin, NULL);
  if (write(pipefd[1], "hello", 5) != 5)
    return 1;
  long got = 0;
  for (int i = 0; i < nbusy + 3; i++) {
    void *r;
    pthread_join(t[i], &r);
    if (i == nbusy)
      got = (long)r;
  }
  printf("reader read %ld bytes, handler %s, threads created: %s\n", got,
         atomic_load(&handler_done) ? "ran" : "did not run",
         atomic_load(&created) > 0 ? "yes" : "no");
  return 3;
}

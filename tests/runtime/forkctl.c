/* fork while another thread holds the runtime's locks: a thread switches
 * tracing through ftail_ctl() (the control lock, live site writes, the
 * runtime's allocator) in a loop while the main thread forks FORKS
 * children. Each child switches tracing itself and loads a library (the
 * loader hook takes the runtime's locks too), calls the traced work()
 * and exits. A child that inherited a lock taken would wait for good: an
 * alarm kills it, and the parent reports it and stops. Untraced, ftail_ctl is
 * absent and only the fork/dlopen part runs. */
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static atomic_int stop;
static int (*ctl)(const char *);

__attribute__((noinline)) long work(long x) { return x * 3 + 1; }

static void *toggle(void *arg) {
  static const char *const commands[] = {"on", "filter work", "off",
                                         "filter", "exclude main", "exclude"};
  (void)arg;
  for (long i = 0; !atomic_load(&stop); i++)
    ctl(commands[i % 6]);
  return 0;
}

int main(int argc, char **argv) {
  int forks = argc > 1 ? atoi(argv[1]) : 200;
  const char *lib = argc > 2 ? argv[2] : "libm.so.6";
  ctl = (int (*)(const char *))dlsym(RTLD_DEFAULT, "ftail_ctl");
  pthread_t t;
  if (ctl)
    pthread_create(&t, 0, toggle, 0);
  int hung = 0, failed = 0;
  for (int i = 0; i < forks; i++) {
    pid_t pid = fork();
    if (pid == 0) {
      alarm(5);
      if (ctl && ctl("on") != 0)
        _exit(3);
      void *h = dlopen(lib, RTLD_NOW);
      if (!h)
        _exit(4);
      dlclose(h);
      _exit(work(i) == 3 * i + 1 ? 0 : 5);
    }
    int status;
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) {
      hung++;
      break;
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      failed++;
  }
  atomic_store(&stop, 1);
  if (ctl)
    pthread_join(t, 0);
  printf("forks=%d hung=%d failed=%d\n", forks, hung, failed);
  return 0;
}

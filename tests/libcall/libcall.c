/* Calls into libc, a library built without ftail, one scenario per
 * argument: each must show the library functions nested where they are
 * called, callbacks nested under them, and stay balanced however the
 * calls end. */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static jmp_buf env;
static sigjmp_buf sigenv;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int jump_at = -1, compared;

__attribute__((noinline)) char *copy(const char *s) {
  char *p = malloc(strlen(s) + 1);
  strcpy(p, s);
  return p;
}

__attribute__((noinline)) int cmp(const void *a, const void *b) {
  if (++compared == jump_at)
    longjmp(env, 1);
  return *(const int *)a - *(const int *)b;
}

__attribute__((noinline)) int sigcmp(const void *a, const void *b) {
  if (++compared == jump_at)
    siglongjmp(sigenv, 1);
  return *(const int *)a - *(const int *)b;
}

__attribute__((noinline)) void init_once(void) { compared = 100; }

__attribute__((noinline)) int handled(int sig) { return sig + compared; }

__attribute__((noinline)) void on_signal(int sig) { compared = handled(sig); }

__attribute__((noinline)) void sort(int *v, int n) {
  qsort(v, n, sizeof *v, cmp);
  __asm__ volatile(""); /* not a tail call */
}

/* At -O2 a tail call into the library: `jmp puts@PLT`. */
__attribute__((noinline)) int say(const char *s) { return puts(s); }

__attribute__((noinline)) void last_words(void) { fflush(stdout); }

__attribute__((noinline)) void finish(int code) { exit(code); }

__attribute__((noinline)) void leave_thread(void) { pthread_exit(NULL); }

__attribute__((noinline)) void *worker(void *arg) {
  if (arg)
    leave_thread();
  return NULL;
}

__attribute__((noinline)) int child(void) { return getpid() > 0; }

int main(int argc, char **argv) {
  const char *how = argc > 1 ? argv[1] : "five";
  int v[] = {4, 1, 3, 2};
  if (strcmp(how, "five") == 0) {
    char *p = copy("hello");
    puts(p);
    free(p);
  } else if (strcmp(how, "qsort") == 0) {
    sort(v, 4);
    printf("%d %d %d %d\n", v[0], v[1], v[2], v[3]);
  } else if (strcmp(how, "longjmp") == 0) {
    /* qsort called from main itself: say() is then called at the very
       stack depth qsort was, once the longjmp has left qsort behind. */
    jump_at = 2;
    if (setjmp(env) == 0)
      qsort(v, 4, sizeof *v, cmp);
    say("jumped");
  } else if (strcmp(how, "bsearch") == 0) {
    int key = 1; /* three comparisons */
    int *at = bsearch(&key, (int[]){1, 2, 3, 4}, 4, sizeof key, cmp);
    printf("%d\n", at ? *at : -1);
  } else if (strcmp(how, "once") == 0) {
    pthread_once(&once, init_once);
    pthread_once(&once, init_once);
    printf("%d\n", compared);
  } else if (strcmp(how, "siglongjmp") == 0) {
    jump_at = 2;
    if (sigsetjmp(sigenv, 1) == 0)
      qsort(v, 4, sizeof *v, sigcmp);
    say("jumped");
  } else if (strcmp(how, "signal") == 0) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGUSR1, &sa, NULL);
    raise(SIGUSR1);
    printf("%d\n", compared);
  } else if (strcmp(how, "vfork") == 0 || strcmp(how, "vforkexec") == 0) {
    /* The child borrows the parent's memory and thread until it execs or
       exits: its calls must not show in the parent's trace. */
    fflush(stdout);
    pid_t pid = vfork();
    if (pid == 0) {
      if (!child())
        _exit(1);
      if (how[5])
        execl(argv[0], argv[0], "five", (char *)NULL);
      _exit(3);
    }
    int status;
    waitpid(pid, &status, 0);
    say(WEXITSTATUS(status) == 3 || how[5] ? "child ok" : "child failed");
  } else if (strcmp(how, "tail") == 0) {
    say("tail");
  } else if (strcmp(how, "exit") == 0) {
    atexit(last_words);
    finish(0);
  } else if (strcmp(how, "thread") == 0) {
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    pthread_join(t, NULL);
    pthread_create(&t, NULL, worker, v);
    pthread_join(t, NULL);
  } else if (strcmp(how, "fork") == 0) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0)
      _exit(child() ? 0 : 1);
    int status;
    waitpid(pid, &status, 0);
    say(WEXITSTATUS(status) == 0 ? "child ok" : "child failed");
  } else if (strcmp(how, "exec") == 0) {
    fflush(stdout);
    execl(argv[0], argv[0], "five", (char *)NULL);
  }
  return 0;
}

/* Starts itself with an environment of its own, five ways: posix_spawn,
 * posix_spawnp, fork + execve, fork + execle, and execve with an empty
 * environment. A child (argv[1] = its number) calls work() and prints the
 * names of its variables, leaving out the tracer's (FTAIL_*, LD_PRELOAD);
 * the parent then says whether its own environment is as it was. */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

__attribute__((noinline)) int work(int x) { return x + 1; }

static int count(char **env) {
  int n = 0;
  while (env && env[n])
    n++;
  return n;
}

static void child(const char *n) {
  printf("child %s: work %d, variables:", n, work(atoi(n)));
  for (char **e = environ; e && *e; e++) {
    if (!strncmp(*e, "FTAIL_", 6) || !strncmp(*e, "LD_PRELOAD=", 11))
      continue;
    printf(" %.*s", (int)strcspn(*e, "="), *e);
  }
  printf("\n");
}

int main(int argc, char **argv) {
  if (argc > 1) {
    child(argv[1]);
    return 0;
  }
  int before = count(environ);
  char *env[] = {"PATH=/usr/bin:/bin", "ONLY=1", NULL};
  char *empty[] = {NULL};
  char *a1[] = {argv[0], "1", NULL}, *a2[] = {argv[0], "2", NULL};
  char *a3[] = {argv[0], "3", NULL}, *a5[] = {argv[0], "5", NULL};
  pid_t pid;
  fflush(stdout);
  posix_spawn(&pid, "/proc/self/exe", NULL, NULL, a1, env);
  waitpid(pid, 0, 0);
  posix_spawnp(&pid, "/proc/self/exe", NULL, NULL, a2, env);
  waitpid(pid, 0, 0);
  if (fork() == 0) {
    execve("/proc/self/exe", a3, env);
    _exit(127);
  }
  wait(0);
  if (fork() == 0) {
    execle("/proc/self/exe", argv[0], "4", (char *)NULL, env);
    _exit(127);
  }
  wait(0);
  if (fork() == 0) {
    execve("/proc/self/exe", a5, empty);
    _exit(127);
  }
  wait(0);
  printf("parent: environment unchanged: %s\n",
         count(environ) == before ? "yes" : "no");
  return 0;
}

/* An idle event-loop server: its only thread waits in epoll_wait for
 * its input, with no timeout, and never runs otherwise. Attaching must
 * not show in what it sees: epoll_wait never fails with EINTR.
 * Prints "ready", then serves input lines until "go": prints how many
 * lines it served and how often epoll_wait was interrupted. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

static int served;

__attribute__((noinline)) void serve(const char *line) {
  served += line[0] != '\0';
}

int main(void) {
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = 0};
  if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev) != 0)
    return 2;
  printf("ready\n");
  fflush(stdout);
  int interrupted = 0;
  char line[256];
  size_t have = 0;
  for (;;) {
    struct epoll_event got;
    int n = epoll_wait(ep, &got, 1, -1);
    if (n < 0) {
      if (errno != EINTR)
        return 2;
      interrupted++;
      continue;
    }
    ssize_t r = read(0, line + have, sizeof line - 1 - have);
    if (r <= 0)
      break;
    have += (size_t)r;
    line[have] = '\0';
    char *nl;
    while ((nl = strchr(line, '\n')) != NULL) {
      *nl = '\0';
      if (strcmp(line, "go") == 0) {
        printf("served %d, interrupted %d\n", served, interrupted);
        return 0;
      }
      serve(line);
      have -= (size_t)(nl + 1 - line);
      memmove(line, nl + 1, have + 1);
    }
  }
  return 2;
}

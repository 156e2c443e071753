/* What daemons do, one step per line read from stdin: prints its pid;
 * closes every descriptor above stderr and says "closed"; listens on TCP
 * and prints its port, serves one client (reads a line, answers "ok");
 * then calls work() once per line until EOF. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

__attribute__((noinline)) int work(int x) { return x * 5; }

int main(void) {
  char buf[64];
  printf("%d\n", (int)getpid());
  fflush(stdout);
  if (!fgets(buf, sizeof buf, stdin))
    return 1;
  for (int fd = 3; fd < 1024; fd++)
    close(fd);
  printf("closed\n");
  fflush(stdout);
  if (!fgets(buf, sizeof buf, stdin))
    return 1;
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 4) ||
      getsockname(s, (struct sockaddr *)&a, &len))
    return 1;
  printf("%d\n", ntohs(a.sin_port));
  fflush(stdout);
  int c = accept(s, 0, 0);
  ssize_t n = read(c, buf, sizeof buf);
  if (n > 0)
    write(c, "ok\n", 3);
  close(c);
  int sum = 0;
  while (fgets(buf, sizeof buf, stdin))
    sum += work(sum);
  printf("served %s\n", n > 0 ? "yes" : "no");
  return 0;
}

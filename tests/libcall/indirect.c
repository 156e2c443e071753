/* Indirect calls (`call *operand`) into libc and libm, a library built
 * without ftail, one scenario per argument: each library function must
 * show nested under its caller, once per call, and a pointer to the
 * program's own instrumented function must count once. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef size_t (*len_fn)(const char *);
typedef int (*put_fn)(const char *);

/* Filled at run time from the GOT (the pointers the program takes),
 * read through volatile: the compiler cannot see through them. */
len_fn volatile lens[1];
put_fn volatile puts_table[1];
int (*volatile own)(int);

__attribute__((noinline)) int twice(int x) { return 2 * x; }

/* Functions that return twice, called through a pointer. */
static jmp_buf jumps;
static sigjmp_buf sigjumps;
int (*volatile set_jump)(struct __jmp_buf_tag *);
int (*volatile sigset_jump)(struct __jmp_buf_tag *, int);

__attribute__((noinline)) void jump_back(int sig) {
  if (sig)
    siglongjmp(sigjumps, 1);
  longjmp(jumps, 1);
}

__attribute__((noinline)) int through_setjmp(int sig) {
  volatile int n = 0;
  int first = sig ? sigset_jump(sigjumps, 1) : set_jump(jumps);
  if (first == 0) {
    n++;
    jump_back(sig);
  }
  return n;
}

/* A table of pointers called in a loop: `call *%reg` or `call *(%reg)`. */
__attribute__((noinline)) size_t table(int n) {
  size_t total = 0;
  for (int i = 0; i < n; i++) {
    total += lens[0]("four");
    puts_table[0]("line");
  }
  return total;
}

__attribute__((noinline)) double through_dlsym(void) {
  void *m = dlopen("libm.so.6", RTLD_NOW);
  if (!m)
    return -1;
  double (*f)(double) = (double (*)(double))dlsym(m, "cbrt");
  return f(27.0) + 1.0; /* not a tail call */
}

__attribute__((noinline)) int own_pointer(int n) {
  int t = 0;
  for (int i = 0; i < n; i++)
    t += own(i);
  return t;
}

int main(int argc, char **argv) {
  const char *how = argc > 1 ? argv[1] : "table";
  if (strcmp(how, "table") == 0) {
    lens[0] = strlen;
    puts_table[0] = puts;
    printf("%zu\n", table(3));
  } else if (strcmp(how, "dlsym") == 0) {
    printf("%.1f\n", through_dlsym());
  } else if (strcmp(how, "setjmp") == 0 || strcmp(how, "_setjmp") == 0) {
    set_jump = how[0] == '_' ? _setjmp : setjmp;
    printf("%d\n", through_setjmp(0));
  } else if (strcmp(how, "sigsetjmp") == 0) {
    sigset_jump = __sigsetjmp;
    printf("%d\n", through_setjmp(1));
  } else if (strcmp(how, "own") == 0) {
    own = twice;
    printf("%d\n", own_pointer(3));
  }
  return 0;
}

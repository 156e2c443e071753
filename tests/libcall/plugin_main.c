/* Calls a shared library built with ftail, then loads another copy of
 * it with dlopen (its path: argv[1]) and calls it through dlsym. */
#include <dlfcn.h>
#include <stdio.h>
int lib_len(const char *s);
int main(int argc, char **argv) {
  int n = lib_len("abc");
  void *h = dlopen(argv[1], RTLD_NOW);
  if (!h) return 2;
  int (*run)(const char *) = (int (*)(const char *))dlsym(h, "plug_run");
  n += run("hello");
  dlclose(h);
  printf("%d\n", n);
  return 0;
}

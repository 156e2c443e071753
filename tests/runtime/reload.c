/* Loads each library named on the command line in turn, calls its entry()
 * and unloads it before loading the next. */
#include <dlfcn.h>
#include <stdio.h>
__attribute__((noinline)) int call_library(const char *path, int x) {
  void *h = dlopen(path, RTLD_NOW);
  if (!h) {
    printf("%s\n", dlerror());
    return -1;
  }
  int (*f)(int) = (int (*)(int))dlsym(h, "entry");
  int r = f(x);
  dlclose(h);
  return r;
}
int main(int argc, char **argv) {
  int sum = 0;
  for (int i = 1; i < argc; i++)
    sum += call_library(argv[i], i);
  printf("%d\n", sum);
  return 0;
}

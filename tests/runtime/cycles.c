/* Loads, calls and unloads one library CYCLES times. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
__attribute__((noinline)) int cycle(const char *path, int x) {
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
  int cycles = atoi(argv[2]);
  long sum = 0;
  for (int i = 0; i < cycles; i++)
    sum += cycle(argv[1], i);
  printf("%ld\n", sum);
  return 0;
}

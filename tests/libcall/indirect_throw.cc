// An exception thrown by a library function that the program calls
// through a function pointer (`call *%reg`): it unwinds through the
// indirect call's thunk into the program's handler.
#include <cstdio>
#include <dlfcn.h>
#include <stdexcept>

static int (*volatile lib_throw)(int);

__attribute__((noinline)) int catcher(int n) {
  try {
    return lib_throw(n) + 1;
  } catch (const std::exception &e) {
    return 10;
  }
}

int main(int argc, char **argv) {
  void *lib = dlopen(argc > 1 ? argv[1] : "libthrow.so", RTLD_NOW);
  if (!lib)
    return 2;
  lib_throw = reinterpret_cast<int (*)(int)>(dlsym(lib, "lib_throw"));
  int sum = 0;
  for (int i = 0; i < 3; i++)
    sum += catcher(i);
  std::printf("%d\n", sum);
  return 0;
}

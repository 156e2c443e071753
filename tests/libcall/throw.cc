// An exception thrown through the library: `throw` calls
// __cxa_allocate_exception and __cxa_throw in libstdc++, which unwinds
// through its own frame and out of the traced functions that called it.
#include <cstdio>
#include <stdexcept>
#include <string>

__attribute__((noinline)) void thrower(int n) {
  if (n > 0)
    throw std::runtime_error("boom " + std::to_string(n));
}

__attribute__((noinline)) int catcher(int n) {
  try {
    thrower(n);
  } catch (const std::exception &e) {
    return static_cast<int>(std::string(e.what()).size());
  }
  return 0;
}

int main() {
  int sum = 0;
  for (int i = 0; i < 3; i++)
    sum += catcher(i);
  std::printf("%d\n", sum);
  return 0;
}

// Built without ftail: a C++ function that throws, reached from the
// program through a pointer from dlsym.
#include <stdexcept>

extern "C" int lib_throw(int n) {
  if (n > 0)
    throw std::runtime_error("boom");
  return n;
}

// The analysis commands' C++ fixture: names in namespaces, classes and
// templates, demangled in the output.
#include <cstdio>

namespace shapes {
struct Circle {
  double r;
  __attribute__((noinline)) double area() const { return 3.0 * r * r; }
};

template <typename T> __attribute__((noinline)) T twice(T x) { return x + x; }
} // namespace shapes

__attribute__((noinline)) double run(int n) {
  double sum = 0;
  for (int i = 0; i < n; i++) {
    shapes::Circle c{double(i)};
    sum += shapes::twice(c.area()) + shapes::twice(i);
  }
  return sum;
}

int main() {
  std::printf("%.1f\n", run(2));
  return 0;
}

// C++ through libstdc++: std::sort with an instrumented comparator and a
// std::function (both compiled into the program), operator new and
// delete, a std:: function compiled into libstdc++ (the steady clock),
// and an exception through a frame with a cleanup, whose landing pad
// goes on with _Unwind_Resume.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

__attribute__((noinline)) bool less(int a, int b) { return a < b; }

__attribute__((noinline)) int twice(int x) { return 2 * x; }

__attribute__((noinline)) void thrower(int n) {
  if (n > 0)
    throw std::runtime_error("boom");
}

// The string's destructor runs on the way out: a cleanup, then
// _Unwind_Resume.
__attribute__((noinline)) int with_cleanup(int n) {
  std::string s(40, 'x');
  thrower(n);
  return static_cast<int>(s.size());
}

__attribute__((noinline)) int catcher(int n) {
  try {
    return with_cleanup(n);
  } catch (const std::exception &) {
    return -1;
  }
}

int main() {
  std::vector<int> v{5, 3, 9, 1};
  std::sort(v.begin(), v.end(), less);
  std::function<int(int)> f = twice;
  int *p = new int(f(v[0]));
  auto t = std::chrono::steady_clock::now();
  int sum = *p + catcher(0) + catcher(1);
  delete p;
  std::printf("%d %d\n", sum, t.time_since_epoch().count() > 0);
  return 0;
}

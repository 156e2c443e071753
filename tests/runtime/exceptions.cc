// C++ exceptions thrown through traced frames.
#include <cstdio>
#include <stdexcept>

__attribute__((noinline)) int thrower(int n) {
    if (n == 0) throw std::runtime_error("bottom");
    return thrower(n - 1) + 1;
}
__attribute__((noinline)) int catcher(int n) {
    try {
        return thrower(n);
    } catch (const std::exception &) {
        return -1;
    }
}
__attribute__((noinline)) int plain(int x) { return x + 2; }

int main() {
    int s = 0;
    for (int i = 0; i < 10; i++) s += catcher(i) + plain(i);
    std::printf("%d\n", s);
    return 0;
}

// C++ exceptions thrown through traced frames.
#include <cstdio>
#include <stdexcept>

__attribute__((noinline)) int thrower(int n) {
    if (n == 0) throw std::runtime_error("bottom");
    if (n < 0) return n;  // so that it may return (and be tail-called)
    return thrower(n - 1) + 1;
}
// Tail calls into the thrower: under --tail=convert (or auto, when the
// thrower is not traced) the exception passes through convert thunks,
// two of them stacked on the same stack slot for via_chain.
__attribute__((noinline)) int via_tail(int n) { return thrower(n); }
__attribute__((noinline)) int via_chain(int n) { return via_tail(n); }
__attribute__((noinline)) int catcher(int n) {
    try {
        return n % 2 ? via_chain(n) : via_tail(n);
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

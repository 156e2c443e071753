/* C++ exceptions thrown and caught on a coroutine's stack and on the main
 * stack while the other one is switched out inside a tail call to
 * swapcontext (a convert thunk's side-stack entry each, at -O2), through
 * a tail call of their own (another thunk under --tail=convert). */
#include <cstdio>
#include <stdexcept>
#include <ucontext.h>

#define NOINLINE __attribute__((noinline))
#define NO_TAIL() __asm__ volatile("" ::: "memory")

static ucontext_t main_uc, co_uc;
static char co_stack[64 << 10] __attribute__((aligned(16)));
static volatile int sink;

extern "C" {
NOINLINE void yield_to(ucontext_t *from, ucontext_t *to) { swapcontext(from, to); }

NOINLINE void thrower(int n) {
    if (n) throw std::runtime_error("thrown");
    sink++;
}

/* A tail call at -O2. */
NOINLINE void via_tail(int n) { thrower(n); }

NOINLINE void catcher(const char *where) {
    try {
        via_tail(1);
    } catch (const std::exception &e) {
        std::printf("%s: caught %s\n", where, e.what());
    }
    NO_TAIL();
}

NOINLINE void coro() {
    for (int i = 0; i < 2; i++) {
        catcher("coroutine");
        yield_to(&co_uc, &main_uc);
    }
    NO_TAIL();
}
}

int main() {
    getcontext(&co_uc);
    co_uc.uc_stack.ss_sp = co_stack;
    co_uc.uc_stack.ss_size = sizeof co_stack;
    co_uc.uc_link = &main_uc;
    makecontext(&co_uc, coro, 0);
    for (int i = 0; i < 3; i++) {
        yield_to(&main_uc, &co_uc);
        catcher("main");
    }
    std::puts("done");
    return 0;
}

/* Stack switches with makecontext/swapcontext: a coroutine started by
 * foo() runs bar() on its own stack; each scenario leaves it differently.
 *
 *   stacks STORAGE SCENARIO [ROUNDS]
 *
 * STORAGE places the coroutine stacks: static, heap (malloc), mmap, or
 * local (an array in main's frame, so above foo's frames on the main
 * stack). SCENARIO:
 *   suspend   bar switches back to foo and is never resumed; foo then
 *             starts a new coroutine on the same stack, left the same way
 *   link      bar returns, through uc_link, to foo
 *   pingpong  foo resumes bar four times; bar yields three times, then
 *             returns through uc_link
 *   tail      bar yields ROUNDS times (2) through yield_to(), whose
 *             swapcontext call is a tail call at -O2 (jmp swapcontext), and
 *             so does foo to resume it, then bar returns through uc_link
 *   orphan    bar switches to a second coroutine, qux, and never runs
 *             again; qux returns through uc_link to foo, not to bar
 *   setctx    bar leaves with setcontext to a context main saved with
 *             getcontext, never returning to foo
 * After the scenario main longjmps out of deep() and calls baz(). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#define NOINLINE __attribute__((noinline))
/* Keeps the call before it out of tail position: the call trees the test
 * expects do not depend on sibling-call optimisation, except yield_to's. */
#define NO_TAIL() __asm__ volatile("" ::: "memory")

enum { STACK = 64 << 10 };
enum { SUSPEND, LINK, PINGPONG, TAIL, ORPHAN, SETCTX };

static int scenario, rounds = 2;
static char *stacks[2];
static ucontext_t main_uc, co_uc, other_uc, back_uc;
static jmp_buf env;
static volatile int sink, left;

/* A macro: getcontext returns twice, so no helper function can be
 * inlined around it, and the call trees have no room for one. */
#define make(uc, fn, which, link)                                                                  \
    do {                                                                                           \
        getcontext(uc);                                                                            \
        (uc)->uc_stack.ss_sp = stacks[which];                                                      \
        (uc)->uc_stack.ss_size = STACK;                                                            \
        (uc)->uc_link = (link);                                                                    \
        makecontext((uc), (fn), 0);                                                                \
    } while (0)

NOINLINE void leaf(void) { sink++; }
NOINLINE void baz(void) { sink += 2; }

/* A tail call to swapcontext at -O2. */
NOINLINE void yield_to(ucontext_t *from, ucontext_t *to) { swapcontext(from, to); }

NOINLINE void qux(void) {
    leaf();
    NO_TAIL();
}

NOINLINE void bar(void) {
    switch (scenario) {
    case SUSPEND:
        leaf();
        swapcontext(&co_uc, &main_uc);
        printf("bar: never resumed\n");
        break;
    case LINK:
        leaf();
        break;
    case PINGPONG:
        for (int i = 0; i < 3; i++) {
            leaf();
            swapcontext(&co_uc, &main_uc);
        }
        break;
    case TAIL:
        for (int i = 0; i < rounds; i++) {
            leaf();
            yield_to(&co_uc, &main_uc);
        }
        break;
    case ORPHAN:
        leaf();
        make(&other_uc, qux, 1, &main_uc);
        swapcontext(&co_uc, &other_uc);
        printf("bar: never resumed\n");
        break;
    case SETCTX:
        leaf();
        setcontext(&back_uc);
        break;
    }
    NO_TAIL();
}

NOINLINE void foo(void) {
    make(&co_uc, bar, 0, &main_uc);
    switch (scenario) {
    case SUSPEND:
        swapcontext(&main_uc, &co_uc);
        make(&co_uc, bar, 0, &main_uc);
        swapcontext(&main_uc, &co_uc);
        break;
    case LINK:
    case ORPHAN:
    case SETCTX:
        swapcontext(&main_uc, &co_uc);
        break;
    case PINGPONG:
        for (int i = 0; i < 4; i++) swapcontext(&main_uc, &co_uc);
        break;
    case TAIL:
        for (int i = 0; i <= rounds; i++) yield_to(&main_uc, &co_uc);
        break;
    }
    printf("foo: back\n");
    NO_TAIL();
}

NOINLINE void deep(int n) {
    if (n == 0) longjmp(env, 1);
    deep(n - 1);
    NO_TAIL();
}

int main(int argc, char **argv) {
    static const char *names[] = {"suspend", "link", "pingpong", "tail", "orphan", "setctx"};
    static char static_stacks[2][STACK] __attribute__((aligned(16)));
    char local_stacks[2][STACK] __attribute__((aligned(16)));
    if (argc != 3 && argc != 4) return 2;
    if (argc == 4) rounds = atoi(argv[3]);
    scenario = -1;
    for (int i = 0; i < 6; i++)
        if (strcmp(argv[2], names[i]) == 0) scenario = i;
    for (int i = 0; i < 2; i++) {
        if (strcmp(argv[1], "static") == 0) stacks[i] = static_stacks[i];
        else if (strcmp(argv[1], "heap") == 0) stacks[i] = malloc(STACK);
        else if (strcmp(argv[1], "mmap") == 0)
            stacks[i] = mmap(NULL, STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        else if (strcmp(argv[1], "local") == 0) stacks[i] = local_stacks[i];
    }
    if (scenario < 0 || !stacks[0] || stacks[0] == MAP_FAILED) return 2;
    left = 0;
    getcontext(&back_uc);
    if (!left) {
        left = 1;
        foo();
    }
    if (setjmp(env) == 0) deep(3);
    baz();
    printf("%s %s: done, sink=%d\n", argv[1], argv[2], sink);
    return 0;
}

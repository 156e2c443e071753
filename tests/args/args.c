/* Arguments and return values of every kind ftail records (`ftail
 * record -A/-R/-a`): called directly, through tail calls, through
 * pointers and from threads. Each call prints what it was called with
 * and what it returned, one line, for the tests to compare with the
 * trace. */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

enum colour { RED, GREEN = 5, BLUE };

#ifdef __clang__
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE __attribute__((noinline, noclone))
#endif

NOINLINE int add(int a, int b) { return a + b; }
NOINLINE long mix(unsigned char c, short s, long l, unsigned u) { return c + s + l + (long)u; }
NOINLINE double scale(double x, float f) { return x * f; }
NOINLINE float halve(float f) { return f / 2; }
NOINLINE bool is_odd(int x) { return x & 1; }
NOINLINE char upper(char c) { return c >= 'a' && c <= 'z' ? c - 32 : c; }
NOINLINE size_t length(const char *s) { return strlen(s); }
/* Never reads its string: it may point anywhere. */
NOINLINE int keep(const char *s, int n) { __asm__ volatile("" : : "r"(s)); return n; }
NOINLINE enum colour next_colour(enum colour c) { return c == RED ? GREEN : c == GREEN ? BLUE : RED; }
NOINLINE void *self(void *p) { __asm__ volatile("" : "+r"(p)); return p; }
NOINLINE long eight(long a, long b, long c, long d, long e, long f, long g, long h) {
    return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g + 8 * h;
}
/* Tail calls: a chain of two, and one to a function whose value is not
 * asked for. */
NOINLINE int twice(int a, int b) { return add(a * 2, b); }
NOINLINE int chain(int a) { return twice(a, a + 1); }
NOINLINE int plain(int x) { return x * 3; }
NOINLINE int via_plain(int x) { return plain(x + 1); }

static volatile int sink;

static void *worker(void *arg) {
    int i = (int)(long)arg;
    int r = add(i, 100);
    printf("add(%d, %d) = %d\n", i, 100, r);
    return NULL;
}

int main(void) {
    int (*volatile fp)(int, int) = add;
    int r = add(1, 2);
    printf("add(1, 2) = %d\n", r);
    printf("mix(200, -3, -4000000000, 4000000000) = %ld\n", mix(200, -3, -4000000000L, 4000000000U));
    printf("scale(1.5, 0.25) = %g\n", scale(1.5, 0.25f));
    printf("halve(3.0) = %g\n", halve(3.0f));
    printf("is_odd(7) = %s\n", is_odd(7) ? "true" : "false");
    printf("upper('q') = '%c'\n", upper('q'));
    printf("length(\"hello\") = %zu\n", length("hello"));
    char *page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(page, 4096);
    printf("keep((bad pointer %p), 9) = %d\n", (void *)page, keep(page, 9));
    printf("keep(NULL, 10) = %d\n", keep(NULL, 10));
    printf("next_colour(%d) = %d\n", GREEN, next_colour(GREEN));
    printf("self(%p) = %p\n", (void *)&sink, self((void *)&sink));
    printf("eight(1, 2, 3, 4, 5, 6, 7, 8) = %ld\n", eight(1, 2, 3, 4, 5, 6, 7, 8));
    printf("chain(5) = %d\n", chain(5));
    printf("twice(5, 6) = %d\n", twice(5, 6));
    printf("via_plain(4) = %d\n", via_plain(4));
    printf("add(20, 22) = %d\n", fp(20, 22));
    pthread_t t[3];
    for (long i = 0; i < 3; i++)
        pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    return 0;
}

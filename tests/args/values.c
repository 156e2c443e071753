/* Values that need more than a register's bits as they are: two specs
 * for one function, an int of -1 in a 64-bit register, an enumerator
 * that does not fit a signed int, structs passed and returned by value
 * between scalars, and a void function that ends in a tail call. */
#include <stdio.h>

enum mask { LOW = 1, HIGH = 0xffff0000u };
struct point { int x, y; };
struct box { long a, b, c; };
struct mixed { double d; long n; };

#ifdef __clang__
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE __attribute__((noinline, noclone))
#endif

NOINLINE int mul(int a, int b) { return a * b; }
NOINLINE int inc(int a) { return a + 1; }
NOINLINE long linc(long a) { return a + 1; }
NOINLINE int is_high(enum mask m) { return m == HIGH; }
NOINLINE int around(int a, struct point p, int b) { return a + p.x + p.y + b; }
NOINLINE long boxed(int a, struct box q, int b) { return a + q.a + q.c + b; }
NOINLINE double blend(struct mixed m, double f, int k) { return m.d * f + m.n + k; }
NOINLINE struct point make(int x) { struct point p = { x, x + 1 }; return p; }
NOINLINE struct box make_box(int x) { struct box q = { x, x + 1, x + 2 }; return q; }
NOINLINE int sink(int x) { __asm__ volatile("" : : "r"(x)); return x * 2; }
NOINLINE void forward(int x) { sink(x + 1); }

int main(void) {
    volatile long r = mul(4, 3);
    r += inc(-1);
    r += linc(0x123456789L);
    r += is_high(HIGH);
    struct point p = { 5, 6 };
    r += around(1, p, 2);
    struct box q = { 7, 8, 9 };
    r += boxed(1, q, 2);
    struct mixed m = { 0.5, 3 };
    r += blend(m, 2.0, 4);
    r += make(3).y;
    r += make_box(3).b;
    forward(4);
    printf("%ld\n", (long)r);
    return 0;
}

/* Every shape of function exit the compiler side must handle (see
 * DESIGN.md, "What the compiler side meets in real assembly"). Built with
 * many compilers and flag sets by the shape tests; its assembly is also
 * checked in as golden fixtures for the rewriter. */
#include <stdarg.h>
#include <xmmintrin.h>
#include <stdio.h>
#include <string.h>

extern int ext(int);                 /* defined in shapes_main.c: jmp ext@PLT */
extern int (*ext_fp)(int);           /* jmp *ext_fp(%rip) */
struct ops { int (*a)(int); int (*b)(int); };
extern const struct ops *ext_ops;    /* jmp *8(%rax) */
extern int (*ext_table[32])(int);    /* jmp *ext_table+120(%rip) */

__attribute__((noinline)) static int helper(int x) { return x * 3 + ext(x); }

/* Direct tail calls: to another file's function and to a static one. */
int tail_direct(int x) { return ext(x + 1); }
int tail_static(int x) { return helper(x ^ 5); }

/* Conditional tail call: clang turns this into `jcc ext # TAILCALL`. */
int tail_cond(int x) { if (x > 3) return ext(x); return x + 1; }

/* Indirect tail calls through a register, a member and a table slot. */
int tail_reg(int x) { return ext_fp(x); }
int tail_member(int x) { return ext_ops->b(x); }
int tail_slot(int x) { return ext_table[15](x); }

/* Tail call to printf with a double: the callee does aligned SSE stores. */
int tail_printf(double d) { return printf("%.3f\n", d); }

/* Tail calls that pass arguments on the stack. */
__attribute__((noinline)) long eight(long a, long b, long c, long d, long e, long f, long g, long h) {
    return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g + 8 * h;
}
long tail_eight(long a, long b, long c, long d, long e, long f, long g, long h) {
    return eight(b, a, c, d, e, f, h, g);
}
struct big { long v[4]; };
__attribute__((noinline)) long by_value(struct big s, int k) { return s.v[0] + s.v[3] * k; }
long tail_by_value(struct big s) { return by_value(s, 3); }

/* A switch with a jump table, some of whose cases are tail calls. */
int table_switch(int op, int y) {
    switch (op) {
    case 0: return ext(y);
    case 1: return helper(y) + 1;
    case 2: return y * 7;
    case 3: return y - 9;
    case 4: return ext(y * 3) + 2;
    case 5: return 4;
    case 6: return tail_reg(y);
    default: return 0;
    }
}

/* Computed goto: its indirect jumps stay inside the function. */
int computed_goto(int op, int n) {
    static void *tab[] = {&&a, &&b, &&c};
    int acc = 0;
    goto *tab[op];
a:  acc += n; if (--n > 0) goto *tab[n % 3]; return acc;
b:  acc ^= n; if (--n > 0) goto *tab[n % 3]; return acc;
c:  acc -= 1; if (--n > 0) goto *tab[n % 3]; return acc;
}

/* A cold path gcc moves to `computed_cold.cold` in .text.unlikely. */
__attribute__((cold, noinline)) int rare(int x) { return x * 11; }
int with_cold(int x) {
    if (__builtin_expect(x == 12345, 0))
        return rare(x) + ext(x);
    return x + 1;
}

/* Recursion, and self tail recursion (becomes a loop). */
int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
int gcd(int a, int b) { return b == 0 ? a : gcd(b, a % b); }

/* Varargs, long double and vector-ish returns. */
int sum_va(int n, ...) {
    va_list ap;
    va_start(ap, n);
    int s = 0;
    for (int i = 0; i < n; i++) s += va_arg(ap, int);
    va_end(ap);
    return s;
}
long double half(long double x) { return x / 2; }
int tail_va(int a, int b) { return sum_va(3, a, b, a + b); }

/* Vector arguments and an __m128 return, through a tail call. */
__attribute__((noinline)) __m128 vec_scale(__m128 v, float k) { return _mm_mul_ps(v, _mm_set1_ps(k)); }
__m128 tail_vec(__m128 v) { return vec_scale(v, 2.0f); }

/* A function that only tail-calls, from several places. */
int only_tails(int x) {
    if (x & 1) return ext(x);
    if (x & 2) return ext_fp(x);
    return helper(x);
}

/* Uses memcpy/strlen so the compiler may tail-call libc. */
size_t tail_strlen(const char *s) { return strlen(s); }

/* A self tail call: gcc keeps the second recursive call as `jmp split`
 * (after inlining skip()), which enters the function again through its
 * own entry site. */
struct expr { unsigned flags; unsigned char op; struct expr *l, *r, **list; };
struct clause { unsigned char op; int n; };
extern int clause_insert(struct clause *, struct expr *, int);
static struct expr *skip(struct expr *e) {
    while (e && (e->flags & 0x82000))
        e = (e->flags & 0x80000) ? e->list[0] : e->l;
    return e;
}
void split(struct clause *w, struct expr *e, unsigned char op) {
    struct expr *e2 = skip(e);
    w->op = op;
    if (!e2) return;
    if (e2->op != op) {
        clause_insert(w, e, 0);
    } else {
        split(w, e2->l, op);
        split(w, e2->r, op);
    }
}

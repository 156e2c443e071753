/* Driver for shapes.c: calls every shape and prints the results, so an
 * instrumented build can be compared with a plain one. */
#include <stdio.h>
#include <xmmintrin.h>

int ext(int x) { return x + 100; }
static int twice(int x) { return 2 * x; }
static int neg(int x) { return -x; }
int (*ext_fp)(int) = twice;
struct ops { int (*a)(int); int (*b)(int); };
static const struct ops the_ops = {twice, neg};
const struct ops *ext_ops = &the_ops;
int (*ext_table[32])(int);

int tail_direct(int), tail_static(int), tail_cond(int), tail_reg(int), tail_member(int);
int tail_slot(int), tail_printf(double), table_switch(int, int), computed_goto(int, int);
int with_cold(int), fib(int), gcd(int, int), sum_va(int, ...), tail_va(int, int);
int only_tails(int);
long tail_eight(long, long, long, long, long, long, long, long);
struct big { long v[4]; };
long tail_by_value(struct big);
long double half(long double);
unsigned long tail_strlen(const char *);
__m128 tail_vec(__m128);
struct expr { unsigned flags; unsigned char op; struct expr *l, *r, **list; };
struct clause { unsigned char op; int n; };
void split(struct clause *, struct expr *, unsigned char);
int clause_insert(struct clause *w, struct expr *e, int x) { return w->n += e->op + x; }

int main(void) {
    for (int i = 0; i < 32; i++) ext_table[i] = i % 2 ? neg : twice;
    struct big b = {{1, 2, 3, 4}};
    printf("%d %d %d %d %d %d %d\n", tail_direct(1), tail_static(2), tail_cond(5), tail_cond(1),
           tail_reg(4), tail_member(6), tail_slot(7));
    for (int op = 0; op < 8; op++) printf("%d ", table_switch(op, 10));
    printf("\n%d %d %d %d\n", computed_goto(0, 10), computed_goto(2, 7), with_cold(3), with_cold(12345));
    printf("%d %d %d %d\n", fib(15), gcd(1071, 462), sum_va(4, 1, 2, 3, 4), tail_va(2, 5));
    printf("%ld %ld %.2Lf\n", tail_eight(1, 2, 3, 4, 5, 6, 7, 8), tail_by_value(b), half(5.0L));
    printf("%d %d %d %lu\n", only_tails(1), only_tails(2), only_tails(4), tail_strlen("shapes"));
    float f[4];
    _mm_storeu_ps(f, tail_vec(_mm_setr_ps(1.0f, 2.5f, -3.0f, 4.25f)));
    printf("%.2f %.2f %.2f %.2f\n", f[0], f[1], f[2], f[3]);
    /* (a AND b) AND (c AND d): split() tail-calls itself for each right side. */
    struct expr a = {0, 1, 0, 0, 0}, bb = {0, 2, 0, 0, 0}, c = {0, 3, 0, 0, 0}, d = {0, 4, 0, 0, 0};
    struct expr ab = {0, 9, &a, &bb, 0}, cd = {0, 9, &c, &d, 0}, all = {0, 9, &ab, &cd, 0};
    struct clause w = {0, 0};
    split(&w, &all, 9);
    printf("split %d\n", w.n);
    tail_printf(2.5);
    return 0;
}

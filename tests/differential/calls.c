/* Differential fixture: the same calls traced by ftail, by uftrace (on a
 * -pg -mfentry build) and counted by -finstrument-functions must give the
 * same per-function call counts. Recursion, direct, conditional and
 * indirect tail calls, calls through function pointers, static functions.
 * Functions are noinline so that all three builds keep every call. */
#include <stdio.h>
#include <stdlib.h>

#define NOINLINE __attribute__((noinline))

/* Not a plain sum: gcc turns `fib(n - 1) + fib(n - 2)` into a loop around
 * one of the two calls (accumulator tail recursion), which
 * -finstrument-functions keeps counting as calls. */
NOINLINE long fib(long n) { return n < 2 ? n : fib(n - 1) ^ (fib(n - 2) << 1); }

NOINLINE long leaf(long x) { return x * 3 + 1; }
NOINLINE long other(long x) { return x - 7; }

/* Direct tail call. */
NOINLINE long tail_direct(long x) { return leaf(x + 1); }

/* Conditional tail calls: one of two callees. */
NOINLINE long tail_cond(long x) {
    if (x & 1)
        return leaf(x);
    return other(x) + 1;
}

/* Indirect tail call through a table. */
static long (*const table[])(long) = {leaf, other, tail_direct};
NOINLINE long tail_indirect(long x) { return table[x % 3](x); }

/* A chain of tail calls. */
NOINLINE long chain3(long x) { return tail_direct(x ^ 5); }
NOINLINE long chain2(long x) { return chain3(x + 2); }

static NOINLINE long helper(long x) { return x % 11 ? leaf(x) + 1 : 0; }

NOINLINE long mutual_b(long n);
NOINLINE long mutual_a(long n) { return n <= 0 ? 0 : mutual_b(n - 1) + 1; }
NOINLINE long mutual_b(long n) { return n <= 0 ? 1 : mutual_a(n - 1) * 2 % 1000; }

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000;
    long s = fib(20);
    for (long i = 0; i < n; i++) {
        s += tail_direct(i);
        s += tail_cond(i);
        s += tail_indirect(i);
        s += chain2(i);
        s += helper(i);
        s += mutual_a(i % 17);
    }
    printf("%ld\n", s);
    return 0;
}

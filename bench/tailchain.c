/* A tail-call-heavy loop for bench/tails.sh: each outer call runs a chain
 * of four tail calls (s0 -> s1 -> s2 -> s3 -> leaf). Built with and
 * without -fno-optimize-sibling-calls. */
#include <stdio.h>
#include <stdlib.h>

#define NOINLINE __attribute__((noinline))

NOINLINE long leaf(long x) { return x * 3 + 1; }
NOINLINE long s3(long x) { return leaf(x ^ 3); }
NOINLINE long s2(long x) { return s3(x + 2); }
NOINLINE long s1(long x) { return s2(x ^ 1); }
NOINLINE long s0(long x) { return s1(x + 7); }

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 2000000;
    long s = 0;
    for (long i = 0; i < n; i++) s += s0(i);
    printf("%ld\n", s);
    return 0;
}

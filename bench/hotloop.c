/* Call-heavy microbenchmark: a tiny non-inlined function called N times.
 * Untraced, traced by ftail, and the floor the design sets (one rdtsc and
 * one 16-byte store per event) are compared in bench/event-cost.sh. */
#include <stdio.h>
#include <stdlib.h>
#include <x86intrin.h>

__attribute__((noinline)) long tiny(long x) { return x * 3 + 1; }

/* The floor: what the hot path cannot go below, 2 events per call. */
static unsigned long long buf[1 << 16][2];
__attribute__((noinline)) long floor_tiny(long x, unsigned i) {
    buf[i & 0xffff][0] = __rdtsc();
    buf[i & 0xffff][1] = (unsigned long long)x;
    long r = x * 3 + 1;
    buf[(i + 1) & 0xffff][0] = __rdtsc();
    buf[(i + 1) & 0xffff][1] = (unsigned long long)r;
    return r;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10000000;
    int floor = argc > 2 && argv[2][0] == 'f';
    long s = 0;
    if (floor)
        for (long i = 0; i < n; i++) s += floor_tiny(i, (unsigned)i * 2);
    else
        for (long i = 0; i < n; i++) s += tiny(i);
    printf("%ld\n", s);
    return 0;
}

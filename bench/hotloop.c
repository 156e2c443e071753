/* Call-heavy microbenchmark: a tiny non-inlined function called N times.
 * Untraced, traced by ftail, and the floor the design sets (one rdtsc and
 * one 16-byte store per event) are compared in bench/event-cost.sh.
 * `hotloop N floor` stores into a small static buffer that stays in the
 * cache; `hotloop N file` stores every event, in order, into a fresh
 * file-backed mapping in the current directory, as a recorder that keeps
 * every event must. With HOTLOOP_TIME set, the loop's own wall time, the
 * thread's CPU time in it (user and system) and its minor page faults are
 * printed to stderr, without the start-up and exit around them
 * (bench/keep-cost.sh). */
#define _GNU_SOURCE /* RUSAGE_THREAD */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
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

/* The same two events per call, into a file-backed mapping. */
static unsigned long long (*events)[2];
__attribute__((noinline)) long file_tiny(long x, unsigned long i) {
    events[i][0] = __rdtsc();
    events[i][1] = (unsigned long long)x;
    long r = x * 3 + 1;
    events[i + 1][0] = __rdtsc();
    events[i + 1][1] = (unsigned long long)r;
    return r;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10000000;
    char mode = argc > 2 ? argv[2][1] : 0; /* fLoor or fIle */
    long s = 0;
    struct timespec t0, t1;
    struct rusage r0, r1;
    getrusage(RUSAGE_THREAD, &r0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (mode == 'l')
        for (long i = 0; i < n; i++) s += floor_tiny(i, (unsigned)i * 2);
    else if (mode == 'i') {
        size_t size = (size_t)n * 32;
        int fd = open("hotloop.events", O_RDWR | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || ftruncate(fd, (off_t)size) != 0) return 1;
        events = mmap(0, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (events == MAP_FAILED) return 1;
        for (long i = 0; i < n; i++) s += file_tiny(i, (unsigned long)i * 2);
    } else
        for (long i = 0; i < n; i++) s += tiny(i);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    getrusage(RUSAGE_THREAD, &r1);
#define US(a, b) (((b).tv_sec - (a).tv_sec) * 1000000LL + ((b).tv_usec - (a).tv_usec))
    if (getenv("HOTLOOP_TIME"))
        fprintf(stderr, "loop_ns %lld user_us %lld sys_us %lld minflt %ld\n",
                (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec),
                US(r0.ru_utime, r1.ru_utime), US(r0.ru_stime, r1.ru_stime),
                r1.ru_minflt - r0.ru_minflt);
    printf("%ld\n", s);
    return 0;
}

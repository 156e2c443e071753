/* __m256 arguments and results through traced calls, including a thread's
 * first traced call (the runtime's set-up slow path). */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>

__attribute__((noinline)) __m256d add4(__m256d a, __m256d b, __m256d c, __m256d d) {
    return _mm256_add_pd(_mm256_add_pd(a, b), _mm256_add_pd(c, d));
}

static void *worker(void *arg) {
    double *out = arg;
    __m256d r = _mm256_setzero_pd();
    for (int i = 0; i < 200000; i++)
        r = add4(r, _mm256_set_pd(1, 2, 3, 4), _mm256_set_pd(0.5, 0.25, 0.125, 1),
                 _mm256_set1_pd(-1));
    _mm256_storeu_pd(out, r);
    return 0;
}

int main(void) {
    double out[4];
    pthread_t t;
    pthread_create(&t, 0, worker, out);
    pthread_join(t, 0);
    printf("%.1f %.1f %.1f %.1f\n", out[0], out[1], out[2], out[3]);
    return 0;
}

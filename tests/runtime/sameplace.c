/* Built twice as two libraries of the same size (-DNAME=alpha, -DNAME=beta)
 * that the loader maps at the same address one after the other. */
#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
__attribute__((noinline)) int CAT(NAME, _work)(int x) { return x * 7; }
int entry(int x) { return CAT(NAME, _work)(x) + 1; }

/* The program of tests/args/shape.c's library, with an enum of its own. */
#include <stdio.h>

enum shape { SQUARE, CIRCLE, TRIANGLE };
enum mood { CALM, ANGRY };

int sides(enum shape s);
long area(int w, int h);

__attribute__((noinline)) enum mood flip(enum mood m) { return m == CALM ? ANGRY : CALM; }

int main(void) {
    printf("%d %ld %d\n", sides(TRIANGLE), area(6, 7), flip(CALM));
    return 0;
}

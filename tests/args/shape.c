/* A library built through `ftail cc` with debug info, for `ftail record
 * -a`: its functions' parameters come from its own DWARF, and its enum
 * is numbered apart from the program's (tests/args/uses_shape.c). */
enum shape { SQUARE, CIRCLE, TRIANGLE };

__attribute__((noinline)) int sides(enum shape s) {
    return s == SQUARE ? 4 : s == TRIANGLE ? 3 : 0;
}

__attribute__((noinline)) long area(int w, int h) { return (long)w * h; }

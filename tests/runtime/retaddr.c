/* What functions see as their return address, traced and untraced. A
 * normally called function must see the same one in every mode; a tail
 * callee sees its tail caller's caller, except behind a convert thunk. */
#include <stdio.h>

int main(void);

__attribute__((noinline)) long where(void) {
    return (char *)__builtin_return_address(0) - (char *)main;
}
__attribute__((noinline)) long normal_caller(void) { return where() + 1; }
__attribute__((noinline)) long tail_caller(void) { return where(); }

int main(void) {
    printf("normal %ld\ntail %ld\n", normal_caller() - 1, tail_caller());
    return 0;
}

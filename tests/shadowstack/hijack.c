/* Deliberately writes a return address: the shadow-stack checker must
 * report it. Built with -O0 -fno-omit-frame-pointer so that the return
 * address sits right above the saved frame pointer. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) void landing(void) {
    puts("hijacked");
    exit(0);
}

__attribute__((noinline)) void victim(void) {
    void **ra = (void **)__builtin_frame_address(0) + 1;
    *ra = (void *)landing;
}

int main(void) {
    victim();
    return 1;
}

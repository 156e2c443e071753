/* Tail calls into code that is not traced (libc): each call shows on one
   line, noting the tail call. */
#include <stdio.h>
#include <string.h>

__attribute__((noinline)) int greet(const char *s) { return puts(s); }
__attribute__((noinline)) size_t len(const char *s) { return strlen(s); }

int main(void) {
    greet("world");
    return len("abc") != 3;
}

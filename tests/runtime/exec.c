/* Replaces itself with a second run of the same instrumented program: both
 * images are traced, into separate files, and both traces are balanced.
 * With an argument "l" it uses the variadic execl, else execv. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

__attribute__((noinline)) int leaf(int x) { return x + 1; }

__attribute__((noinline)) void become_child(const char *self, int variadic) {
    printf("parent %d\n", leaf(1));
    fflush(stdout);
    char *const args[] = {(char *)self, "child", 0};
    if (variadic)
        execl(self, self, "child", (char *)0);
    else
        execv(self, args);
    perror("exec");
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "child") == 0) {
        printf("child %d\n", leaf(2));
        return 0;
    }
    become_child(argv[0], argc > 1 && strcmp(argv[1], "l") == 0);
    return 1;
}

/* The bundled demo: a small program with every shape of function exit the
 * compiler side handles — plain returns, direct, conditional and indirect
 * tail calls, a switch table and a computed goto. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) int leaf(int x) { return x * 3 + 1; }
__attribute__((noinline)) int other(int x) { return x - 7; }
int (*volatile indirect)(int) = other;

/* Direct tail call: `jmp leaf`. */
__attribute__((noinline)) int direct_tail(int x) { return leaf(x + 1); }

/* Conditional tail call (clang emits `jcc leaf`). */
__attribute__((noinline)) int cond_tail(int x) {
    if (x > 10)
        return leaf(x);
    return x + 2;
}

/* Indirect tail call: `jmp *indirect(%rip)`. */
__attribute__((noinline)) int indirect_tail(int x) { return indirect(x); }

/* A switch dense enough for a jump table; its indirect jump is not a tail. */
__attribute__((noinline)) int dispatch(int op, int x) {
    switch (op) {
    case 0: return leaf(x);
    case 1: return other(x) + 1;
    case 2: return x * 7;
    case 3: return x - 9;
    case 4: return direct_tail(x) + 2;
    case 5: return 4;
    default: return 0;
    }
}

/* Computed goto: its indirect jumps stay inside the function. */
__attribute__((noinline)) int interpret(const unsigned char *code) {
    static void *ops[] = {&&op_inc, &&op_dbl, &&op_end};
    int acc = 0;
    goto *ops[*code++];
op_inc:
    acc++;
    goto *ops[*code++];
op_dbl:
    acc *= 2;
    goto *ops[*code++];
op_end:
    return acc;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 5;
    static const unsigned char prog[] = {0, 0, 1, 0, 1, 2};
    long sum = 0;
    for (int i = 0; i < n; i++)
        sum += direct_tail(i) + cond_tail(i * 4) + indirect_tail(i) + dispatch(i % 7, i);
    printf("sum=%ld interpret=%d\n", sum, interpret(prog));
    return 0;
}

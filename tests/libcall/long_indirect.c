/* Indirect calls whose memory operand makes them longer than 5 bytes:
 * `call *0x88(%reg)` (a vtable slot past the 16th) and, without PIE,
 * `call *table(,%reg,8)`. The runtime leaves them as they are: the
 * program must run as it does untraced, its trace balanced. */
#include <stdio.h>

typedef long (*op)(long);
struct ops {
  op f[20];
};
const struct ops *lib_ops(void);

__attribute__((noinline)) long own(long x) { return x * 2; }

op table[20];

__attribute__((noinline)) long through_slot(const struct ops *o, long x) {
  return o->f[17](x) + 1; /* not a tail call */
}

__attribute__((noinline)) long through_table(long i, long x) {
  return table[i](x) + 1; /* not a tail call */
}

int main(int argc, char **argv) {
  const struct ops *o = lib_ops();
  for (int i = 0; i < 20; i++)
    table[i] = o->f[i];
  table[argc] = own;
  long n = through_slot(o, 1) + through_table(17, 2) + through_table(argc, 3);
  printf("%ld\n", n);
  return 0;
}

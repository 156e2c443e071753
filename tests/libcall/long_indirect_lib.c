/* A library built without ftail: twenty functions and a table of them,
 * as a C++ class's vtable would hold them. */
typedef long (*op)(long);
struct ops {
  op f[20];
};

#define OP(n)                                                                \
  static long op##n(long x) { return x + n; }
OP(0) OP(1) OP(2) OP(3) OP(4) OP(5) OP(6) OP(7) OP(8) OP(9)
OP(10) OP(11) OP(12) OP(13) OP(14) OP(15) OP(16) OP(17) OP(18) OP(19)

static const struct ops table = {{op0, op1, op2, op3, op4, op5, op6, op7,
                                  op8, op9, op10, op11, op12, op13, op14,
                                  op15, op16, op17, op18, op19}};

const struct ops *lib_ops(void) { return &table; }

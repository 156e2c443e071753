/* A -fPIC shared library built with ftail, calling out to libc: linked
 * into plugin_main.c as liblen.so, and loaded by it with dlopen as
 * libplug.so. */
#include <string.h>
#include <stdio.h>
__attribute__((noinline)) int lib_len(const char *s) { return (int)strlen(s) + 1; }
int plug_run(const char *s) { int n = lib_len(s); printf("%d\n", n); return n; }

/* Loads, calls and unloads a library twice: both loads are traced. */
#include <dlfcn.h>
#include <stdio.h>
__attribute__((noinline)) int call_plugin(const char *path, int x) {
    void *h = dlopen(path, RTLD_NOW);
    if (!h) { printf("%s\n", dlerror()); return -1; }
    int (*f)(int) = (int (*)(int))dlsym(h, "plugin_entry");
    int r = f(x);
    dlclose(h);
    return r;
}
int main(int argc, char **argv) { printf("%d %d\n", call_plugin(argv[1], 3), call_plugin(argv[1], 4)); return 0; }

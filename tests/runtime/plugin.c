/* A library loaded with dlopen: its constructor and functions are traced. */
__attribute__((noinline)) int plugin_helper(int x) { return x * 7; }
__attribute__((constructor)) static void plugin_init(void) { plugin_helper(1); }
int plugin_entry(int x) { return plugin_helper(x) + 1; }

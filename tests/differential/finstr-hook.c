/* A minimal -finstrument-functions hook: counts entries per function
 * address in an open-addressing table (atomically: jq's tests run
 * threads) and, at exit, writes "ADDRESS COUNT" lines to $FINSTR_OUT when
 * it is set. Link it into a build made with -finstrument-functions (and
 * -no-pie, so the addresses are those of the symbol table). */
#include <stdio.h>
#include <stdlib.h>

#define SLOTS (1 << 16)
#define HOOK __attribute__((no_instrument_function))

static struct {
    void *fn;
    unsigned long calls;
} table[SLOTS];

HOOK void __cyg_profile_func_enter(void *fn, void *site) {
    unsigned long h = ((unsigned long)fn >> 4) & (SLOTS - 1);
    (void)site;
    for (;;) {
        void *cur = __atomic_load_n(&table[h].fn, __ATOMIC_ACQUIRE);
        if (cur == fn)
            break;
        if (!cur && (__atomic_compare_exchange_n(&table[h].fn, &cur, fn, 0, __ATOMIC_ACQ_REL,
                                                 __ATOMIC_ACQUIRE) ||
                     cur == fn))
            break;
        h = (h + 1) & (SLOTS - 1);
    }
    __atomic_fetch_add(&table[h].calls, 1, __ATOMIC_RELAXED);
}

HOOK void __cyg_profile_func_exit(void *fn, void *site) {
    (void)fn;
    (void)site;
}

HOOK __attribute__((destructor)) static void dump(void) {
    const char *path = getenv("FINSTR_OUT");
    FILE *f = path ? fopen(path, "w") : NULL;
    if (!f)
        return;
    for (unsigned long i = 0; i < SLOTS; i++)
        if (table[i].fn)
            fprintf(f, "%p %lu\n", table[i].fn, table[i].calls);
    fclose(f);
}

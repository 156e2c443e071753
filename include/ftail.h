/* ftail: what a program may call while `ftail record` traces it.
 *
 * Every declaration is weak: a program that uses them links and runs
 * without ftail, where their addresses are null. Test before calling:
 *
 *     #include "ftail.h"
 *     if (ftail_snapshot)
 *         ftail_snapshot();
 *
 * Under `ftail record` the preloaded runtime defines them, and the
 * loader resolves the weak reference to that definition (checked with
 * GNU ld 2.40, gcc and clang: PIE and -no-pie, lazy and -z now
 * binding). With a linker that fixes an undefined weak address at null
 * in a non-PIE executable, link with -Wl,-z,dynamic-undefined-weak.
 */
#ifndef FTAIL_H
#define FTAIL_H

#ifdef __cplusplus
extern "C" {
#endif

/* With `ftail record --ring`: copies every thread's ring into
 * DIR/snapshot-N now, naming the innermost traced call of the calling
 * thread in the snapshot's `trigger` file (replay marks it). Snapshots
 * closer than --snapshot-interval (default 1s) to the previous one are
 * skipped. Returns 0, or -1 when the process keeps no rings. */
__attribute__((weak)) int ftail_snapshot(void);

#ifdef __cplusplus
}
#endif

#endif

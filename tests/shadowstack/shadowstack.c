/* An emulated CET shadow stack: runs a program under ptrace, single-steps
 * every instruction of its (single) thread from exec to exit, pushes the
 * return address of every `call` and checks every `ret` against it.
 *
 *   shadowstack PROGRAM [ARGS...]    (the environment is passed on)
 *
 * Rules, as a hardware shadow stack would enforce them:
 *  - `call` (E8, FF /2) pushes (return address, stack slot);
 *  - `ret` (C3, C2) at stack slot S first drops entries pushed at slots
 *    below S on the same stack (frames abandoned by longjmp or exception
 *    unwinding: what `incssp` does), then the top entry must have slot S
 *    and the same return address;
 *  - a `ret` at a slot no call pushed is allowed only into the kernel's
 *    signal-return trampoline (`mov $15,%rax; syscall`);
 *  - context switches (swapcontext, setcontext: load rsp, `push` the
 *    target, `ret`) switch shadow stacks, as a CET-enabled libc does: each
 *    context has its own. A `ret` popping what a `push` just wrote is such
 *    a jump, checked instead of popped: it must go to the point a
 *    suspended context's last call returns to (a context saved by
 *    swapcontext: that context becomes current and pops that entry), or
 *    to a point in a frame a context still has on that stack (a context
 *    saved by getcontext: its frames below are abandoned, as by
 *    longjmp), or start a new context on a stack no context uses (made by
 *    makecontext: its shadow stack starts with the return address
 *    makecontext placed above the entry point).
 * Anything else is a mismatch: "ret at RIP to X, shadow stack has Y".
 * Prints a summary line "calls=N rets=N unwound=N signal_returns=N
 * switches=N mismatches=N" and exits with the program's status (or 125 on
 * error). */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

struct entry { uint64_t ret, slot; };
/* One shadow stack per context; `cur` is the running one. */
struct shadow { struct entry *e; size_t depth, cap; };
static struct shadow *ctx;
static size_t nctx, cur;
static unsigned long calls, rets, unwound, sigrets, switches, mismatches;
/* The slot and value of the last `push`, until a call writes a slot. */
static uint64_t pushed_slot, pushed_value;

static void push(uint64_t ret, uint64_t slot) {
    struct shadow *s = &ctx[cur];
    if (s->depth == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4096;
        s->e = realloc(s->e, s->cap * sizeof *s->e);
        if (!s->e) { perror("realloc"); exit(125); }
    }
    s->e[s->depth++] = (struct entry){ret, slot};
}

static void new_context(void) {
    ctx = realloc(ctx, (nctx + 1) * sizeof *ctx);
    if (!ctx) { perror("realloc"); exit(125); }
    ctx[nctx] = (struct shadow){0};
    cur = nctx++;
}

static int same_stack(uint64_t a, uint64_t b) {
    uint64_t d = a > b ? a - b : b - a;
    return d < (256u << 20);
}

static int peek(pid_t pid, uint64_t addr, uint8_t *out, size_t n) {
    for (size_t i = 0; i < n; i += 8) {
        errno = 0;
        long w = ptrace(PTRACE_PEEKDATA, pid, (void *)(addr + i), 0);
        if (errno) return -1;
        memcpy(out + i, &w, n - i < 8 ? n - i : 8);
    }
    return 0;
}

enum kind { OTHER, CALL, RET, SYSCALL, PUSH };

static enum kind classify(const uint8_t *b) {
    int i = 0;
    while (i < 4 && (b[i] == 0x66 || b[i] == 0xf2 || b[i] == 0xf3 || b[i] == 0x2e ||
                     b[i] == 0x3e || (b[i] >= 0x40 && b[i] <= 0x4f)))
        i++;
    if (b[i] == 0xe8) return CALL;
    if (b[i] == 0xff && ((b[i + 1] >> 3) & 7) == 2) return CALL;
    if ((b[i] >= 0x50 && b[i] <= 0x57) || b[i] == 0x68 || b[i] == 0x6a) return PUSH;
    if (b[i] == 0xff && ((b[i + 1] >> 3) & 7) == 6) return PUSH;
    if (b[i] == 0xc3 || b[i] == 0xc2) return RET;
    if (b[i] == 0x0f && b[i + 1] == 0x05) return SYSCALL;
    return OTHER;
}

static int is_sigreturn_trampoline(pid_t pid, uint64_t at) {
    static const uint8_t code[] = {0x48, 0xc7, 0xc0, 0x0f, 0, 0, 0, 0x0f, 0x05};
    uint8_t b[16];
    return peek(pid, at, b, sizeof code) == 0 && memcmp(b, code, sizeof code) == 0;
}

/* A `ret` that pops what a `push` wrote: a jump to another context (see
 * the rules above). */
static void on_switch(pid_t pid, uint64_t rip, uint64_t slot, uint64_t target) {
    switches++;
    for (size_t i = 0; i < nctx; i++) {
        struct shadow *s = &ctx[i];
        if (s->depth && s->e[s->depth - 1].slot == slot && s->e[s->depth - 1].ret == target) {
            cur = i;
            s->depth--;
            return;
        }
    }
    for (size_t i = 0; i < nctx; i++) {
        struct shadow *s = &ctx[i];
        size_t k = s->depth;
        while (k && !(s->e[k - 1].slot > slot && same_stack(s->e[k - 1].slot, slot))) k--;
        if (k == 0) continue;
        unwound += s->depth - k;
        s->depth = k;
        cur = i;
        return;
    }
    uint64_t above;
    if (peek(pid, slot + 8, (uint8_t *)&above, 8) != 0) {
        mismatches++;
        fprintf(stderr, "shadowstack: switch at %#lx to %#lx: unreadable stack\n",
                (unsigned long)rip, (unsigned long)target);
        return;
    }
    new_context();
    push(above, slot + 8);
}

static void on_ret(pid_t pid, uint64_t rip, uint64_t slot, uint64_t target) {
    rets++;
    if (slot == pushed_slot && target == pushed_value) {
        pushed_slot = 0;
        on_switch(pid, rip, slot, target);
        return;
    }
    struct shadow *s = &ctx[cur];
    while (s->depth && s->e[s->depth - 1].slot < slot && same_stack(s->e[s->depth - 1].slot, slot)) {
        s->depth--;
        unwound++;
    }
    if (s->depth && s->e[s->depth - 1].slot == slot) {
        if (s->e[s->depth - 1].ret != target) {
            mismatches++;
            fprintf(stderr, "shadowstack: ret at %#lx to %#lx, shadow stack has %#lx\n",
                    (unsigned long)rip, (unsigned long)target,
                    (unsigned long)s->e[s->depth - 1].ret);
        }
        s->depth--;
        return;
    }
    if (is_sigreturn_trampoline(pid, target)) {
        sigrets++;
        return;
    }
    mismatches++;
    fprintf(stderr, "shadowstack: ret at %#lx to %#lx: no call pushed slot %#lx\n",
            (unsigned long)rip, (unsigned long)target, (unsigned long)slot);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: shadowstack PROGRAM [ARGS...]\n");
        return 125;
    }
    pid_t pid = fork();
    if (pid == 0) {
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        execvp(argv[1], argv + 1);
        perror(argv[1]);
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) < 0 || !WIFSTOPPED(status)) return 125;
    ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_EXITKILL);
    new_context();
    int sig = 0;
    for (;;) {
        struct user_regs_struct r;
        if (ptrace(PTRACE_GETREGS, pid, 0, &r) < 0) break;
        uint8_t insn[16];
        enum kind k = peek(pid, r.rip, insn, sizeof insn) == 0 ? classify(insn) : OTHER;
        uint64_t rip = r.rip, rsp = r.rsp;
        if (ptrace(PTRACE_SINGLESTEP, pid, 0, (void *)(long)sig) < 0) break;
        sig = 0;
        if (waitpid(pid, &status, 0) < 0) break;
        if (WIFEXITED(status) || WIFSIGNALED(status)) break;
        if (WSTOPSIG(status) != SIGTRAP) {
            /* A signal is about to be delivered: deliver it on the next step;
             * the instruction did not complete, classify it again. */
            sig = WSTOPSIG(status);
            continue;
        }
        struct user_regs_struct a;
        if (ptrace(PTRACE_GETREGS, pid, 0, &a) < 0) break;
        if (k == CALL && a.rsp == rsp - 8) {
            uint8_t ret[8];
            uint64_t ra;
            if (peek(pid, a.rsp, ret, 8) == 0) {
                memcpy(&ra, ret, 8);
                push(ra, a.rsp);
                calls++;
            }
            pushed_slot = 0;
        } else if (k == PUSH && a.rsp == rsp - 8) {
            if (peek(pid, a.rsp, (uint8_t *)&pushed_value, 8) == 0) pushed_slot = a.rsp;
        } else if (k == RET) {
            on_ret(pid, rip, rsp, a.rip);
        }
    }
    printf("calls=%lu rets=%lu unwound=%lu signal_returns=%lu switches=%lu mismatches=%lu\n",
           calls, rets, unwound, sigrets, switches, mismatches);
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 125;
}

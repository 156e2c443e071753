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
 *    signal-return trampoline (`mov $15,%rax; syscall`).
 * Anything else is a mismatch: "ret at RIP to X, shadow stack has Y".
 * Prints a summary line "calls=N rets=N unwound=N signal_returns=N
 * mismatches=N" and exits with the program's status (or 125 on error). */
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
static struct entry *stack;
static size_t depth, cap;
static unsigned long calls, rets, unwound, sigrets, mismatches;

static void push(uint64_t ret, uint64_t slot) {
    if (depth == cap) {
        cap = cap ? cap * 2 : 4096;
        stack = realloc(stack, cap * sizeof *stack);
        if (!stack) { perror("realloc"); exit(125); }
    }
    stack[depth++] = (struct entry){ret, slot};
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

enum kind { OTHER, CALL, RET, SYSCALL };

static enum kind classify(const uint8_t *b) {
    int i = 0;
    while (i < 4 && (b[i] == 0x66 || b[i] == 0xf2 || b[i] == 0xf3 || b[i] == 0x2e ||
                     b[i] == 0x3e || (b[i] >= 0x40 && b[i] <= 0x4f)))
        i++;
    if (b[i] == 0xe8) return CALL;
    if (b[i] == 0xff && ((b[i + 1] >> 3) & 7) == 2) return CALL;
    if (b[i] == 0xc3 || b[i] == 0xc2) return RET;
    if (b[i] == 0x0f && b[i + 1] == 0x05) return SYSCALL;
    return OTHER;
}

static int is_sigreturn_trampoline(pid_t pid, uint64_t at) {
    static const uint8_t code[] = {0x48, 0xc7, 0xc0, 0x0f, 0, 0, 0, 0x0f, 0x05};
    uint8_t b[16];
    return peek(pid, at, b, sizeof code) == 0 && memcmp(b, code, sizeof code) == 0;
}

static void on_ret(pid_t pid, uint64_t rip, uint64_t slot, uint64_t target) {
    rets++;
    while (depth && stack[depth - 1].slot < slot && same_stack(stack[depth - 1].slot, slot)) {
        depth--;
        unwound++;
    }
    if (depth && stack[depth - 1].slot == slot) {
        if (stack[depth - 1].ret != target) {
            mismatches++;
            fprintf(stderr, "shadowstack: ret at %#lx to %#lx, shadow stack has %#lx\n",
                    (unsigned long)rip, (unsigned long)target,
                    (unsigned long)stack[depth - 1].ret);
        }
        depth--;
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
        } else if (k == RET) {
            on_ret(pid, rip, rsp, a.rip);
        }
    }
    printf("calls=%lu rets=%lu unwound=%lu signal_returns=%lu mismatches=%lu\n", calls, rets,
           unwound, sigrets, mismatches);
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 125;
}

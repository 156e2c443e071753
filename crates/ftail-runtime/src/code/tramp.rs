//! The trampolines the sites call, in assembly.
//!
//! ABI of all three, as seen from the patched site:
//! * reached by `call` (directly or through a near stub that `jmp`s), so on
//!   entry `[rsp]` is the site's address + 5 and `[rsp+8]` is the traced
//!   function's return address: the function's CFA is `rsp + 16`;
//! * every general-purpose register, every SSE register, the x87 stack and
//!   the red zone are preserved: the fast paths touch only `rax`, `rcx`,
//!   `rdx` and `r11` and restore them; the slow paths also save `rsi`,
//!   `rdi`, `r8`–`r10` and the whole x87/SSE/AVX state with `xsave64`
//!   (`fxsave64` on processors without it) before
//!   calling Rust. gcc's `-fipa-ra` lets a caller keep values in
//!   call-clobbered registers a callee does not touch, so "caller-saved"
//!   registers are preserved too. Flags are clobbered: no site sits
//!   between a flag-setting instruction and its use;
//! * the trampolines push below the site's stack pointer, into what would
//!   be the function's red zone; that is safe because an entry site runs
//!   before the body has stored anything there and exit and tail sites run
//!   when the body is done with it;
//! * the stack is aligned for the Rust slow paths by `and $-64` (the
//!   XSAVE area's alignment); on a coroutine stack with little room left
//!   they run on the thread's spare stack (`FTAIL_SAVE_EXTENDED`), so a
//!   small coroutine stack only sees the fast paths' few words.
//!
//! Per-thread state is `FTAIL_TLS_OFFSET + %fs:0` (see `state.rs`);
//! events are reserved with a single `xadd`, which a signal handler on the
//! same thread cannot split, so a traced handler that interrupts a
//! trampoline gets its own slots.
//!
//! A status other than "recording" (1) sends every trampoline to its slow
//! path: a thread's first event, and the event after a stack switch
//! (`STATUS_SWITCHED`, see `stacks.rs`). The exit paths also leave the
//! fast path for the first function of a `makecontext` context (bit 61 of
//! its trace-stack word, `BASE`), whose return is followed by a switch to
//! its `uc_link` that no wrapper sees.
//!
//! After the four pushes of every trampoline the frame is:
//! `[rsp]` r11, `[rsp+8]` rdx, `[rsp+16]` rcx, `[rsp+24]` rax,
//! `[rsp+32]` site + 5, `[rsp+40]` the function's return address, and the
//! function's CFA is `rsp + 48`.

use crate::record::hooks::{
    ftail_slow_compact, ftail_slow_entry, ftail_slow_exit, ftail_slow_full_entry,
    ftail_slow_full_exit, ftail_slow_full_tail, ftail_slow_setup, ftail_slow_side_enter,
    ftail_slow_side_leave, ftail_slow_tail_mark, ftail_slow_tail_return,
};
use crate::record::state::{
    ThreadState, FTAIL_SLOW_ROOM, FTAIL_TLS_OFFSET, FTAIL_XSAVE_MASK, FTAIL_XSAVE_SIZE, STATUS_OFF,
    STATUS_SWITCHED,
};

extern "C" {
    /// Called by entry sites.
    pub fn ftail_entry();
    /// Called by exit sites.
    pub fn ftail_exit();
    /// Called by tail sites in `mark` mode.
    pub fn ftail_tail_mark();
    /// Called first by convert thunks.
    pub fn ftail_convert_enter();
    /// Jumped to by convert thunks after the tail callee returned.
    pub fn ftail_convert_leave();
    /// [`ftail_entry`] for the compact format.
    pub fn ftail_entry_c();
    /// [`ftail_exit`] for the compact format.
    pub fn ftail_exit_c();
    /// [`ftail_convert_leave`] for the compact format.
    pub fn ftail_convert_leave_c();
    /// Called by library thunks before the library function.
    pub fn ftail_lib_enter();
    /// Jumped to by library thunks after the library function returned.
    pub fn ftail_lib_leave();
    /// Called by the entry site of a library thunk (compact format):
    /// its entry and [`ftail_lib_enter`] in one.
    pub fn ftail_lib_entry_c();
    /// Jumped to by such a thunk after the library function returned:
    /// [`ftail_lib_leave`] and its exit in one.
    pub fn ftail_lib_exit_c();
    /// [`ftail_entry`] of a function with a spec (`args.rs`), through
    /// its spec stub.
    pub fn ftail_entry_spec();
}

std::arch::global_asm!(
    r#"
    .macro FTAIL_PUSH4
    push %rax
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rax, 0
    push %rcx
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rcx, 0
    push %rdx
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rdx, 0
    push %r11
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r11, 0
    mov {tls}(%rip), %r11
    add %fs:0, %r11
    .endm

    .macro FTAIL_POP4_RET
    pop %r11
    .cfi_adjust_cfa_offset -8
    pop %rdx
    .cfi_adjust_cfa_offset -8
    pop %rcx
    .cfi_adjust_cfa_offset -8
    pop %rax
    .cfi_adjust_cfa_offset -8
    ret
    int3
    .cfi_adjust_cfa_offset 32
    .endm

    # Saves the whole x87/SSE/AVX state below a 64-byte aligned rsp (rbp
    # keeps the old rsp, r11 points at the thread's state): with xsave
    # when the processor has it ({xsave_size} holds the area's size and
    # {xsave_mask} the components, all but AMX tiles; gcc's -fipa-ra lets
    # a caller keep values in the upper halves of ymm registers across a
    # call, and the slow path's libc calls may end in vzeroupper), else
    # fxsave. On a coroutine stack with less than {slow_room} bytes left
    # (a coroutine may have a small stack), the area and the Rust frames
    # go on the thread's spare stack instead, unless another slow path
    # uses it (this one interrupted it in a signal handler); the CFA rules
    # are rbp-based, so unwinding and backtraces do not notice. Clobbers
    # rax and rdx (saved by FTAIL_PUSH4); keeps rcx.
    .macro FTAIL_SAVE_EXTENDED
    cmpq $0, {spare_busy}(%r11)
    jne .Lstay\@
    mov %rsp, %rax
    sub {coro_lo}(%r11), %rax        # room left (huge when not on one)
    cmp {slow_room}(%rip), %rax
    jae .Lstay\@
    mov {spare}(%r11), %rax
    test %rax, %rax
    jz .Lstay\@
    mov %rbp, {spare_busy}(%r11)     # ours until FTAIL_RESTORE_EXTENDED
    mov %rax, %rsp
.Lstay\@:
    and $-64, %rsp
    mov {xsave_size}(%rip), %rax
    test %rax, %rax
    jz .Lfxsave\@
    sub %rax, %rsp
    movq $0, 512(%rsp)               # the XSAVE header must be zero
    movq $0, 520(%rsp)               # where xsave does not write it
    movq $0, 528(%rsp)
    movq $0, 536(%rsp)
    movq $0, 544(%rsp)
    movq $0, 552(%rsp)
    movq $0, 560(%rsp)
    movq $0, 568(%rsp)
    mov {xsave_mask}(%rip), %eax
    mov {xsave_mask}+4(%rip), %edx
    xsave64 (%rsp)
    jmp .Lsaved\@
.Lfxsave\@:
    sub $512, %rsp
    fxsave64 (%rsp)
.Lsaved\@:
    .endm

    # Restores what FTAIL_SAVE_EXTENDED saved, and frees the spare stack
    # if this slow path took it. Clobbers rax and rdx.
    .macro FTAIL_RESTORE_EXTENDED
    mov {xsave_size}(%rip), %rax
    test %rax, %rax
    jz .Lfxrstor\@
    mov {xsave_mask}(%rip), %eax
    mov {xsave_mask}+4(%rip), %edx
    xrstor64 (%rsp)
    jmp .Lrestored\@
.Lfxrstor\@:
    fxrstor64 (%rsp)
.Lrestored\@:
    mov {tls}(%rip), %rax            # the Rust call clobbered r11
    add %fs:0, %rax
    cmp %rbp, {spare_busy}(%rax)
    jne .Lspare_kept\@
    movq $0, {spare_busy}(%rax)
.Lspare_kept\@:
    .endm

    # Opens the traced function's frame on the trace stack: the top entry
    # is checked against the function's CFA (\cfa(%rsp)), and anything
    # irregular (frames gone, an entry replaced, a full trace stack) goes
    # to \slow before anything is written; else (CFA, \word) is pushed.
    # Leaves rcx = the depth before the push and rax = the entry's
    # address; clobbers rdx.
    .macro FTAIL_TRACE_PUSH cfa, word, slow
    mov 16(%r11), %rcx               # depth
    lea \cfa(%rsp), %rdx             # the function's CFA
    test %rcx, %rcx
    jz 1f
    mov %rcx, %rax
    shl $4, %rax
    add 24(%r11), %rax               # &stack[depth]; the top is at -16
    cmp %rdx, -16(%rax)
    ja 1f                            # top CFA above ours: a new frame
    jb \slow                         # below ours: frames gone, resync
    mov -8(%rax), %rax
    shr $62, %rax                    # same CFA: a tail callee of a marked
    jz \slow                         # or converted entry, else replaced
1:  cmp 32(%r11), %rcx
    jae \slow                        # trace stack full
    mov %rcx, %rax
    shl $4, %rax
    add 24(%r11), %rax               # &stack[depth]
    mov %rdx, (%rax)                 # written, reserved, written again:
    mov \word, %rdx                  # a signal handler that ran between
    mov %rdx, 8(%rax)                # the first writes and the increment
    incq 16(%r11)                    # may have reused the slot
    lea \cfa(%rsp), %rdx
    mov %rdx, (%rax)
    mov \word, %rdx
    mov %rdx, 8(%rax)
    .endm

    # Calls the Rust slow path \fn(state, cfa, site + 5, rcx, \kind, area)
    # with every register and the x87/SSE state saved (area: where, for
    # the values recorded by args.rs); 16-byte aligned.
    .macro FTAIL_SLOW fn, kind=0
    push %rsi
    .cfi_adjust_cfa_offset 8
    push %rdi
    .cfi_adjust_cfa_offset 8
    push %r8
    .cfi_adjust_cfa_offset 8
    push %r9
    .cfi_adjust_cfa_offset 8
    push %r10
    .cfi_adjust_cfa_offset 8
    push %rbp
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbp, 0
    mov %rsp, %rbp
    .cfi_def_cfa_register %rbp
    FTAIL_SAVE_EXTENDED
    mov %r11, %rdi
    lea 96(%rbp), %rsi
    mov 80(%rbp), %rdx
    mov $\kind, %r8d
    mov %rsp, %r9
    call \fn
    FTAIL_RESTORE_EXTENDED
    mov %rbp, %rsp
    .cfi_def_cfa_register %rsp
    pop %rbp
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbp
    pop %r10
    .cfi_adjust_cfa_offset -8
    pop %r9
    .cfi_adjust_cfa_offset -8
    pop %r8
    .cfi_adjust_cfa_offset -8
    pop %rdi
    .cfi_adjust_cfa_offset -8
    pop %rsi
    .cfi_adjust_cfa_offset -8
    .endm

    # Calls the side-stack slow path \fn(state, slot, rbx, results) with
    # every register and the x87/SSE state saved, 16-byte aligned; \slot
    # is the offset from rbp (after the six pushes) of the tail caller's
    # return address slot. \fn writes two words at `results`, which come
    # back in rax and rcx (both saved by FTAIL_PUSH4).
    .macro FTAIL_SLOW_SIDE fn, slot
    push %rsi
    .cfi_adjust_cfa_offset 8
    push %rdi
    .cfi_adjust_cfa_offset 8
    push %r8
    .cfi_adjust_cfa_offset 8
    push %r9
    .cfi_adjust_cfa_offset 8
    push %r10
    .cfi_adjust_cfa_offset 8
    push %rbp
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbp, 0
    mov %rsp, %rbp
    .cfi_def_cfa_register %rbp
    sub $16, %rsp                    # the results, at rbp-16
    FTAIL_SAVE_EXTENDED
    mov %r11, %rdi
    lea \slot(%rbp), %rsi
    mov %rbx, %rdx
    lea -16(%rbp), %rcx
    call \fn
    FTAIL_RESTORE_EXTENDED
    mov -16(%rbp), %rax
    mov -8(%rbp), %rcx
    mov %rbp, %rsp
    .cfi_def_cfa_register %rsp
    pop %rbp
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbp
    pop %r10
    .cfi_adjust_cfa_offset -8
    pop %r9
    .cfi_adjust_cfa_offset -8
    pop %r8
    .cfi_adjust_cfa_offset -8
    pop %rdi
    .cfi_adjust_cfa_offset -8
    pop %rsi
    .cfi_adjust_cfa_offset -8
    .endm

    # The slot reserved by xadd (rdx) is past the end of the mapped-ahead
    # part of the buffer: while the buffer is not full (the reserve is
    # unused) call \fn(state, cfa, site + 5, slot), which maps more and
    # writes the event, or closes what is open from the reserve; once
    # full, count the event as lost. Returns through label 9.
    .macro FTAIL_FULL fn, after
    cmpq $0, 88(%r11)                # the reserve still unused?
    jne 5f
    mov 48(%r11), %rcx
    test %rcx, %rcx
    jz \after
    incq (%rcx)
    jmp \after
5:  mov %rdx, %rcx
    FTAIL_SLOW \fn
    mov {tls}(%rip), %r11            # the call clobbered it
    add %fs:0, %r11
    jmp \after
    .endm

    # After a function's exit at the CFA rsp + \cfa_off: pops the entries
    # of its tail callers that a tail site marked (same CFA, bit 63) and
    # writes their tail exits, then goes to \done. \loop names the loop.
    .macro FTAIL_TAIL_CALLERS cfa_off, loop, done
\loop:
    mov 16(%r11), %rcx
    test %rcx, %rcx
    jz \done
    mov %rcx, %rax
    shl $4, %rax
    add 24(%r11), %rax
    lea \cfa_off(%rsp), %rdx
    cmp %rdx, -16(%rax)
    jne \done
    btq $63, -8(%rax)
    jnc \done                        # not marked: not a tail caller
    testb $0x0e, -1(%rax)
    jnz .Lt_rust\@                   # triggers act at its exit
    btq $61, -8(%rax)
    jnc .Lnot_base\@
    mov -16(%rax), %rdx              # a context's first function ended:
    mov %rdx, {ended_base}(%r11)     # its uc_link switch is unseen, the
    movq ${switched}, 40(%r11)       # next event's slow path does it
.Lnot_base\@:
    decq 16(%r11)
    cmp {maxd}(%r11), %rcx
    ja \loop                         # deeper than -D: not written
    mov -8(%rax), %rcx               # the popped entry's word
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov $16, %edx
    xadd %rdx, (%r11)
    cmp 8(%r11), %rdx
    jae .Ltail_callers_full\@
    shl $16, %rcx                    # its entry address, without flags,
    shr $16, %rcx
    bts $57, %rcx                    # kind TailExit (2)
    mov %rcx, 8(%rdx)
    mov %rax, (%rdx)
    jmp \loop
.Ltail_callers_full\@:
    FTAIL_FULL {full_tail}, \loop
.Lt_rust\@:                         # the rest of the chain in Rust
    lea \cfa_off(%rsp), %rcx
    FTAIL_SLOW {slow_ret_callers}
    mov {tls}(%rip), %r11
    add %fs:0, %r11
    jmp \done
    .endm

    # FTAIL_TAIL_CALLERS for the compact format: 4-byte tail exits.
    .macro FTAIL_TAIL_CALLERS_C cfa_off, loop, done
\loop:
    mov 16(%r11), %rcx
    test %rcx, %rcx
    jz \done
    mov %rcx, %rax
    shl $4, %rax
    add 24(%r11), %rax
    lea \cfa_off(%rsp), %rdx
    cmp %rdx, -16(%rax)
    jne \done
    btq $63, -8(%rax)
    jnc \done                        # not marked: not a tail caller
    testb $0x1e, -1(%rax)
    jnz .Ltc_retval\@                # its return value is recorded, or
                                     # triggers act at its exit
    btq $61, -8(%rax)
    jnc .Lnot_base\@
    mov -16(%rax), %rdx              # a context's first function ended:
    mov %rdx, {ended_base}(%r11)     # its uc_link switch is unseen, the
    movq ${switched}, 40(%r11)       # next event's slow path does it
.Lnot_base\@:
    decq 16(%r11)
    cmp {maxd}(%r11), %rcx
    ja \loop                         # deeper than -D: not written
    mov -8(%rax), %rcx               # the popped entry's word
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov {tbase}(%r11), %rcx
    sub %rcx, %rax                   # the time's offset from the base
    cmp ${close_span}, %rax
    jae .Ltc_time\@                  # too far, or the base poisoned
    lea 3(,%rax,8), %rax             # tag TailExit (3) | offset << 3
    mov $4, %edx
    xadd %rdx, (%r11)
    cmp %rcx, {tbase}(%r11)
    jne .Ltc_redo\@                  # a handler moved the base meanwhile
    lea 4(%rdx), %rcx
    cmp 8(%r11), %rcx
    ja .Ltail_callers_full\@
    mov %eax, (%rdx)
    jmp \loop
.Ltail_callers_full\@:
    FTAIL_FULL {full_tail}, \loop
.Ltc_redo\@:
    mov %rdx, %rcx
    FTAIL_SLOW {slow_compact}, 2
    mov {tls}(%rip), %r11
    add %fs:0, %r11
    jmp \loop
.Ltc_time\@:
    xor %ecx, %ecx
    FTAIL_SLOW {slow_compact}, 2
    mov {tls}(%rip), %r11
    add %fs:0, %r11
    jmp \loop
.Ltc_retval\@:                      # the rest of the chain in Rust, with
    lea \cfa_off(%rsp), %rcx         # the return value (rax in the frame,
    FTAIL_SLOW {slow_ret_callers}    # xmm0 in the area)
    mov {tls}(%rip), %r11
    add %fs:0, %r11
    jmp \done
    .endm

    # The side entry at rax for the slot at rdx: its chain's base entry
    # in rcx. A tail callee of a thunk that tail-calls through a thunk
    # itself finds the top entry at its own slot with rbx pointing at it:
    # the two thunks form a chain, and the unwind info of the inner one
    # (see unwind.rs) reads the base entry, so an unwinder steps over the
    # whole chain (libgcc aborts on two frames with the same CFA).
    .macro FTAIL_SIDE_BASE
    lea -32(%rax), %rcx
    cmp 64(%r11), %rax
    je 5f                            # no entry below
    cmp %rdx, 8(%rcx)
    jne 5f
    cmp %rcx, %rbx
    jne 5f
    mov 24(%rcx), %rcx               # chained: share its base
    jmp 6f
5:  mov %rax, %rcx
6:
    .endm

    # Fills the side entry at rax for the slot at rdx (rcx: the chain's
    # base): return address, slot, rbx, base. Clobbers rcx.
    .macro FTAIL_SIDE_ENTRY
    mov %rcx, 24(%rax)
    mov %rdx, 8(%rax)
    mov %rbx, 16(%rax)
    mov (%rdx), %rcx
    mov %rcx, (%rax)
    .endm

    .text
    .p2align 4
    .globl ftail_entry
    .hidden ftail_entry
    .type ftail_entry, @function
ftail_entry:
    .cfi_startproc
    FTAIL_PUSH4
    cmpq $1, 40(%r11)                # status == recording?
    jne 8f
    FTAIL_TRACE_PUSH 48, 32(%rsp), 8f
    cmp {maxd}(%r11), %rcx
    jae 9f                           # deeper than -D: tracked, not written
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov $16, %edx
    xadd %rdx, (%r11)                # reserve the event slot
    cmp 8(%r11), %rdx
    jae 7f
    mov 32(%rsp), %rcx               # kind Entry (0) | site + 5
    mov %rcx, 8(%rdx)
    mov %rax, (%rdx)                 # the time last: 0 means unwritten
9:  FTAIL_POP4_RET
7:  FTAIL_FULL {full_entry}, 9b
8:  FTAIL_SLOW {slow_entry}
    jmp 9b
    .cfi_endproc
    .size ftail_entry, .-ftail_entry

    .p2align 4
    .globl ftail_exit
    .hidden ftail_exit
    .type ftail_exit, @function
ftail_exit:
    .cfi_startproc
    FTAIL_PUSH4
    cmpq $1, 40(%r11)
    jne 8f
    mov 16(%r11), %rcx               # depth
    test %rcx, %rcx
    jz 8f                            # nothing open: entered before tracing
    mov %rcx, %rax
    shl $4, %rax
    add 24(%r11), %rax               # &stack[depth]; the top is at -16
    lea 48(%rsp), %rdx
    cmp %rdx, -16(%rax)
    jne 8f                           # not our frame on top: resynchronise
    testb $0xae, -1(%rax)
    jnz 8f                           # top marked by a tail site, the
    decq 16(%r11)                    # first function of a context, or
                                     # triggers act at its exit: pop
    cmp {maxd}(%r11), %rcx
    ja .Lexit_callers                # popped entry was deeper than -D
    mov -8(%rax), %rcx               # the popped entry's word
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov $16, %edx
    xadd %rdx, (%r11)
    cmp 8(%r11), %rdx
    jae 7f
    shl $16, %rcx                    # its entry address, without flags,
    shr $16, %rcx
    bts $56, %rcx                    # kind Exit (1)
    mov %rcx, 8(%rdx)
    mov %rax, (%rdx)
    FTAIL_TAIL_CALLERS 48, .Lexit_callers, 9f
9:  FTAIL_POP4_RET
7:  FTAIL_FULL {full_exit}, .Lexit_callers
8:  FTAIL_SLOW {slow_exit}
    jmp 9b
    .cfi_endproc
    .size ftail_exit, .-ftail_exit


    # The same three for the compact format (`ftail_abi::trace::compact`,
    # threads that keep every event): an entry is one 8-byte store, a
    # close one 4-byte store, each with its time as an offset from the
    # thread's base. Read the base, check the offset fits, reserve, check
    # that the base is still the one read (a signal handler that wrote a
    # time record in between moved it; the slot is then given up and the
    # record written again by the slow path), store. A base poisoned by a
    # time record being written fails the fit check.
    .p2align 4
    .globl ftail_entry_c
    .hidden ftail_entry_c
    .type ftail_entry_c, @function
ftail_entry_c:
    .cfi_startproc
    FTAIL_PUSH4
    cmpq $1, 40(%r11)                # status == recording?
    jne 8f
    FTAIL_TRACE_PUSH 48, 32(%rsp), 8f
    cmp {maxd}(%r11), %rcx
    jae 9f                           # deeper than -D: tracked, not written
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov {tbase}(%r11), %rcx
    sub %rcx, %rax                   # the time's offset from the base
    cmp ${entry_span}, %rax
    jae .Lentry_c_time               # too far, or the base poisoned
    lea 1(,%rax,8), %rax             # tag Entry (1) | offset << 3
    mov 32(%rsp), %rdx
    shl $17, %rdx
    or %rdx, %rax                    # | (site + 5) << 17
    mov $8, %edx
    xadd %rdx, (%r11)                # reserve the record
    cmp %rcx, {tbase}(%r11)
    jne .Lentry_c_redo               # a handler moved the base meanwhile
    lea 8(%rdx), %rcx
    cmp 8(%r11), %rcx
    ja 7f
    mov %rax, (%rdx)                 # one store: the record is whole
9:  FTAIL_POP4_RET
7:  FTAIL_FULL {full_entry}, 9b
.Lentry_c_redo:
    mov %rdx, %rcx
    FTAIL_SLOW {slow_compact}, 0
    jmp 9b
.Lentry_c_time:
    xor %ecx, %ecx
    FTAIL_SLOW {slow_compact}, 0
    jmp 9b
8:  FTAIL_SLOW {slow_entry}
    jmp 9b
    .cfi_endproc
    .size ftail_entry_c, .-ftail_entry_c

    .p2align 4
    .globl ftail_exit_c
    .hidden ftail_exit_c
    .type ftail_exit_c, @function
ftail_exit_c:
    .cfi_startproc
    FTAIL_PUSH4
    cmpq $1, 40(%r11)
    jne 8f
    mov 16(%r11), %rcx               # depth
    test %rcx, %rcx
    jz 8f                            # nothing open: entered before tracing
    mov %rcx, %rax
    shl $4, %rax
    add 24(%r11), %rax               # &stack[depth]; the top is at -16
    lea 48(%rsp), %rdx
    cmp %rdx, -16(%rax)
    jne 8f                           # not our frame on top: resynchronise
    testb $0xbe, -1(%rax)
    jnz .Lexit_c_flags               # marked, a context's first, a value,
                                     # triggers
.Lexit_c_pop:
    decq 16(%r11)
    cmp {maxd}(%r11), %rcx
    ja .Lexit_c_callers                # popped entry was deeper than -D
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov {tbase}(%r11), %rcx
    sub %rcx, %rax                   # the time's offset from the base
    cmp ${close_span}, %rax
    jae .Lexit_c_time                # too far, or the base poisoned
    lea 2(,%rax,8), %rax             # tag Exit (2) | offset << 3
    mov $4, %edx
    xadd %rdx, (%r11)
    cmp %rcx, {tbase}(%r11)
    jne .Lexit_c_redo                # a handler moved the base meanwhile
    lea 4(%rdx), %rcx
    cmp 8(%r11), %rcx
    ja 7f
    mov %eax, (%rdx)
    FTAIL_TAIL_CALLERS_C 48, .Lexit_c_callers, 9f
9:  FTAIL_POP4_RET
7:  FTAIL_FULL {full_exit}, .Lexit_c_callers
.Lexit_c_redo:
    mov %rdx, %rcx
    FTAIL_SLOW {slow_compact}, 1
    mov {tls}(%rip), %r11
    add %fs:0, %r11
    jmp .Lexit_c_callers
.Lexit_c_time:
    xor %ecx, %ecx
    FTAIL_SLOW {slow_compact}, 1
    mov {tls}(%rip), %r11
    add %fs:0, %r11
    jmp .Lexit_c_callers
.Lexit_c_flags:
    testb $0xae, -1(%rax)
    jnz 8f                           # marked by a tail site, the first
    cmp {maxd}(%r11), %rcx           # function of a context, triggers
    ja .Lexit_c_pop                  # deeper than -D: no record, no value
    movzbl -2(%rax), %eax            # the return value's type
    mov %eax, %edx
    and $15, %edx
    mov ${inline_classes}, %ecx
    bt %edx, %ecx
    jnc 8f                           # strings, enums: in Rust
    or $0x80000, %eax                # descriptor: type, 8 bytes of data
    mov $16, %edx
    xadd %rdx, (%r11)                # reserve the payload (16 bytes)
    lea 16(%rdx), %rcx
    cmp 8(%r11), %rcx
    ja .Lexit_c_value_full
    mov %eax, 4(%rdx)
    and $15, %eax
    cmp ${float_class}, %eax
    je 1f
    mov 24(%rsp), %rax               # the function's rax (FTAIL_PUSH4)
    jmp 2f
1:  movq %xmm0, %rax
2:  mov %rax, 8(%rdx)
    movl ${retval_head}, (%rdx)      # the head, written last
    mov 16(%r11), %rcx               # depth
    jmp .Lexit_c_pop
.Lexit_c_value_full:                 # past the mapped part: give the slot
    mov %rdx, %rcx                   # up, then the exit in Rust
    FTAIL_SLOW {give_up}, 16
    mov {tls}(%rip), %r11
    add %fs:0, %r11
8:  FTAIL_SLOW {slow_exit}
    jmp 9b
    .cfi_endproc
    .size ftail_exit_c, .-ftail_exit_c

    # Entry of a function whose arguments or return value are recorded
    # (record::args): its entry site calls the function's spec stub, which
    # calls here (so [rsp] is the stub's address + 5, [rsp+8] the site's
    # + 5, and the function's CFA is rsp + 24). The spec follows the stub
    # (at [rsp] + 3), then the inline path's flag and argument offsets (at
    # [rsp] + 59 and + 60). A compact thread whose function's arguments
    # are all integers, pointers, floats, bools or chars in registers
    # takes the inline path: the entry_c fast path with the arguments
    # written as a payload record right before the entry record, and the
    # trace-stack word flagged when the return value is recorded (the
    # exit then writes it). Anything else goes to the Rust slow path,
    # every register saved.
    .p2align 4
    .globl ftail_entry_spec
    .hidden ftail_entry_spec
    .type ftail_entry_spec, @function
ftail_entry_spec:
    .cfi_startproc
    FTAIL_PUSH4
    cmpq $1, 40(%r11)                # status == recording?
    jne .Lspec_slow
    cmpq $0, {compact}(%r11)
    je .Lspec_slow                   # a ring: no values, in Rust as before
    mov 32(%rsp), %rax               # the spec stub + 5
    testb ${fast_args}, 59(%rax)
    jz .Lspec_slow                   # strings, enums, stack arguments
    push %rsi
    .cfi_adjust_cfa_offset 8
    push %rdi
    .cfi_adjust_cfa_offset 8
    push %r8
    .cfi_adjust_cfa_offset 8
    push %r9
    .cfi_adjust_cfa_offset 8
    # 0 r9, 8 r8, 16 rdi, 24 rsi, 32 r11, 40 rdx, 48 rcx, 56 rax,
    # 64 stub + 5, 72 site + 5; the function's CFA is 88(%rsp).
    mov 64(%rsp), %rsi               # the spec stub + 5
    mov 72(%rsp), %rdi               # the trace-stack word: site + 5,
    cmpb $0, 4(%rsi)                 # flagged when the return value is
    je 2f                            # recorded, with its type
    movzbl 7(%rsi), %eax
    shl ${ret_ty_shift}, %rax
    bts ${retval_bit}, %rax
    or %rax, %rdi
2:  FTAIL_TRACE_PUSH 88, %rdi, .Lspec_slow_pop
    cmp {maxd}(%r11), %rcx
    jae .Lspec_pop                   # deeper than -D: tracked, not written
    movzbl 3(%rsi), %ecx             # arguments
    test %ecx, %ecx
    jz .Lspec_pop
    sub $64, %rsp                    # the low 8 bytes of xmm0-7 below
    .cfi_adjust_cfa_offset 64
    movq %xmm0, (%rsp)
    movq %xmm1, 8(%rsp)
    movq %xmm2, 16(%rsp)
    movq %xmm3, 24(%rsp)
    movq %xmm4, 32(%rsp)
    movq %xmm5, 40(%rsp)
    movq %xmm6, 48(%rsp)
    movq %xmm7, 56(%rsp)
    lea (%rcx,%rcx,2), %eax          # 3 words an argument: descriptor
    lea 4(,%rax,4), %r8              # and 8 bytes; and the head
    mov %r8, %rdx
    xadd %rdx, (%r11)                # reserve the payload
    add %rdx, %r8
    cmp 8(%r11), %r8
    ja .Lspec_args_full
    lea 4(%rdx), %rdi                # where the next value goes
    lea 11(%rsi), %r8                # its type and place in the spec
    lea 60(%rsi), %r9                # and its offset from rsp
3:  movzbl (%r8), %eax
    or $0x80000, %eax                # descriptor: type, 8 bytes of data
    mov %eax, (%rdi)
    movzbl (%r9), %eax
    mov (%rsp,%rax), %rax
    mov %rax, 4(%rdi)
    add $12, %rdi
    add $4, %r8
    inc %r9
    dec %ecx
    jnz 3b
    movzbl 3(%rsi), %ecx             # the head, written last
    lea 1(%rcx,%rcx,2), %eax         # words
    shl $8, %eax
    shl $16, %ecx                    # values
    or %ecx, %eax
    or ${args_head}, %eax            # tag and subtype
    mov %eax, (%rdx)
    add $64, %rsp
    .cfi_adjust_cfa_offset -64
.Lspec_pop:
    pop %r9
    .cfi_adjust_cfa_offset -8
    pop %r8
    .cfi_adjust_cfa_offset -8
    pop %rdi
    .cfi_adjust_cfa_offset -8
    pop %rsi
    .cfi_adjust_cfa_offset -8
.Lspec_entry:
    mov 16(%r11), %rcx               # the entry's depth (pushed above)
    dec %rcx
    cmp {maxd}(%r11), %rcx
    jae 9f
    rdtsc                            # the entry record, as in ftail_entry_c
    shl $32, %rdx
    or %rdx, %rax
    mov {tbase}(%r11), %rcx
    sub %rcx, %rax
    cmp ${entry_span}, %rax
    jae .Lspec_time
    lea 1(,%rax,8), %rax
    mov 40(%rsp), %rdx               # site + 5
    shl $17, %rdx
    or %rdx, %rax
    mov $8, %edx
    xadd %rdx, (%r11)
    cmp %rcx, {tbase}(%r11)
    jne .Lspec_redo
    lea 8(%rdx), %rcx
    cmp 8(%r11), %rcx
    ja 7f
    mov %rax, (%rdx)
9:  FTAIL_POP4_RET
7:  FTAIL_FULL {full_entry_spec}, 9b
.Lspec_redo:
    mov %rdx, %rcx
    FTAIL_SLOW {slow_compact_spec}, 0
    jmp 9b
.Lspec_time:
    xor %ecx, %ecx
    FTAIL_SLOW {slow_compact_spec}, 0
    jmp 9b
.Lspec_slow:
    FTAIL_SLOW {slow_entry_spec}
    jmp 9b
    .cfi_adjust_cfa_offset 96
.Lspec_args_full:                    # the payload's slot is past the
    add $64, %rsp                    # mapped part: in Rust, then the entry
    .cfi_adjust_cfa_offset -64
    pop %r9
    .cfi_adjust_cfa_offset -8
    pop %r8
    .cfi_adjust_cfa_offset -8
    pop %rdi
    .cfi_adjust_cfa_offset -8
    pop %rsi
    .cfi_adjust_cfa_offset -8
    mov %rdx, %rcx
    FTAIL_SLOW {args_room}
    mov {tls}(%rip), %r11
    add %fs:0, %r11
    jmp .Lspec_entry
    .cfi_adjust_cfa_offset 32
.Lspec_slow_pop:
    pop %r9
    .cfi_adjust_cfa_offset -8
    pop %r8
    .cfi_adjust_cfa_offset -8
    pop %rdi
    .cfi_adjust_cfa_offset -8
    pop %rsi
    .cfi_adjust_cfa_offset -8
    jmp .Lspec_slow
    .cfi_endproc
    .size ftail_entry_spec, .-ftail_entry_spec

    .p2align 4
    .globl ftail_tail_mark
    .hidden ftail_tail_mark
    .type ftail_tail_mark, @function
ftail_tail_mark:
    .cfi_startproc
    FTAIL_PUSH4
    cmpq $1, 40(%r11)
    jne 7f
    mov 16(%r11), %rcx
    test %rcx, %rcx
    jz 9f
    shl $4, %rcx
    add 24(%r11), %rcx               # &stack[depth]
    lea 48(%rsp), %rdx
    cmp %rdx, -16(%rcx)
    jne 9f                           # the tail caller's entry was not seen
    btsq $63, -8(%rcx)               # mark: ends when its callee returns
9:  FTAIL_POP4_RET
7:  cmpq ${off}, 40(%r11)            # after a stack switch: in line
    je 9b                            # first (a signal handler's slow path
    FTAIL_SLOW {slow_tail_mark}      # may have made it 'recording' since)
    jmp 9b
    .cfi_endproc
    .size ftail_tail_mark, .-ftail_tail_mark

    # Convert thunk, first half. The thunk made for a tail site does
    #     call ftail_convert_enter ; jnz 1f ; call TARGET ; jmp ftail_convert_leave
    #  1: jmp <the original tail jump>
    # On entry here [rsp] is the thunk's return point and [rsp+8] the
    # tail-calling function's return address (its CFA is rsp + 16). That
    # address moves to the side stack and `ret $8` returns into the thunk
    # with rsp at the function's CFA, so TARGET is called with exactly the
    # stack a jump would have given it (alignment and stack arguments
    # intact). The side entry also keeps rbx, and rbx points at the entry
    # until the callee returns: rbx is callee-saved, so the callee keeps
    # it, and the thunk's unwind info (`unwind.rs`) finds the return
    # address and the caller's rbx through it. A tail jump never reads rbx
    # (the tail caller has restored it for its own caller). ZF=1 says
    # "converted"; ZF=0 (side stack unavailable or full) leaves the stack
    # alone and the thunk takes the original jump. The side stack is one
    # array per thread, but the thunks of several stacks (coroutines
    # switched out inside a converted tail call) may be in flight: an
    # entry is found again through rbx, never moved, and freed in place;
    # when the top entry's slot is below ours (left behind by a longjmp,
    # or another stack's) the Rust slow path decides and may reuse a freed
    # entry.
    # Every call is matched by its own ret: a shadow stack stays in step.
    .macro FTAIL_CONVERT_ENTER flag
    .cfi_startproc
    FTAIL_PUSH4                      # slot of the return address: rsp+40
    FTAIL_SIDE_ENTER \flag
    .cfi_endproc
    .endm

    # The side-stack part of FTAIL_CONVERT_ENTER, after FTAIL_PUSH4 (r11:
    # the thread's state); also the second half of ftail_lib_entry_c.
    # Ends the trampoline: `ret $8` with ZF=1, or `ret` with ZF=0.
    # \checked: the status is known to be "recording" on the way in.
    .macro FTAIL_SIDE_ENTER flag, checked=0
    .if !\checked
    cmpq $1, 40(%r11)
    jne 8f
    .endif
1:  lea 40(%rsp), %rdx               # our slot
    mov 72(%r11), %rcx
    mov %rcx, %rax
    shl $5, %rax
    add 64(%r11), %rax               # &side[depth]; the top is at -32
    test %rcx, %rcx
    jz 3f
    cmp %rdx, -24(%rax)
    jb 7f                            # top below our slot: left behind by
3:  cmp 80(%r11), %rcx               # a longjmp, or another stack's
    jae 9f                           # full: take the original jump
    FTAIL_SIDE_BASE
    push %rcx
    .cfi_adjust_cfa_offset 8
    FTAIL_SIDE_ENTRY                 # written, reserved, written again
    incq 72(%r11)                    # (see ftail_entry)
    pop %rcx
    .cfi_adjust_cfa_offset -8
    FTAIL_SIDE_ENTRY
    mov %rax, %rbx                   # borrowed until the callee returns
2:
    .if \flag
    mov 16(%r11), %rcx               # flag the function's trace entry:
    test %rcx, %rcx                  # its exit comes from the thunk
    jz 4f
    shl $4, %rcx
    add 24(%r11), %rcx
    lea 48(%rsp), %rax
    cmp %rax, -16(%rcx)
    jne 4f
    btsq $62, -8(%rcx)
    .endif
4:  pop %r11
    .cfi_adjust_cfa_offset -8
    pop %rdx
    .cfi_adjust_cfa_offset -8
    pop %rcx
    .cfi_adjust_cfa_offset -8
    pop %rax
    .cfi_adjust_cfa_offset -8
    cmp %eax, %eax                   # ZF=1: converted
    ret $8
    int3
    .cfi_adjust_cfa_offset 32
9:  pop %r11
    .cfi_adjust_cfa_offset -8
    pop %rdx
    .cfi_adjust_cfa_offset -8
    pop %rcx
    .cfi_adjust_cfa_offset -8
    pop %rax
    .cfi_adjust_cfa_offset -8
    test %rsp, %rsp                  # ZF=0: not converted
    ret
    int3
    .cfi_adjust_cfa_offset 32
7:  FTAIL_SLOW_SIDE {slow_side_enter}, 88 # rax: the entry (0: full)
    mov {tls}(%rip), %r11
    add %fs:0, %r11
    test %rax, %rax
    jz 9b
    mov %rax, %rbx                   # borrowed until the callee returns
    jmp 2b
8:  FTAIL_SLOW {slow_setup}
    mov {tls}(%rip), %r11
    add %fs:0, %r11
    cmpq $1, 40(%r11)
    je 1b
    jmp 9b
    .endm

    .p2align 4
    .globl ftail_convert_enter
    .hidden ftail_convert_enter
    .type ftail_convert_enter, @function
ftail_convert_enter:
    FTAIL_CONVERT_ENTER 1
    .size ftail_convert_enter, .-ftail_convert_enter

    # Library thunk, first half (`plan/libcall.rs`): ftail_convert_enter
    # without flagging the thunk's trace entry. The thunk exits through
    # the exit trampoline like any function, so its entry is an ordinary
    # one: a later call at the same CFA (once a longjmp has left the
    # library call behind) replaces it instead of nesting under it.
    .p2align 4
    .globl ftail_lib_enter
    .hidden ftail_lib_enter
    .type ftail_lib_enter, @function
ftail_lib_enter:
    FTAIL_CONVERT_ENTER 0
    .size ftail_lib_enter, .-ftail_lib_enter

    # Library thunk, entry and first half in one trip (compact format;
    # `plan/libcall.rs`): the entry site of a thunk whose entry takes no
    # spec calls it, so [rsp] is the site + 5, [rsp+8] the caller's return
    # address and the thunk's CFA rsp + 16. Records the thunk's entry as
    # ftail_entry_c does (its slow paths as there), then moves the return
    # address to the side stack as ftail_lib_enter does, and returns as
    # it does: `ret $8` with ZF=1, or `ret` with ZF=0 (the thunk then
    # jumps to the library function, as after ftail_lib_enter).
    .p2align 4
    .globl ftail_lib_entry_c
    .hidden ftail_lib_entry_c
    .type ftail_lib_entry_c, @function
ftail_lib_entry_c:
    .cfi_startproc
    FTAIL_PUSH4
    cmpq $1, 40(%r11)                # status == recording?
    jne .Llib_entry_slow
    FTAIL_TRACE_PUSH 48, 32(%rsp), .Llib_entry_slow
    cmp {maxd}(%r11), %rcx
    jae .Llib_recording              # deeper than -D: tracked, not written
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov {tbase}(%r11), %rcx
    sub %rcx, %rax                   # the time's offset from the base
    cmp ${entry_span}, %rax
    jae .Llib_entry_time             # too far, or the base poisoned
    lea 1(,%rax,8), %rax             # tag Entry (1) | offset << 3
    mov 32(%rsp), %rdx
    shl $17, %rdx
    or %rdx, %rax                    # | (site + 5) << 17
    mov $8, %edx
    xadd %rdx, (%r11)                # reserve the record
    cmp %rcx, {tbase}(%r11)
    jne .Llib_entry_redo             # a handler moved the base meanwhile
    lea 8(%rdx), %rcx
    cmp 8(%r11), %rcx
    ja .Llib_entry_full
    mov %rax, (%rdx)                 # one store: the record is whole
.Llib_recording:
    FTAIL_SIDE_ENTER 0, 1
.Llib_entry_full:
    FTAIL_FULL {full_entry}, .Llib_side
.Llib_side:                          # after a slow path: as lib_enter
    cmpq $1, 40(%r11)
    je .Llib_recording
    jmp 8b                           # (FTAIL_SIDE_ENTER's setup path)
.Llib_entry_redo:
    mov %rdx, %rcx
    FTAIL_SLOW {slow_compact}, 0
    jmp .Llib_entry_reload
.Llib_entry_time:
    xor %ecx, %ecx
    FTAIL_SLOW {slow_compact}, 0
    jmp .Llib_entry_reload
.Llib_entry_slow:
    FTAIL_SLOW {slow_entry}
.Llib_entry_reload:
    mov {tls}(%rip), %r11            # the call clobbered it
    add %fs:0, %r11
    jmp .Llib_side
    .cfi_endproc
    .size ftail_lib_entry_c, .-ftail_lib_entry_c

    # Convert thunk, second half: jumped to when the tail callee has
    # returned into the thunk (rsp at the function's CFA; rax, rdx, xmm0-1
    # and st0-1 hold return values). Puts the saved return address back in
    # its slot and rbx back, records the function's exit and returns to
    # its caller. The side entry is the one rbx points at (the callee kept
    # rbx); when it is not the top one, the Rust slow path frees it in
    # place. A missing entry (its return address is lost) is fatal: ud2.
    .p2align 4
    .globl ftail_convert_leave
    .hidden ftail_convert_leave
    .type ftail_convert_leave, @function
ftail_convert_leave:
    .cfi_startproc
    .cfi_def_cfa_offset 0            # jumped to: no return address yet
    sub $8, %rsp                     # the slot again; the return address
    .cfi_adjust_cfa_offset 8         # goes back into it below
    FTAIL_PUSH4                      # slot: rsp+32; CFA: rsp+40
    mov 72(%r11), %rcx               # rbx points at our side entry (the
    test %rcx, %rcx                  # callee kept it): the top one?
    jz 6f
    shl $5, %rcx
    add 64(%r11), %rcx
    sub $32, %rcx                    # &side[depth - 1]
    cmp %rcx, %rbx
    jne 6f                           # entries of other stacks above it, or
    lea 32(%rsp), %rdx               # left behind by a longjmp: slow
    cmp %rdx, 8(%rcx)
    jne 6f
    mov (%rcx), %rax
    mov %rax, 32(%rsp)               # the return address, back in place
    mov 16(%rcx), %rbx               # and the borrowed register
    decq 72(%r11)
2:  cmpq $1, 40(%r11)
    jne 10f
    mov 16(%r11), %rcx               # the function's trace entry on top?
    test %rcx, %rcx
    jz 9f
    mov %rcx, %rax
    shl $4, %rax
    add 24(%r11), %rax
    lea 40(%rsp), %rdx
    cmp %rdx, -16(%rax)
    jne 8f
    testb $0x2e, -1(%rax)            # the first function of a context,
    jnz 8f                           # or triggers act at its exit
    decq 16(%r11)                    # pop it
    cmp {maxd}(%r11), %rcx
    ja .Lleave_callers
    mov -8(%rax), %rcx               # the popped entry's word
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov $16, %edx
    xadd %rdx, (%r11)
    cmp 8(%r11), %rdx
    jae 7f
    shl $16, %rcx                    # its entry address, without flags,
    shr $16, %rcx
    bts $57, %rcx                    # kind TailExit (2)
    mov %rcx, 8(%rdx)
    mov %rax, (%rdx)
    FTAIL_TAIL_CALLERS 40, .Lleave_callers, 9f
9:  FTAIL_POP4_RET
7:  FTAIL_FULL {full_tail}, .Lleave_callers # (CFA/site arguments unused)
8:  push %rsi                        # resynchronise in Rust: the same
    push %rdi                        # frame layout as FTAIL_SLOW expects
    push %r8                         # but with the CFA 8 bytes lower
    push %r9
    push %r10
    push %rbp
    mov %rsp, %rbp
    FTAIL_SAVE_EXTENDED
    mov %r11, %rdi
    lea 88(%rbp), %rsi
    xor %edx, %edx
    call {slow_tail_return}
    FTAIL_RESTORE_EXTENDED
    mov %rbp, %rsp
    pop %rbp
    pop %r10
    pop %r9
    pop %r8
    pop %rdi
    pop %rsi
    jmp 9b
10: cmpq ${off}, 40(%r11)            # after a stack switch: in line
    je 9b                            # first (a signal handler's slow path
    jmp 8b                           # may have made it 'recording' since)
6:  FTAIL_SLOW_SIDE {slow_side_leave}, 80 # rax: return address, rcx: rbx
    mov {tls}(%rip), %r11
    add %fs:0, %r11
    test %rax, %rax
    jz 5f
    mov %rax, 32(%rsp)               # the return address, back in place
    mov %rcx, %rbx                   # and the borrowed register
    jmp 2b
5:  ud2                              # the side stack lost our entry
    .cfi_endproc
    .size ftail_convert_leave, .-ftail_convert_leave

    .p2align 4
    .globl ftail_convert_leave_c
    .hidden ftail_convert_leave_c
    .type ftail_convert_leave_c, @function
ftail_convert_leave_c:
    .cfi_startproc
    .cfi_def_cfa_offset 0            # jumped to: no return address yet
    sub $8, %rsp                     # the slot again; the return address
    .cfi_adjust_cfa_offset 8         # goes back into it below
    FTAIL_PUSH4                      # slot: rsp+32; CFA: rsp+40
    mov 72(%r11), %rcx               # rbx points at our side entry (the
    test %rcx, %rcx                  # callee kept it): the top one?
    jz 6f
    shl $5, %rcx
    add 64(%r11), %rcx
    sub $32, %rcx                    # &side[depth - 1]
    cmp %rcx, %rbx
    jne 6f                           # entries of other stacks above it, or
    lea 32(%rsp), %rdx               # left behind by a longjmp: slow
    cmp %rdx, 8(%rcx)
    jne 6f
    mov (%rcx), %rax
    mov %rax, 32(%rsp)               # the return address, back in place
    mov 16(%rcx), %rbx               # and the borrowed register
    decq 72(%r11)
2:  cmpq $1, 40(%r11)
    jne 10f
    mov 16(%r11), %rcx               # the function's trace entry on top?
    test %rcx, %rcx
    jz 9f
    mov %rcx, %rax
    shl $4, %rax
    add 24(%r11), %rax
    lea 40(%rsp), %rdx
    cmp %rdx, -16(%rax)
    jne 8f
    testb $0x3e, -1(%rax)            # the first function of a context,
    jnz 8f                           # its return value recorded, triggers
    decq 16(%r11)                    # pop it
    cmp {maxd}(%r11), %rcx
    ja .Lleave_c_callers
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov {tbase}(%r11), %rcx
    sub %rcx, %rax                   # the time's offset from the base
    cmp ${close_span}, %rax
    jae .Lleave_c_time               # too far, or the base poisoned
    lea 3(,%rax,8), %rax             # tag TailExit (3) | offset << 3
    mov $4, %edx
    xadd %rdx, (%r11)
    cmp %rcx, {tbase}(%r11)
    jne .Lleave_c_redo               # a handler moved the base meanwhile
    lea 4(%rdx), %rcx
    cmp 8(%r11), %rcx
    ja 7f
    mov %eax, (%rdx)
    FTAIL_TAIL_CALLERS_C 40, .Lleave_c_callers, 9f
9:  FTAIL_POP4_RET
7:  FTAIL_FULL {full_tail}, .Lleave_c_callers # (CFA/site arguments unused)
.Lleave_c_redo:                      # (CFA/site arguments unused)
    mov %rdx, %rcx
    FTAIL_SLOW {slow_compact}, 2
    mov {tls}(%rip), %r11
    add %fs:0, %r11
    jmp .Lleave_c_callers
.Lleave_c_time:
    xor %ecx, %ecx
    FTAIL_SLOW {slow_compact}, 2
    mov {tls}(%rip), %r11
    add %fs:0, %r11
    jmp .Lleave_c_callers
8:  push %rsi                        # resynchronise in Rust: the same
    push %rdi                        # frame layout as FTAIL_SLOW expects
    push %r8                         # but with the CFA 8 bytes lower
    push %r9
    push %r10
    push %rbp
    mov %rsp, %rbp
    FTAIL_SAVE_EXTENDED
    mov %r11, %rdi
    lea 88(%rbp), %rsi
    xor %edx, %edx
    mov %rsp, %r9                    # the area (args.rs)
    call {slow_tail_return}
    FTAIL_RESTORE_EXTENDED
    mov %rbp, %rsp
    pop %rbp
    pop %r10
    pop %r9
    pop %r8
    pop %rdi
    pop %rsi
    jmp 9b
10: cmpq ${off}, 40(%r11)            # after a stack switch: in line
    je 9b                            # first (a signal handler's slow path
    jmp 8b                           # may have made it 'recording' since)
6:  FTAIL_SLOW_SIDE {slow_side_leave}, 80 # rax: return address, rcx: rbx
    mov {tls}(%rip), %r11
    add %fs:0, %r11
    test %rax, %rax
    jz 5f
    mov %rax, 32(%rsp)               # the return address, back in place
    mov %rcx, %rbx                   # and the borrowed register
    jmp 2b
5:  ud2                              # the side stack lost our entry
    .cfi_endproc
    .size ftail_convert_leave_c, .-ftail_convert_leave_c

    # Library thunk, second half (`plan/libcall.rs`): jumped to when the
    # library function has returned into its thunk (rsp at the thunk's
    # CFA; rax, rdx, xmm0-1 and st0-1 hold return values) with r11 =
    # where the thunk goes on, which r11 may hold because every call
    # clobbers it. Puts the saved return address back in its slot and rbx
    # back, as ftail_convert_leave does, and records nothing: the thunk
    # then ends through the exit trampoline like any function, with a
    # `call` matched by its `ret` and its own `ret` to the address its
    # caller pushed.
    .p2align 4
    .globl ftail_lib_leave
    .hidden ftail_lib_leave
    .type ftail_lib_leave, @function
ftail_lib_leave:
    .cfi_startproc
    .cfi_def_cfa_offset 0            # jumped to: no return address yet
    sub $8, %rsp                     # the slot again; the return address
    .cfi_adjust_cfa_offset 8         # goes back into it below
    FTAIL_PUSH4                      # slot: rsp+32; [rsp]: where to go on
    mov 72(%r11), %rcx               # rbx points at our side entry: the
    test %rcx, %rcx                  # top one?
    jz 6f
    shl $5, %rcx
    add 64(%r11), %rcx
    sub $32, %rcx                    # &side[depth - 1]
    cmp %rcx, %rbx
    jne 6f
    lea 32(%rsp), %rdx
    cmp %rdx, 8(%rcx)
    jne 6f
    mov (%rcx), %rax
    mov %rax, 32(%rsp)               # the return address, back in place
    mov 16(%rcx), %rbx               # and the borrowed register
    decq 72(%r11)
2:  pop %r11
    .cfi_adjust_cfa_offset -8
    pop %rdx
    .cfi_adjust_cfa_offset -8
    pop %rcx
    .cfi_adjust_cfa_offset -8
    pop %rax
    .cfi_adjust_cfa_offset -8
    jmp *%r11
    int3
    .cfi_adjust_cfa_offset 32
6:  FTAIL_SLOW_SIDE {slow_side_leave}, 80 # rax: return address, rcx: rbx
    test %rax, %rax
    jz 5f
    mov %rax, 32(%rsp)               # the return address, back in place
    mov %rcx, %rbx                   # and the borrowed register
    jmp 2b
5:  ud2                              # the side stack lost our entry
    .cfi_endproc
    .size ftail_lib_leave, .-ftail_lib_leave

    # Library thunk, second half and exit in one trip (compact format):
    # jumped to as ftail_lib_leave is (r11: where the thunk goes on). Puts
    # the return address and rbx back as it does, then, when the thunk's
    # trace entry is on top with nothing to act at its exit, pops it,
    # records the exit as ftail_exit_c does and returns to the thunk's
    # caller, with the `ret` its `call` is matched by. Anything else
    # (not recording, frames to resynchronise, a return value or triggers
    # at the exit, a marked entry) goes on in the thunk as after
    # ftail_lib_leave: its exit site records the exit.
    .p2align 4
    .globl ftail_lib_exit_c
    .hidden ftail_lib_exit_c
    .type ftail_lib_exit_c, @function
ftail_lib_exit_c:
    .cfi_startproc
    .cfi_def_cfa_offset 0            # jumped to: no return address yet
    sub $8, %rsp                     # the slot again; the return address
    .cfi_adjust_cfa_offset 8         # goes back into it below
    FTAIL_PUSH4                      # slot: rsp+32; CFA: rsp+40
    mov 72(%r11), %rcx               # rbx points at our side entry: the
    test %rcx, %rcx                  # top one?
    jz 6f
    shl $5, %rcx
    add 64(%r11), %rcx
    sub $32, %rcx                    # &side[depth - 1]
    cmp %rcx, %rbx
    jne 6f
    lea 32(%rsp), %rdx
    cmp %rdx, 8(%rcx)
    jne 6f
    mov (%rcx), %rax
    mov %rax, 32(%rsp)               # the return address, back in place
    mov 16(%rcx), %rbx               # and the borrowed register
    decq 72(%r11)
    cmpq $1, 40(%r11)
    jne 2f
    mov 16(%r11), %rcx               # the thunk's trace entry on top?
    test %rcx, %rcx
    jz 2f
    mov %rcx, %rax
    shl $4, %rax
    add 24(%r11), %rax
    lea 40(%rsp), %rdx
    cmp %rdx, -16(%rax)
    jne 2f
    testb $0xbe, -1(%rax)            # marked, a context's first, a value,
    jnz 2f                           # triggers: the exit trampoline's
    decq 16(%r11)                    # pop it
    cmp {maxd}(%r11), %rcx
    ja .Llib_exit_callers            # popped entry was deeper than -D
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov {tbase}(%r11), %rcx
    sub %rcx, %rax                   # the time's offset from the base
    cmp ${close_span}, %rax
    jae .Llib_exit_time              # too far, or the base poisoned
    lea 2(,%rax,8), %rax             # tag Exit (2) | offset << 3
    mov $4, %edx
    xadd %rdx, (%r11)
    cmp %rcx, {tbase}(%r11)
    jne .Llib_exit_redo              # a handler moved the base meanwhile
    lea 4(%rdx), %rcx
    cmp 8(%r11), %rcx
    ja 7f
    mov %eax, (%rdx)
    FTAIL_TAIL_CALLERS_C 40, .Llib_exit_callers, 9f
9:  FTAIL_POP4_RET
7:  FTAIL_FULL {full_exit}, .Llib_exit_callers # (CFA/site arguments unused)
.Llib_exit_redo:                     # (CFA/site arguments unused)
    mov %rdx, %rcx
    FTAIL_SLOW {slow_compact}, 1
    mov {tls}(%rip), %r11
    add %fs:0, %r11
    jmp .Llib_exit_callers
.Llib_exit_time:
    xor %ecx, %ecx
    FTAIL_SLOW {slow_compact}, 1
    mov {tls}(%rip), %r11
    add %fs:0, %r11
    jmp .Llib_exit_callers
2:  pop %r11                         # on in the thunk, to its exit site
    .cfi_adjust_cfa_offset -8
    pop %rdx
    .cfi_adjust_cfa_offset -8
    pop %rcx
    .cfi_adjust_cfa_offset -8
    pop %rax
    .cfi_adjust_cfa_offset -8
    jmp *%r11
    int3
    .cfi_adjust_cfa_offset 32
6:  FTAIL_SLOW_SIDE {slow_side_leave}, 80 # rax: return address, rcx: rbx
    test %rax, %rax
    jz 5f
    mov %rax, 32(%rsp)               # the return address, back in place
    mov %rcx, %rbx                   # and the borrowed register
    jmp 2b
5:  ud2                              # the side stack lost our entry
    .cfi_endproc
    .size ftail_lib_exit_c, .-ftail_lib_exit_c
"#,
    tls = sym FTAIL_TLS_OFFSET,
    xsave_size = sym FTAIL_XSAVE_SIZE,
    xsave_mask = sym FTAIL_XSAVE_MASK,
    slow_room = sym FTAIL_SLOW_ROOM,
    spare = const std::mem::offset_of!(ThreadState, spare),
    coro_lo = const std::mem::offset_of!(ThreadState, coro_lo),
    spare_busy = const std::mem::offset_of!(ThreadState, spare_busy),
    maxd = const std::mem::offset_of!(ThreadState, max_depth),
    slow_entry = sym ftail_slow_entry,
    slow_exit = sym ftail_slow_exit,
    slow_setup = sym ftail_slow_setup,
    full_entry = sym ftail_slow_full_entry,
    full_exit = sym ftail_slow_full_exit,
    full_tail = sym ftail_slow_full_tail,
    slow_tail_return = sym ftail_slow_tail_return,
    slow_tail_mark = sym ftail_slow_tail_mark,
    slow_side_enter = sym ftail_slow_side_enter,
    slow_side_leave = sym ftail_slow_side_leave,
    slow_compact = sym ftail_slow_compact,
    slow_entry_spec = sym crate::record::args::ftail_slow_entry_spec,
    slow_compact_spec = sym crate::record::args::ftail_slow_compact_spec,
    full_entry_spec = sym crate::record::args::ftail_slow_full_entry_spec,
    args_room = sym crate::record::args::ftail_slow_args_room,
    give_up = sym crate::record::args::ftail_slow_give_up,
    compact = const std::mem::offset_of!(ThreadState, compact),
    fast_args = const crate::record::args::FAST_ARGS,
    inline_classes = const crate::record::args::INLINE_CLASSES,
    float_class = const ftail_abi::argspec::class::FLOAT,
    ret_ty_shift = const crate::record::state::RET_TY_SHIFT,
    retval_bit = const crate::record::state::RETVAL.trailing_zeros(),
    args_head = const ftail_abi::trace::compact::TAG_EXT | ftail_abi::trace::compact::SUB_ARGS << 3,
    retval_head = const ftail_abi::trace::compact::TAG_EXT
        | ftail_abi::trace::compact::SUB_RETVAL << 3
        | 4 << 8
        | 1 << 16,
    slow_ret_callers = sym crate::record::args::ftail_slow_ret_callers,
    tbase = const std::mem::offset_of!(ThreadState, base),
    entry_span = const ftail_abi::trace::compact::ENTRY_SPAN,
    close_span = const ftail_abi::trace::compact::CLOSE_SPAN,
    switched = const STATUS_SWITCHED,
    off = const STATUS_OFF,
    ended_base = const std::mem::offset_of!(ThreadState, ended_base),
    options(att_syntax)
);

/// The variadic exec functions (`execl`, `execlp`, `execle`) cannot be
/// written in Rust, so their wrappers are assembly: they store the six
/// integer argument registers in a row on the stack and call
/// [`crate::record::children::variadic_exec`] with it and the address of the
/// caller's stack arguments (the variadic arguments past the sixth), and
/// return what it returns (it returns only when the exec failed). rsp is
/// 16-byte aligned for the call: 8 at entry, then seven pushes.
macro_rules! variadic_exec_wrapper {
    ($name:ident, $which:expr) => {
        /// Gathers the arguments, closes the thread's open frames and
        /// runs the exec with the tracer's variables in its environment.
        #[unsafe(naked)]
        #[no_mangle]
        pub extern "C" fn $name() {
            std::arch::naked_asm!(
                "push %rbp",
                "mov %rsp, %rbp",
                "push %r9",
                "push %r8",
                "push %rcx",
                "push %rdx",
                "push %rsi",
                "push %rdi",
                "mov ${which}, %edi",
                "mov %rsp, %rsi",
                "lea 16(%rbp), %rdx",
                "call {gather}",
                "leave",
                "ret",
                which = const $which,
                gather = sym crate::record::children::variadic_exec,
                options(att_syntax)
            )
        }
    };
}

variadic_exec_wrapper!(execl, 0);
variadic_exec_wrapper!(execlp, 1);
variadic_exec_wrapper!(execle, 2);

/// `swapcontext(oucp, ucp)`: lets [`crate::record::stacks::before_swapcontext`]
/// record the switch (with the caller's stack pointer after the call, and
/// `ucp`), then jumps to libc's function with every argument and the
/// caller's stack untouched, so the context it saves returns to the
/// caller. ABI: a plain function call; only `rdi` and `rsi` matter to
/// libc's function, and the callee-saved registers are kept by the Rust
/// call; rsp is 16-byte aligned for it (8 at entry plus three words).
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn swapcontext() {
    std::arch::naked_asm!(
        "push %rdi",
        "push %rsi",
        "sub $8, %rsp",
        "lea 32(%rsp), %rdi",
        "call {before}",
        "mov %rax, %r11",
        "add $8, %rsp",
        "pop %rsi",
        "pop %rdi",
        "jmp *%r11",
        before = sym crate::record::stacks::before_swapcontext,
        options(att_syntax)
    )
}

/// `setcontext(ucp)`: the same as [`swapcontext`], through
/// [`crate::record::stacks::before_setcontext`].
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn setcontext() {
    std::arch::naked_asm!(
        "push %rdi",
        "lea 16(%rsp), %rsi",
        "xchg %rsi, %rdi",
        "call {before}",
        "mov %rax, %r11",
        "pop %rdi",
        "jmp *%r11",
        before = sym crate::record::stacks::before_setcontext,
        options(att_syntax)
    )
}

/// `makecontext(ucp, func, argc, ...)`, variadic: saves the argument
/// registers and `al` as the exec wrappers do, lets
/// [`crate::record::stacks::before_makecontext`] record the context's stack, then
/// jumps to libc's function with the stack arguments in place.
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn makecontext() {
    std::arch::naked_asm!(
        "push %rdi",
        "push %rsi",
        "push %rdx",
        "push %rcx",
        "push %r8",
        "push %r9",
        "push %rax",
        "call {before}",
        "mov %rax, %r11",
        "pop %rax",
        "pop %r9",
        "pop %r8",
        "pop %rcx",
        "pop %rdx",
        "pop %rsi",
        "pop %rdi",
        "jmp *%r11",
        before = sym crate::record::stacks::before_makecontext,
        options(att_syntax)
    )
}

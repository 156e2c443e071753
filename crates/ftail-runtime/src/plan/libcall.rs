//! Library calls: call sites whose callee lies in a module without site
//! tables (libc, libstdc++, ...), recorded around a real `call`.
//!
//! A call site (`call f@PLT`, `call *f@GOTPCREL(%rip)`) is resolved at
//! planning through the module's PLT slot or GOT slot to the symbol its
//! dynamic relocation names. When no module with tables defines that
//! function (a call into instrumented code is already recorded by the
//! callee's entry, and must not be counted twice), the call is retargeted
//! to the module's *library thunk* for that slot:
//!
//! ```text
//! T:  call ENTRY              ; the thunk's entry site (or `jmp 2f`)
//!     call lib_enter          ; the return address to the side stack
//!     jnz 2f
//!     call *SLOT(%rip)        ; the library function, with the stack the
//!     lea 1f(%rip), %r11      ; caller's own call gave it
//!     jmp lib_leave           ; the return address back in its slot
//! 1:  endbr64
//!     call EXIT               ; the thunk's exit, as any function's
//!     ret
//! 2:  jmp *SLOT(%rip)
//! ```
//!
//! The thunk is traced as a function of its own that calls the library
//! function the way a converted tail call is made: the convert
//! trampolines move the caller's return address to the side stack and
//! put exactly that address back before the thunk's `ret`, every `call`
//! is matched by its own `ret`, so no return address is written and a
//! shadow stack stays in step. Its entry event
//! names the thunk, which `KEY.modules` names by the slot's symbol
//! (`libcall` lines). The thunk's entry site is switched with the call
//! sites that use it (by the library function's name), so that a tail
//! call into the library, whose convert thunk calls the library thunk,
//! follows the same selection.
//!
//! A thunk whose entry takes no spec (`-A`/`-R`), in the compact format,
//! is *merged*: one trampoline records the entry and moves the return
//! address to the side stack, and one puts it back and records the exit,
//! returning straight to the caller (two trips through the runtime per
//! call instead of four):
//!
//! ```text
//! T:  call lib_entry          ; the thunk's entry site (or `jmp 2f`)
//!     jnz 2f
//!     call *SLOT(%rip)        ; the library function
//!     lea 1f(%rip), %r11      ; where to go on when the exit is not
//!     jmp lib_exit            ; recorded there (not recording, a value
//! 1:  endbr64                 ; or trigger at the exit, frames to
//!     call EXIT               ; resynchronise): the exit site, as in
//!     ret                     ; the thunk above
//! 2:  jmp *SLOT(%rip)
//! ```
//!
//! `lib_entry` returns as `lib_enter` does, and `lib_exit` returns to the
//! caller with the `ret` that matches the caller's own `call`: the same
//! calls and returns as the thunk above, one `call`/`ret` pair fewer.
//!
//! A function that returns twice (`setjmp`) must be entered with its
//! caller's own return address on the stack: its *leaf thunk* records
//! the call's entry and exit at once, then jumps to it, so the call is
//! counted (as uftrace counts it) and the function returns straight to
//! its caller:
//!
//! ```text
//! T:  call ENTRY              ; the thunk's entry site (or `jmp 2f`)
//!     call EXIT               ; closed at once
//! 2:  jmp *SLOT(%rip)
//! ```
//!
//! A call into code of the calling module itself that carries no site
//! tables — the Rust standard library linked into a program, a static
//! archive built without ftail — is a library call as well: `call rel32`,
//! or the `addr32 call rel32` a linker relaxes `call *f@GOTPCREL(%rip)`
//! to, whose target starts a function of the module's `.symtab`
//! (`found::symtab`) that has no entry site. Its thunk calls through a
//! word holding the target (the thunk's pointer word, which only a `call
//! *disp(%rip)` site would use otherwise), and is named by that symbol.
//! Without a symbol table nothing tells a `setjmp` apart, and such calls
//! stay unrecorded.

use std::collections::{BTreeMap, HashSet};

use ftail_abi::SiteKind;

use crate::code::jumps::plt_slot;
use crate::code::stubs::{call_or_jmp, fits_rel32, rel32, Trampolines, NEAR};
use crate::code::unwind::ThunkLayout;
use crate::found::exports::Exports;
use crate::found::modules::{func_name, rel, Module, Site};
use crate::found::symtab::LocalFunctions;

/// Bytes reserved per library thunk.
pub const LIB_THUNK: u64 = 48;
/// Bytes per pointer to a library thunk (for `call *disp(%rip)` sites).
pub const LIB_POINTER: u64 = 8;
/// Bytes per call site's resume stub: the original call made elsewhere,
/// then a jump back after the site, for a thread that meets the site
/// while a live change holds its `int3`.
pub const RESUME: u64 = 16;
/// Offset of the library call in a library thunk (for its unwind info).
pub const LIB_CALL_AT: u64 = 12;
/// Offset of where a library thunk goes on once the return address is
/// back in its slot (its unwind rules are the plain ones from there).
pub const LIB_CONTINUE_AT: u64 = 30;
/// Offset of the fallback jump in a library thunk.
pub const LIB_FALLBACK_AT: u64 = 41;

/// Offset of the library call in a merged library thunk.
pub const MERGED_CALL_AT: u64 = 7;
/// Offset of where a merged library thunk goes on when its exit is not
/// recorded by `lib_exit` (its unwind rules are the plain ones from
/// there).
pub const MERGED_CONTINUE_AT: u64 = 25;
/// Offset of the fallback jump in a merged library thunk.
pub const MERGED_FALLBACK_AT: u64 = 36;
/// The near stubs of `ftail_lib_entry_c` and `ftail_lib_exit_c`
/// (`Trampolines::all`).
const LIB_ENTRY_STUB: usize = 7;
const LIB_EXIT_STUB: usize = 8;

/// Offset of the jump to the library function in a leaf thunk.
pub const LEAF_FALLBACK_AT: u64 = 10;
/// Bytes of a leaf thunk's code.
pub const LEAF_LEN: u64 = 16;

/// Functions that return twice: recorded through a leaf thunk, as calls
/// that end at once (a tail jump into one stays the program's own).
pub const LEAF: &[&str] = &["setjmp", "_setjmp", "__setjmp", "sigsetjmp", "__sigsetjmp"];

/// Whether calls of `name` are recorded through a leaf thunk.
pub fn is_leaf(name: &str) -> bool {
    LEAF.contains(&name)
}

/// Whether a function of the calling module itself named `name` is left
/// alone: one of [`NEVER`], or one that returns twice (a `setjmp` linked
/// into the program stays the program's own; only calls into shared
/// libraries take a leaf thunk).
pub fn never_local(name: &str) -> bool {
    is_never(name) || is_leaf(name)
}

/// `vfork` and its alias: through a thunk only without a shadow stack.
/// With one, the child leaves `vfork` without popping it (as glibc's
/// does, so that the parent's entry stays), and the thunk's own `ret` in
/// the child would then fault; `record/vfork.rs` keeps the child out of
/// the parent's state either way.
pub const VFORK: &[&str] = &["vfork", "__vfork"];

/// Whether calls of `name` go straight to it: one of [`NEVER`], or
/// [`VFORK`] while the thread has a shadow stack (CET) in use.
pub fn is_never(name: &str) -> bool {
    NEVER.contains(&name) || (VFORK.contains(&name) && shadow_stack_in_use())
}

/// Whether the calling thread runs with a shadow stack: `rdsspq` leaves
/// its register 0 where none is in use (and is a `nop` on processors
/// without CET).
pub fn shadow_stack_in_use() -> bool {
    let ssp: u64;
    // SAFETY: rdsspq only reads the shadow-stack pointer, or does nothing.
    unsafe {
        std::arch::asm!(
            "xor {0:e}, {0:e}",
            "rdsspq {0}",
            out(reg) ssp,
            options(nomem, nostack, preserves_flags)
        )
    };
    ssp != 0
}

/// Functions whose calls are never made through a library thunk: those
/// that must see their real caller (as for converted tail calls,
/// DESIGN.md), those whose stack is switched to another context (which
/// may resume on another thread, away from the thunk's side-stack
/// entry), and the runtime's own entry point.
pub const NEVER: &[&str] = &[
    "getcontext",
    "swapcontext",
    "setcontext",
    "makecontext",
    "dlopen",
    "dlmopen",
    "dlsym",
    "dlvsym",
    "__libc_dlopen_mode",
    "__tls_get_addr",
    "ftail_ctl",
    // The runtime's own: a snapshot marks the program's call that asked.
    "ftail_snapshot",
];

/// What every module with site tables defines, as known when a module is
/// planned: a call to one of these is recorded by the callee itself.
#[derive(Default)]
pub struct Known {
    names: HashSet<String>,
    text: Vec<(u64, u64)>,
    /// Where every function with an entry site starts, sorted.
    starts: Vec<u64>,
    /// Every loaded object's dynamic symbols, to name the module that
    /// defines a library function.
    exports: Exports,
}

impl Known {
    /// The functions and code of `modules` (every loaded module with
    /// tables).
    pub fn of(modules: &[Module]) -> Known {
        let mut k = Known {
            exports: Exports::loaded(),
            ..Known::default()
        };
        for m in modules {
            for &f in &m.funcs {
                // SAFETY: records come from this loaded module's notes.
                k.names.insert(unsafe { func_name(f) }.to_string());
                // SAFETY: as above.
                k.starts
                    .push(unsafe { rel(std::ptr::addr_of!((*f).start)) });
            }
            if !m.funcs.is_empty() {
                k.text.extend(m.text.iter().map(|s| (s.0, s.1)));
            }
        }
        k.starts.sort_unstable();
        k
    }

    /// The path of the loaded object that defines `name`, if one does.
    pub fn definer(&self, name: &str) -> Option<&str> {
        self.exports.definer(name)
    }

    /// Whether a function with an entry site starts at `addr`.
    fn starts_function(&self, addr: u64) -> bool {
        self.starts.binary_search(&addr).is_ok()
    }

    /// Whether a module with tables defines `name` or holds `addr`.
    fn instrumented(&self, name: &str, addr: u64) -> bool {
        self.names.contains(name) || self.text.iter().any(|&(s, e)| (s..e).contains(&addr))
    }
}

/// What a library thunk calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Callee {
    /// The function a GOT slot of the module holds.
    Slot(u64),
    /// A function of the module itself, at this address.
    Local(u64),
}

/// A call site into a library, resolved.
pub struct CallOut {
    /// The call instruction.
    pub insn: u64,
    /// Its length (5 for `call rel32`, 6 for `call *disp(%rip)` and
    /// `addr32 call rel32`).
    pub len: u64,
    /// What it calls.
    pub callee: Callee,
    /// What the 5 bytes written hold untraced (at `insn + len - 5`).
    pub off: [u8; 5],
    /// The original call's target (a PLT stub, or the function itself),
    /// for `call rel32` and `addr32 call rel32`.
    pub direct: Option<u64>,
}

/// The library function a call site calls, if it is one to record.
pub fn resolve(
    m: &Module,
    site: &Site,
    kind: SiteKind,
    got: &BTreeMap<u64, String>,
    known: &Known,
    local: &LocalFunctions,
) -> Option<(CallOut, String)> {
    let insn = site.addr;
    let in_text = |a: u64, len: u64| m.text.iter().any(|s| a >= s.0 && a + len <= s.1);
    if !in_text(insn, 6) {
        return None;
    }
    // SAFETY: checked to lie in an executable segment of the module.
    let b: [u8; 6] = unsafe { std::ptr::read_unaligned(insn as *const [u8; 6]) };
    let disp = |at: usize| i32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as i64;
    let direct = |len: u64| {
        let target = (insn + len).wrapping_add(disp(len as usize - 4) as u64);
        let at = (len - 5) as usize;
        let off = [b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4]];
        (target, off)
    };
    let out = match (kind, b) {
        // A `call *f@GOTPCREL(%rip)` that the linker relaxed, to `addr32
        // call f` or to `call f; nop` (`-z call-nop=suffix-nop`), for an f
        // bound in this module; or a direct call.
        (SiteKind::Call, [0xe8, ..]) | (SiteKind::CallGot, [0x67, 0xe8, ..] | [0xe8, .., 0x90]) => {
            let len = if b[0] == 0x67 { 6 } else { 5 };
            let (target, off) = direct(len);
            if let Some(name) = local.name(target) {
                let call = CallOut {
                    insn,
                    len,
                    callee: Callee::Local(target),
                    off,
                    direct: Some(target),
                };
                return is_local_library(target, m, known, local).then(|| (call, name.to_string()));
            }
            if kind == SiteKind::CallGot {
                // Bound in this module, to a function no symbol names.
                return None;
            }
            // A PLT stub of this module: its first 16 bytes are code.
            if !in_text(target, 16) {
                return None;
            }
            CallOut {
                insn,
                len: 5,
                callee: Callee::Slot(plt_slot(target)?),
                off,
                direct: Some(target),
            }
        }
        (SiteKind::CallGot, [0xff, 0x15, ..]) => CallOut {
            insn,
            len: 6,
            callee: Callee::Slot((insn + 6).wrapping_add(disp(2) as u64)),
            off: [b[1], b[2], b[3], b[4], b[5]],
            direct: None,
        },
        _ => return None,
    };
    let Callee::Slot(slot) = out.callee else {
        return None;
    };
    let name = got.get(&slot)?;
    is_library(name, slot, m, known).then(|| (out, name.clone()))
}

/// Whether calls of the function of `m` at `target` (a `.symtab`
/// function) are recorded as library calls: it has no entry site, is
/// not one of [`NEVER`] under any of its names, and lies in `m`'s code.
pub fn is_local_library(target: u64, m: &Module, known: &Known, local: &LocalFunctions) -> bool {
    m.text.iter().any(|s| (s.0..s.1).contains(&target))
        && !known.starts_function(target)
        && !local.is_never(target)
}

/// Whether calls of `name` through the GOT slot `slot` are recorded as
/// library calls: not one of [`NEVER`], and defined by no module with
/// tables (by name, or by where the slot is bound now: a slot not bound
/// yet points back into the calling module `m`'s own PLT, which says
/// nothing).
pub fn is_library(name: &str, slot: u64, m: &Module, known: &Known) -> bool {
    if is_never(name) {
        return false;
    }
    // SAFETY: a GOT slot named by the module's own relocations, mapped
    // readable while the module is loaded.
    let bound = unsafe { std::ptr::read_volatile(slot as *const u64) };
    let lazy = m.text.iter().any(|s| (s.0..s.1).contains(&bound));
    !known.names.contains(name) && (lazy || !known.instrumented(name, bound))
}

/// Writes a library thunk for `slot` at `at`, its entry site holding its
/// untraced form (`jmp` to the fallback); returns that form, or `None`
/// when the slot is out of reach.
fn write_lib_thunk(at: u64, slot: u64, stubs: &[u64; NEAR]) -> Option<[u8; 5]> {
    let fallback = at + LIB_FALLBACK_AT;
    let call = at + LIB_CALL_AT;
    if !fits_rel32(call + 6, slot) || !fits_rel32(fallback + 6, slot) {
        return None;
    }
    let mut code = [0xccu8; LIB_THUNK as usize];
    let off = call_or_jmp(0xe9, at, fallback);
    code[..5].copy_from_slice(&off);
    code[5..10].copy_from_slice(&call_or_jmp(0xe8, at + 5, stubs[5]));
    code[10..12].copy_from_slice(&[0x75, (LIB_FALLBACK_AT - 12) as u8]);
    code[12..14].copy_from_slice(&[0xff, 0x15]);
    code[14..18].copy_from_slice(&rel32(call + 6, slot));
    // lea CONTINUE(%rip), %r11
    code[18..21].copy_from_slice(&[0x4c, 0x8d, 0x1d]);
    code[21..25].copy_from_slice(&rel32(at + 25, at + LIB_CONTINUE_AT));
    code[25..30].copy_from_slice(&call_or_jmp(0xe9, at + 25, stubs[6]));
    code[30..34].copy_from_slice(&[0xf3, 0x0f, 0x1e, 0xfa]);
    code[34..39].copy_from_slice(&call_or_jmp(0xe8, at + 34, stubs[1]));
    code[39] = 0xc3;
    code[41..43].copy_from_slice(&[0xff, 0x25]);
    code[43..47].copy_from_slice(&rel32(fallback + 6, slot));
    // SAFETY: [at, at + LIB_THUNK) lies in the writable area mapped for
    // the module's thunks.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), at as *mut u8, code.len()) };
    Some(off)
}

/// Writes a merged library thunk for `slot` at `at` (see the module's
/// text), its entry site holding its untraced form (`jmp` to the
/// fallback); returns that form, or `None` when the slot is out of
/// reach.
fn write_merged_thunk(at: u64, slot: u64, stubs: &[u64; NEAR]) -> Option<[u8; 5]> {
    let fallback = at + MERGED_FALLBACK_AT;
    let call = at + MERGED_CALL_AT;
    if !fits_rel32(call + 6, slot) || !fits_rel32(fallback + 6, slot) {
        return None;
    }
    let mut code = [0xccu8; LIB_THUNK as usize];
    let off = call_or_jmp(0xe9, at, fallback);
    code[..5].copy_from_slice(&off);
    code[5..7].copy_from_slice(&[0x75, (MERGED_FALLBACK_AT - 7) as u8]);
    code[7..9].copy_from_slice(&[0xff, 0x15]);
    code[9..13].copy_from_slice(&rel32(call + 6, slot));
    // lea CONTINUE(%rip), %r11
    code[13..16].copy_from_slice(&[0x4c, 0x8d, 0x1d]);
    code[16..20].copy_from_slice(&rel32(at + 20, at + MERGED_CONTINUE_AT));
    code[20..25].copy_from_slice(&call_or_jmp(0xe9, at + 20, stubs[LIB_EXIT_STUB]));
    code[25..29].copy_from_slice(&[0xf3, 0x0f, 0x1e, 0xfa]);
    code[29..34].copy_from_slice(&call_or_jmp(0xe8, at + 29, stubs[1]));
    code[34] = 0xc3;
    code[36..38].copy_from_slice(&[0xff, 0x25]);
    code[38..42].copy_from_slice(&rel32(fallback + 6, slot));
    // SAFETY: [at, at + LIB_THUNK) lies in the writable area mapped for
    // the module's thunks.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), at as *mut u8, code.len()) };
    Some(off)
}

/// What the entry site of the thunk for `name` calls when traced, and
/// whether the thunk is a merged one: `spec`, the function's spec stub
/// when its entry takes one, else the entry trampoline (a leaf thunk, or
/// the ring format) or `ftail_lib_entry_c`.
pub fn entry_target(
    name: &str,
    spec: Option<u64>,
    stubs: &[u64; NEAR],
    t: &Trampolines,
) -> (u64, bool) {
    match spec {
        Some(at) => (at, false),
        None if is_leaf(name) || t.lib_entry == 0 => (stubs[0], false),
        None => (stubs[LIB_ENTRY_STUB], true),
    }
}

/// A library thunk as written.
pub struct Thunk {
    /// Its entry site's untraced form.
    pub off: [u8; 5],
    /// Where a thread that traps on its entry site's `int3` goes on.
    pub resume: u64,
    /// Its parts, for its unwind information.
    pub layout: ThunkLayout,
}

/// Writes the thunk for calls of `name` through `slot` at `at`: a leaf
/// thunk for a function that returns twice, else a merged library thunk
/// when `merged` (its entry site calls `ftail_lib_entry_c`, see
/// [`entry_target`]) or a library thunk; `None` when the slot is out of
/// reach.
pub fn write_thunk(
    at: u64,
    slot: u64,
    name: &str,
    merged: bool,
    stubs: &[u64; NEAR],
) -> Option<Thunk> {
    if is_leaf(name) {
        // The caller's return address stays where it is: the plain
        // unwind rule throughout.
        return Some(Thunk {
            off: write_leaf_thunk(at, slot, stubs)?,
            resume: at + LEAF_FALLBACK_AT,
            layout: ThunkLayout {
                start: at,
                call: LEAF_LEN,
                fallback: LEAF_LEN,
                len: LEAF_LEN,
            },
        });
    }
    if merged {
        return Some(Thunk {
            off: write_merged_thunk(at, slot, stubs)?,
            resume: at + MERGED_FALLBACK_AT,
            layout: ThunkLayout {
                start: at,
                call: MERGED_CALL_AT,
                fallback: MERGED_CONTINUE_AT,
                len: LIB_THUNK,
            },
        });
    }
    Some(Thunk {
        off: write_lib_thunk(at, slot, stubs)?,
        resume: at + LIB_FALLBACK_AT,
        layout: ThunkLayout {
            start: at,
            call: LIB_CALL_AT,
            fallback: LIB_CONTINUE_AT,
            len: LIB_THUNK,
        },
    })
}

/// Writes a leaf thunk for `slot` at `at` (see the module's text), its
/// entry site holding its untraced form (`jmp` to the jump through the
/// slot); returns that form, or `None` when the slot is out of reach.
fn write_leaf_thunk(at: u64, slot: u64, stubs: &[u64; NEAR]) -> Option<[u8; 5]> {
    let fallback = at + LEAF_FALLBACK_AT;
    if !fits_rel32(fallback + 6, slot) {
        return None;
    }
    let mut code = [0xccu8; LEAF_LEN as usize];
    let off = call_or_jmp(0xe9, at, fallback);
    code[..5].copy_from_slice(&off);
    code[5..10].copy_from_slice(&call_or_jmp(0xe8, at + 5, stubs[1]));
    code[10..12].copy_from_slice(&[0xff, 0x25]);
    code[12..16].copy_from_slice(&rel32(fallback + 6, slot));
    // SAFETY: [at, at + LEAF_LEN) lies in the writable area mapped for
    // the module's thunks (a library thunk's room, LIB_THUNK bytes).
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), at as *mut u8, code.len()) };
    Some(off)
}

/// Writes a call site's resume stub at `at`: the original call (to the
/// PLT stub, or through the slot), then a jump back after the site.
pub fn write_resume(at: u64, c: &CallOut) -> bool {
    let mut code = [0xccu8; RESUME as usize];
    match c.direct {
        Some(target) => {
            if !fits_rel32(at + 5, target) {
                return false;
            }
            code[..5].copy_from_slice(&call_or_jmp(0xe8, at, target));
        }
        None => {
            let Callee::Slot(slot) = c.callee else {
                return false;
            };
            if !fits_rel32(at + 6, slot) {
                return false;
            }
            code[..2].copy_from_slice(&[0xff, 0x15]);
            code[2..6].copy_from_slice(&rel32(at + 6, slot));
        }
    }
    let back = at + if c.direct.is_some() { 5 } else { 6 };
    if !fits_rel32(back + 5, c.insn + c.len) {
        return false;
    }
    code[back as usize - at as usize..][..5].copy_from_slice(&call_or_jmp(
        0xe9,
        back,
        c.insn + c.len,
    ));
    // SAFETY: [at, at + RESUME) lies in the writable area mapped for the
    // module's stubs.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), at as *mut u8, code.len()) };
    true
}

/// The traced form of a call site calling the thunk at `thunk`: `call
/// thunk` (after the `addr32` prefix of a relaxed call), or for `call
/// *disp(%rip)` the displacement of `pointer`, a word holding the thunk's
/// address (bytes 1–5 of the instruction).
pub fn call_on(c: &CallOut, thunk: u64, pointer: u64) -> Option<[u8; 5]> {
    if c.direct.is_some() {
        let at = c.insn + c.len - 5;
        return fits_rel32(at + 5, thunk).then(|| call_or_jmp(0xe8, at, thunk));
    }
    if !fits_rel32(c.insn + 6, pointer) {
        return None;
    }
    let r = rel32(c.insn + 6, pointer);
    Some([0x15, r[0], r[1], r[2], r[3]])
}

//! Argument and return values (`ftail record -A/-R/-a`).
//!
//! `ftail record` writes the spec rules (`ftail_abi::argspec`) into the
//! trace directory and sets `FTAIL_ARGSPEC=1` (in the environment, or in
//! the configuration file of an attach); [`init`] reads them once.
//! When a module is planned (`plan`), each function whose name a rule
//! matches gets a *spec stub* in the module's stub area: `call
//! ftail_entry_spec; ret` followed by its [`FnSpec`], and its entry site
//! calls that stub instead of the entry trampoline. So the spec is found
//! from the return address, with no lookup, allocation or lock, and
//! functions without a spec keep today's sites and trampolines: they pay
//! nothing.
//!
//! The spec's entry path is always the slow path (every register saved):
//! [`ftail_slow_entry_spec`] writes the arguments as a payload right
//! before the entry record, and when the return value is wanted flags the
//! frame's trace-stack word with [`RETVAL`] and the value's type. Every
//! exit or tail exit of a flagged frame leaves the fast paths (the compact
//! exit tests that bit with the ones it already tests; a tail chain's
//! loop checks it only for marked frames), and the slow paths capture rax
//! and xmm0 from the trampoline's frame ([`capture_ret`]) before closing
//! frames: `frames::pop` writes the value right before the first close of
//! a flagged frame, once per chain ([`write_ret`]).
//!
//! Memory that a value points at (strings) is read with `process_vm_readv`
//! on this process, which fails with `EFAULT` instead of faulting on an
//! unmapped or protected address, and copies at most the spec's bound.
//! Payloads are written only by threads that keep every event (compact
//! format); rings (`--ring`) record the calls without values.

use std::sync::OnceLock;

use ftail_abi::argspec::{class, ArgSpec, FnSpec, Ty, LOC_INT, LOC_XMM, SPEC_FILE};
use ftail_abi::trace::{EventKind, ADDR_MASK};

use crate::record::frames::push;
use crate::record::hooks::{compact_slow, on_full, pop_tail_callers, ready};
use crate::record::stacks::{self, Rule};
use crate::record::state::{ThreadState, BASE, RETVAL, RET_TY_SHIFT};
use crate::record::triggers::{self, ACTION_BYTES};
use crate::record::values::{capture_ret, write_args, Regs};
use crate::record::write::{give_up_room, rdtsc, KeepErrno};
use ftail_abi::trigger::Actions;

/// The rules, in the order given (every rule that matches a function
/// adds to its spec: `FnSpec::merge`).
static RULES: OnceLock<Vec<(String, FnSpec)>> = OnceLock::new();

/// Bytes of a spec stub: `call` (5), `ret`, two `int3`, the spec, then
/// what the trampoline's inline path needs ([`FAST_DATA`]), then the
/// function's triggers (`triggers.rs`).
pub const SPEC_STUB: u64 =
    8 + std::mem::size_of::<FnSpec>() as u64 + FAST_DATA + ACTION_BYTES as u64;
const _: () = assert!(SPEC_STUB == 96);
/// Where a spec stub holds the function's triggers.
const ACTIONS_AT: usize = 80;

/// Bytes after the spec for `ftail_entry_spec`'s inline path: a flag
/// byte ([`FAST_ARGS`]), then per argument the offset from `rsp` of where
/// that path has put its register (see [`fast_offset`]).
const FAST_DATA: u64 = 16;

/// Flag: every argument is an integer, pointer, float, `bool` or `char`
/// in a register, so `ftail_entry_spec` writes them inline (strings,
/// enums, stack and optimised-out arguments take the slow path).
pub const FAST_ARGS: u8 = 1;

/// Classes whose value is the register's 8 bytes as they are: written by
/// the trampolines inline (a bit per class, for `bt`).
pub const INLINE_CLASSES: u32 = 1 << class::SIGNED
    | 1 << class::AUTO
    | 1 << class::UNSIGNED
    | 1 << class::HEX
    | 1 << class::POINTER
    | 1 << class::FLOAT
    | 1 << class::BOOL
    | 1 << class::CHAR;

/// Where `ftail_entry_spec`'s inline path finds an argument: it pushes
/// rsi, rdi, r8 and r9 after FTAIL_PUSH4's rax, rcx, rdx and r11, then
/// stores the low 8 bytes of xmm0–xmm7 below them, so `rsp + offset`
/// holds: xmm n at 8 n, then r9, r8, rdi, rsi, r11, rdx, rcx, rax.
fn fast_offset(a: &ArgSpec) -> Option<u8> {
    if INLINE_CLASSES & (1 << (a.ty.class() & 31)) == 0 {
        return None;
    }
    match a.loc {
        l if (LOC_XMM..LOC_XMM + 8).contains(&l) => Some(8 * (l - LOC_XMM)),
        l if l < LOC_XMM => [80, 88, 104, 112, 72, 64]
            .get(usize::from(l - LOC_INT))
            .copied(),
        _ => None,
    }
}

/// Reads the rules, when `ftail record` asked for values (`asked`): the
/// spec file of the trace directory `dir`.
pub fn init(dir: &std::ffi::CStr, asked: bool) {
    if !asked {
        return;
    }
    use std::os::unix::ffi::OsStrExt;
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(dir.to_bytes())).join(SPEC_FILE);
    let rules = std::fs::read_to_string(path)
        .map(|text| {
            text.lines()
                .filter_map(FnSpec::parse_line)
                .map(|(g, s)| (g.to_string(), s))
                .collect()
        })
        .unwrap_or_default();
    let _ = RULES.set(rules);
}

/// The spec of the function `name`: every rule that matches it, merged
/// in order; `None` when none asks for anything.
pub fn spec_for(name: &str) -> Option<FnSpec> {
    let rules = RULES.get()?;
    let mut spec = FnSpec::default();
    for (glob, s) in rules {
        if crate::process::config::glob(glob, name) {
            spec.merge(s);
        }
    }
    (spec.nargs > 0 || spec.has_ret != 0).then_some(spec)
}

/// What the spec stub of the function `name` holds: its spec and its
/// triggers; `None` when it needs no spec stub.
pub fn stub_for(name: &str) -> Option<(FnSpec, Actions)> {
    let spec = spec_for(name);
    let actions = triggers::actions_for(name);
    (spec.is_some() || actions.is_some())
        .then(|| (spec.unwrap_or_default(), actions.unwrap_or_default()))
}

/// The spec stub's bytes: `call` to `entry_spec` (a near stub of the
/// module, within rel32 reach of `at`), `ret`, padding, the spec, the
/// inline path's data, the triggers. A function with triggers always
/// takes the slow path.
pub fn spec_stub(
    at: u64,
    entry_spec: u64,
    spec: &FnSpec,
    actions: &Actions,
) -> [u8; SPEC_STUB as usize] {
    let mut code = [0xccu8; SPEC_STUB as usize];
    let rel = (entry_spec.wrapping_sub(at + 5) as i32).to_le_bytes();
    code[0] = 0xe8;
    code[1..5].copy_from_slice(&rel);
    code[5] = 0xc3;
    let s = spec_bytes(spec);
    code[8..64].copy_from_slice(&s);
    code[64..].fill(0);
    let offsets: Option<Vec<u8>> = spec.args().iter().map(fast_offset).collect();
    if let Some(offsets) = offsets.filter(|_| actions.is_empty()) {
        code[64] = FAST_ARGS;
        code[65..65 + offsets.len()].copy_from_slice(&offsets);
    }
    code[ACTIONS_AT..].copy_from_slice(&triggers::to_bytes(actions));
    code
}

fn spec_bytes(spec: &FnSpec) -> [u8; 56] {
    let mut out = [0u8; 56];
    out[0] = spec.nargs;
    out[1] = spec.has_ret;
    let put = |out: &mut [u8; 56], i: usize, a: &ArgSpec| {
        out[i] = a.ty.0;
        out[i + 1] = a.loc;
        out[i + 2..i + 4].copy_from_slice(&a.aux.to_le_bytes());
    };
    put(&mut out, 4, &spec.ret);
    for (i, a) in spec.args.iter().enumerate() {
        put(&mut out, 8 + 4 * i, a);
    }
    out
}

fn spec_from_bytes(b: &[u8; 56]) -> FnSpec {
    let get = |i: usize| ArgSpec {
        ty: Ty(b[i]),
        loc: b[i + 1],
        aux: u16::from_le_bytes([b[i + 2], b[i + 3]]),
    };
    let mut spec = FnSpec {
        nargs: b[0].min(ftail_abi::argspec::MAX_ARGS as u8),
        has_ret: b[1],
        pad: 0,
        ret: get(4),
        ..FnSpec::default()
    };
    for (i, a) in spec.args.iter_mut().enumerate() {
        *a = get(8 + 4 * i);
    }
    spec
}

/// Slow path of `ftail_entry_spec`: `frame` is `rbp + 96` of
/// `FTAIL_SLOW`'s frame, where the trampoline's pushes put the spec
/// stub's return address below the site's, so the function's CFA is
/// `frame + 8`, the entry address at `frame - 8`, the saved argument
/// registers below; `stub` is the spec stub's address + 5; `area` the
/// saved SSE state.
///
/// # Safety
///
/// Called only from `ftail_entry_spec` with its frame, on the calling
/// thread's state.
pub unsafe extern "C" fn ftail_slow_entry_spec(
    st: *mut ThreadState,
    frame: u64,
    stub: u64,
    _rcx: u64,
    _kind: u64,
    area: u64,
) {
    let _errno = KeepErrno::save();
    // SAFETY: the trampoline passes this thread's state.
    let st = unsafe { &mut *st };
    if !ready(st) {
        return;
    }
    // SAFETY: the trampoline's frame (see above); the spec follows the
    // stub's `call` and `ret` in the module's stub area, written when
    // the module was planned and kept while its sites may call it.
    let (cfa, addr, spec, actions) = unsafe {
        let spec = std::ptr::read_unaligned((stub + 3) as *const [u8; 56]);
        let actions =
            std::ptr::read_unaligned((stub - 5 + ACTIONS_AT as u64) as *const [u8; ACTION_BYTES]);
        (
            frame + 8,
            std::ptr::read((frame - 8) as *const u64),
            spec_from_bytes(&spec),
            triggers::from_bytes(&actions),
        )
    };
    let now = rdtsc();
    let base = std::mem::take(&mut st.fresh_base);
    stacks::sync(st, cfa, now, Rule::Entering);
    let mut word = (addr & ADDR_MASK) | if cfa == base { BASE } else { 0 };
    if !actions.is_empty() {
        word |= triggers::on_entry(st, cfa, addr, now, &actions);
    }
    if st.compact != 0 {
        if spec.has_ret != 0 {
            word |= RETVAL | (u64::from(spec.ret.ty.0) << RET_TY_SHIFT);
        }
        if spec.nargs > 0 && st.depth < st.stack_cap && st.depth < st.max_depth {
            let regs = Regs { frame, area, cfa };
            write_args(st, &spec, &regs);
        }
    }
    push(st, cfa, word, EventKind::Entry, now);
    if !actions.is_empty() {
        triggers::after_entry(st, addr, now, &actions);
    }
}

/// Slow path of a tail chain's loop (`FTAIL_TAIL_CALLERS_C`) that met a
/// marked frame whose return value is recorded: closes the rest of the
/// chain ending at `cfa` with the value (rax saved at `frame - 24`, where
/// both trampolines that run the loop keep it).
///
/// # Safety
///
/// Called only from the loop, with `FTAIL_SLOW`'s frame and area.
pub unsafe extern "C" fn ftail_slow_ret_callers(
    st: *mut ThreadState,
    frame: u64,
    _site: u64,
    cfa: u64,
    _kind: u64,
    area: u64,
) {
    let _errno = KeepErrno::save();
    // SAFETY: the trampoline passes this thread's state.
    let st = unsafe { &mut *st };
    // SAFETY: the trampoline's frame and area (see above).
    unsafe { capture_ret(st, frame - 24, area) };
    pop_tail_callers(st, cfa, rdtsc());
    st.ret_state = 0;
}

/// The entry record of `ftail_entry_spec`'s inline path could not be
/// written inline (its time does not fit the base, or a signal handler
/// moved the base): as `ftail_slow_compact`, with the function's address
/// read from the frame (the site's return address is at `frame - 8`).
///
/// # Safety
///
/// Called only from `ftail_entry_spec` with `FTAIL_SLOW`'s frame.
pub unsafe extern "C" fn ftail_slow_compact_spec(
    st: *mut ThreadState,
    frame: u64,
    _stub: u64,
    slot: u64,
    kind: u64,
) {
    let _errno = KeepErrno::save();
    // SAFETY: the trampoline passes this thread's state and its frame.
    let (st, addr) = unsafe { (&mut *st, std::ptr::read((frame - 8) as *const u64)) };
    compact_slow(st, addr, slot, kind);
}

/// The entry record's slot of `ftail_entry_spec`'s inline path lies past
/// the mapped part of the buffer (`ftail_slow_full_entry` for it).
///
/// # Safety
///
/// As for [`ftail_slow_compact_spec`].
pub unsafe extern "C" fn ftail_slow_full_entry_spec(
    st: *mut ThreadState,
    frame: u64,
    _stub: u64,
    slot: u64,
) {
    let _errno = KeepErrno::save();
    // SAFETY: as above.
    let (st, addr) = unsafe { (&mut *st, std::ptr::read((frame - 8) as *const u64)) };
    on_full(st, EventKind::Entry, addr, slot);
}

/// The arguments' slot of `ftail_entry_spec`'s inline path lies past the
/// mapped part of the buffer: gives it up and writes the arguments here
/// (mapping more of the buffer), before the trampoline writes the entry.
///
/// # Safety
///
/// As for [`ftail_slow_compact_spec`]; `stub` is the spec stub's address
/// + 5, `area` the saved SSE state.
pub unsafe extern "C" fn ftail_slow_args_room(
    st: *mut ThreadState,
    frame: u64,
    stub: u64,
    slot: u64,
    _kind: u64,
    area: u64,
) {
    let _errno = KeepErrno::save();
    // SAFETY: the trampoline's state, frame and spec stub (see
    // ftail_slow_entry_spec).
    let (st, spec) = unsafe {
        let spec = std::ptr::read_unaligned((stub + 3) as *const [u8; 56]);
        (&mut *st, spec_from_bytes(&spec))
    };
    give_up_room(st, slot, 4 + 12 * u64::from(spec.nargs));
    let regs = Regs {
        frame,
        area,
        cfa: frame + 8,
    };
    write_args(st, &spec, &regs);
}

/// A return value's 16-byte slot of `ftail_exit_c`'s inline path lies
/// past the mapped part of the buffer: gives it up (the exit then takes
/// the slow path, which writes the value).
///
/// # Safety
///
/// As for [`crate::record::hooks::ftail_slow_exit`]; `slot` is the slot.
pub unsafe extern "C" fn ftail_slow_give_up(
    st: *mut ThreadState,
    _cfa: u64,
    _site: u64,
    slot: u64,
    size: u64,
) {
    let _errno = KeepErrno::save();
    // SAFETY: the trampoline passes this thread's state.
    give_up_room(unsafe { &mut *st }, slot, size);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftail_abi::argspec::{class, LOC_STACK, LOC_XMM};

    #[test]
    fn specs_survive_their_stub() {
        let mut spec = FnSpec {
            has_ret: 1,
            ret: ArgSpec {
                ty: Ty::new(class::FLOAT, 8),
                loc: LOC_XMM,
                aux: 0,
            },
            ..FnSpec::default()
        };
        spec.push(ArgSpec {
            ty: Ty::new(class::STRING, 8),
            loc: 1,
            aux: 300,
        });
        spec.push(ArgSpec {
            ty: Ty::new(class::SIGNED, 4),
            loc: LOC_STACK + 2,
            aux: 0,
        });
        let code = spec_stub(0x1000, 0x2000, &spec, &Actions::default());
        assert_eq!(code[0], 0xe8);
        assert_eq!(
            i32::from_le_bytes(code[1..5].try_into().unwrap()),
            0x2000 - 0x1005
        );
        assert_eq!(code[5], 0xc3);
        let back = spec_from_bytes(code[8..64].try_into().unwrap());
        assert_eq!(back, spec);
        // A string and a stack argument: the slow path reads them.
        assert_eq!(code[64], 0);
    }

    #[test]
    fn register_arguments_get_the_inline_path_and_their_offsets() {
        let mut spec = FnSpec::default();
        for (ty, loc) in [
            (Ty::new(class::SIGNED, 4), LOC_INT),
            (Ty::new(class::FLOAT, 8), LOC_XMM + 1),
            (Ty::new(class::POINTER, 8), LOC_INT + 5),
        ] {
            spec.push(ArgSpec { ty, loc, aux: 0 });
        }
        let code = spec_stub(0x1000, 0x2000, &spec, &Actions::default());
        assert_eq!(code[64], FAST_ARGS);
        // rdi, xmm1 and r9 where ftail_entry_spec puts them.
        assert_eq!(&code[65..68], &[80, 8, 64]);
        spec.push(ArgSpec {
            ty: Ty::new(class::ENUM, 4),
            loc: LOC_INT + 1,
            aux: 3,
        });
        assert_eq!(spec_stub(0x1000, 0x2000, &spec, &Actions::default())[64], 0);
        let trig = ftail_abi::trigger::parse_actions("depth=2").unwrap();
        assert_eq!(spec_stub(0x1000, 0x2000, &spec, &trig)[64], 0);
    }
}

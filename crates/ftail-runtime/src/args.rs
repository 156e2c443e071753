//! Argument and return values (`ftail record -A/-R/-a`).
//!
//! `ftail record` writes the spec rules (`ftail_abi::argspec`) into the
//! trace directory and sets `FTAIL_ARGSPEC=1`; [`init`] reads them once.
//! When a module is planned (`patch.rs`), each function whose name a rule
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
//! frames: `hooks::pop` writes the value right before the first close of
//! a flagged frame, once per chain ([`write_ret`]).
//!
//! Memory that a value points at (strings) is read with `process_vm_readv`
//! on this process, which fails with `EFAULT` instead of faulting on an
//! unmapped or protected address, and copies at most the spec's bound.
//! Payloads are written only by threads that keep every event (compact
//! format); rings (`--ring`) record the calls without values.

use std::sync::OnceLock;

use ftail_abi::argspec::{
    class, value, ArgSpec, FnSpec, Ty, LOC_INT, LOC_NONE, LOC_STACK, LOC_XMM, MAX_STRING, SPEC_FILE,
};
use ftail_abi::trace::{compact, EventKind, ADDR_MASK};

use crate::hooks::{self, rdtsc, KeepErrno};
use crate::stacks::{self, Rule};
use crate::state::{ThreadState, BASE, RETVAL, RET_TY_SHIFT};

/// The rules, in the order given (the first that matches a function
/// gives its arguments, the first with a return value its return value).
static RULES: OnceLock<Vec<(String, FnSpec)>> = OnceLock::new();

/// Bytes of a spec stub: `call` (5), `ret`, two `int3`, the spec.
pub const SPEC_STUB: u64 = 8 + std::mem::size_of::<FnSpec>() as u64;
const _: () = assert!(SPEC_STUB == 64);

/// Reads the rules, when `ftail record` asked for values: the spec file
/// of the trace directory `dir`.
pub fn init(dir: &std::ffi::CStr) {
    if std::env::var_os("FTAIL_ARGSPEC").is_none_or(|v| v != "1") {
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

/// The spec of the function `name`, if a rule matches it.
pub fn spec_for(name: &str) -> Option<FnSpec> {
    let rules = RULES.get()?;
    let mut spec = FnSpec::default();
    let mut found = false;
    for (glob, s) in rules {
        if !crate::config::glob(glob, name) {
            continue;
        }
        if spec.nargs == 0 && s.nargs > 0 {
            spec.nargs = s.nargs;
            spec.args = s.args;
            found = true;
        }
        if spec.has_ret == 0 && s.has_ret != 0 {
            spec.has_ret = 1;
            spec.ret = s.ret;
            found = true;
        }
    }
    found.then_some(spec)
}

/// The spec stub's bytes: `call` to `entry_spec` (a near stub of the
/// module, within rel32 reach of `at`), `ret`, padding, the spec.
pub fn spec_stub(at: u64, entry_spec: u64, spec: &FnSpec) -> [u8; SPEC_STUB as usize] {
    let mut code = [0xccu8; SPEC_STUB as usize];
    let rel = (entry_spec.wrapping_sub(at + 5) as i32).to_le_bytes();
    code[0] = 0xe8;
    code[1..5].copy_from_slice(&rel);
    code[5] = 0xc3;
    let s = spec_bytes(spec);
    code[8..].copy_from_slice(&s);
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
    if !hooks::ready(st) {
        return;
    }
    // SAFETY: the trampoline's frame (see above); the spec follows the
    // stub's `call` and `ret` in the module's stub area, written when
    // the module was planned and kept while its sites may call it.
    let (cfa, addr, spec) = unsafe {
        let spec = std::ptr::read_unaligned((stub + 3) as *const [u8; 56]);
        (
            frame + 8,
            std::ptr::read((frame - 8) as *const u64),
            spec_from_bytes(&spec),
        )
    };
    let now = rdtsc();
    let base = std::mem::take(&mut st.fresh_base);
    stacks::sync(st, cfa, now, Rule::Entering);
    let mut word = (addr & ADDR_MASK) | if cfa == base { BASE } else { 0 };
    if st.compact != 0 {
        if spec.has_ret != 0 {
            word |= RETVAL | (u64::from(spec.ret.ty.0) << RET_TY_SHIFT);
        }
        let max = crate::state::FTAIL_MAX_DEPTH.load(std::sync::atomic::Ordering::Relaxed);
        if spec.nargs > 0 && st.depth < st.stack_cap && st.depth < max {
            let regs = Regs { frame, area, cfa };
            write_args(st, &spec, &regs);
        }
    }
    hooks::push(st, cfa, word, EventKind::Entry, now);
}

/// Where the arguments were saved by `ftail_entry_spec`.
struct Regs {
    frame: u64,
    area: u64,
    cfa: u64,
}

impl Regs {
    /// The integer argument register `n` (rdi, rsi, rdx, rcx, r8, r9),
    /// from `FTAIL_PUSH4` and `FTAIL_SLOW`'s pushes (`rbp + 96` is
    /// `frame`).
    fn int(&self, n: u8) -> u64 {
        let from_rbp = match n {
            0 => 32,
            1 => 40,
            2 => 56,
            3 => 64,
            4 => 24,
            _ => 16,
        };
        // SAFETY: a saved register in the trampoline's frame.
        unsafe { std::ptr::read((self.frame - 96 + from_rbp) as *const u64) }
    }

    /// The low 8 bytes of `xmm{n}` in the saved FXSAVE/XSAVE area.
    fn xmm(&self, n: u8) -> u64 {
        xmm(self.area, n)
    }
}

/// The low 8 bytes of `xmm{n}` in the FXSAVE/XSAVE area at `area` (its
/// legacy region puts xmm0 at byte 160, 16 bytes each).
fn xmm(area: u64, n: u8) -> u64 {
    // SAFETY: the slow path's saved state, 64-byte aligned.
    unsafe { std::ptr::read((area + 160 + 16 * u64::from(n & 15)) as *const u64) }
}

/// A payload being built, on the stack: at most 255 words.
struct Payload {
    words: [u32; 255],
    len: usize,
    count: u32,
}

impl Payload {
    fn new() -> Payload {
        Payload {
            words: [0; 255],
            len: 1,
            count: 0,
        }
    }

    /// Adds a value; false when it does not fit.
    fn push(&mut self, ty: Ty, flags: u8, data: &[u8]) -> bool {
        let n = value::words(data.len());
        if self.len + n > self.words.len() {
            return false;
        }
        self.words[self.len] = value::desc(ty.0, flags, data.len() as u16);
        for (i, chunk) in data.chunks(4).enumerate() {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            self.words[self.len + 1 + i] = u32::from_le_bytes(w);
        }
        self.len += n;
        self.count += 1;
        true
    }

    /// Adds the value `raw` of type `ty`: a string (read from memory
    /// that may be unmapped), an enum with its number, else the raw bits.
    fn push_value(&mut self, a: &ArgSpec, raw: u64) -> bool {
        match a.ty.class() {
            class::STRING => {
                if raw == 0 {
                    return self.push(a.ty, value::NULL, &[]);
                }
                let bound = if a.aux == 0 {
                    MAX_STRING
                } else {
                    a.aux.min(512)
                };
                let mut buf = [0u8; 513];
                let want = usize::from(bound) + 1;
                let got = read_memory(raw, &mut buf[..want]);
                if got == 0 {
                    return self.push(a.ty, value::BAD_POINTER, &raw.to_le_bytes());
                }
                match buf[..got].iter().position(|&b| b == 0) {
                    Some(n) => self.push(a.ty, 0, &buf[..n]),
                    None => self.push(a.ty, value::TRUNCATED, &buf[..got.min(usize::from(bound))]),
                }
            }
            class::ENUM => {
                let mut data = [0u8; 12];
                data[..8].copy_from_slice(&raw.to_le_bytes());
                data[8..].copy_from_slice(&u32::from(a.aux).to_le_bytes());
                self.push(a.ty, 0, &data)
            }
            _ => self.push(a.ty, 0, &raw.to_le_bytes()),
        }
    }

    /// Writes the payload as a record of subtype `sub` (its head last).
    fn write(&mut self, st: &mut ThreadState, sub: u32) {
        let size = self.len as u64 * 4;
        let Some(slot) = hooks::reserve(st, size, EventKind::Entry) else {
            return;
        };
        // SAFETY: [slot, slot + size) was reserved in this thread's
        // mapping, below `end`; the head is written last, so a reader that
        // sees it sees the whole record.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.words[1..self.len].as_ptr() as *const u8,
                (slot + 4) as *mut u8,
                (self.len - 1) * 4,
            );
            std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
            std::ptr::write_volatile(
                slot as *mut u32,
                compact::ext_head(sub, self.len as u32, self.count),
            );
        }
    }
}

fn write_args(st: &mut ThreadState, spec: &FnSpec, regs: &Regs) {
    let mut p = Payload::new();
    for a in spec.args() {
        let ok = match a.loc {
            LOC_NONE => p.push(a.ty, value::OPTIMISED_OUT, &[]),
            l if l >= LOC_STACK => {
                let at = regs.cfa + 8 * u64::from(l - LOC_STACK);
                let mut b = [0u8; 8];
                if read_memory(at, &mut b) == 8 {
                    p.push_value(a, u64::from_le_bytes(b))
                } else {
                    p.push(a.ty, value::OPTIMISED_OUT, &[])
                }
            }
            l if l >= LOC_XMM => p.push_value(a, regs.xmm(l - LOC_XMM)),
            l => p.push_value(a, regs.int(l - LOC_INT)),
        };
        if !ok {
            break;
        }
    }
    p.write(st, compact::SUB_ARGS);
}

/// Copies up to `out.len()` bytes from `addr` of this process, never
/// faulting: `process_vm_readv` fails with `EFAULT` where the memory is
/// not readable. The copy is split at the page boundary so that a string
/// that ends before an unmapped page still reads. Returns the bytes read.
fn read_memory(addr: u64, out: &mut [u8]) -> usize {
    let first = ((addr | 4095) + 1 - addr).min(out.len() as u64) as usize;
    let local = [libc::iovec {
        iov_base: out.as_mut_ptr() as *mut libc::c_void,
        iov_len: out.len(),
    }];
    let remote = [
        libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: first,
        },
        libc::iovec {
            iov_base: (addr + first as u64) as *mut libc::c_void,
            iov_len: out.len() - first,
        },
    ];
    let parts = if first == out.len() { 1 } else { 2 };
    // SAFETY: the local buffer is ours and as long as the remote ranges
    // together; the kernel checks the remote addresses and fails (or
    // stops at the first one it cannot read) instead of faulting.
    let n = unsafe {
        libc::process_vm_readv(libc::getpid(), local.as_ptr(), 1, remote.as_ptr(), parts, 0)
    };
    n.max(0) as usize
}

/// Notes the return value a slow path closes frames with: rax as saved at
/// `rax_at` in the trampoline's frame, xmm0 from the saved area.
///
/// # Safety
///
/// `rax_at` is the trampoline frame's saved rax, `area` its saved
/// FXSAVE/XSAVE state (when the thread writes compact records).
pub unsafe fn capture_ret(st: &mut ThreadState, rax_at: u64, area: u64) {
    if st.compact == 0 {
        return;
    }
    // SAFETY: the caller's frame (see above).
    st.ret_rax = unsafe { std::ptr::read(rax_at as *const u64) };
    st.ret_xmm0 = xmm(area, 0);
    st.ret_state = 1;
}

/// Called by `hooks::pop` before a flagged frame's close (`word` is its
/// trace-stack word): writes the captured return value, once per chain.
pub fn write_ret(st: &mut ThreadState, word: u64) {
    if st.ret_state != 1 || st.compact == 0 {
        return;
    }
    st.ret_state = 2;
    let ty = Ty((word >> RET_TY_SHIFT) as u8);
    let a = ArgSpec { ty, loc: 0, aux: 0 };
    let raw = if ty.class() == class::FLOAT {
        st.ret_xmm0
    } else {
        st.ret_rax
    };
    let mut p = Payload::new();
    p.push_value(&a, raw);
    p.write(st, compact::SUB_RETVAL);
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
    hooks::pop_tail_callers(st, cfa, rdtsc());
    st.ret_state = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let code = spec_stub(0x1000, 0x2000, &spec);
        assert_eq!(code[0], 0xe8);
        assert_eq!(
            i32::from_le_bytes(code[1..5].try_into().unwrap()),
            0x2000 - 0x1005
        );
        assert_eq!(code[5], 0xc3);
        let back = spec_from_bytes(code[8..].try_into().unwrap());
        assert_eq!(back, spec);
    }

    #[test]
    fn reading_memory_never_faults() {
        let s = b"hello\0world";
        let mut out = [0u8; 11];
        assert_eq!(read_memory(s.as_ptr() as u64, &mut out), 11);
        assert_eq!(&out, s);
        // An address nothing maps, and a read that runs into an unmapped
        // page: the first part only.
        assert_eq!(read_memory(8, &mut out), 0);
        // SAFETY: a fresh anonymous mapping of two pages, the second
        // unmapped again.
        let page = unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            libc::munmap((p as u64 + 4096) as *mut libc::c_void, 4096);
            p as u64
        };
        let mut out = [1u8; 64];
        assert_eq!(read_memory(page + 4096 - 10, &mut out), 10);
        assert_eq!(read_memory(page + 4096, &mut out), 0);
    }

    #[test]
    fn strings_are_bounded_and_bad_pointers_named() {
        let mut p = Payload::new();
        let a = |aux| ArgSpec {
            ty: Ty::new(class::STRING, 8),
            loc: 0,
            aux,
        };
        let long = b"abcdefghij\0";
        assert!(p.push_value(&a(4), long.as_ptr() as u64));
        assert!(p.push_value(&a(0), long.as_ptr() as u64));
        assert!(p.push_value(&a(0), 16));
        assert!(p.push_value(&a(0), 0));
        let (_, flags, len) = value::parse_desc(p.words[1]);
        assert_eq!((flags, len), (value::TRUNCATED, 4));
        let (_, flags, len) = value::parse_desc(p.words[3]);
        assert_eq!((flags, len), (0, 10));
        let (_, flags, len) = value::parse_desc(p.words[7]);
        assert_eq!((flags, len), (value::BAD_POINTER, 8));
        let (_, flags, len) = value::parse_desc(p.words[10]);
        assert_eq!((flags, len), (value::NULL, 0));
        assert_eq!(p.count, 4);
    }
}

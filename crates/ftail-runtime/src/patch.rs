//! Writing the sites: `call rel32` to a trampoline (through a near stub
//! when the trampoline is out of rel32 range), or, for tail sites in
//! `convert` mode, `jmp rel32` to a per-site thunk.
//!
//! Patching happens at start-up, before `main` and before any thread of
//! the program exists, so no other thread can be executing the bytes being
//! written. (Live patching while threads run — the int3-first protocol —
//! is not implemented yet.) Each site is checked to still hold the 5-byte
//! nop before it is written: anything else is left alone.

use std::collections::{HashMap, HashSet};

use ftail_abi::{SiteKind, NOP5};

use crate::config::TailMode;
use crate::modules::{func_name, func_sites, got_symbols, Module};

/// Addresses of the trampolines.
#[derive(Clone, Copy)]
pub struct Trampolines {
    /// `ftail_entry`.
    pub entry: u64,
    /// `ftail_exit`.
    pub exit: u64,
    /// `ftail_tail_mark`.
    pub tail_mark: u64,
    /// `ftail_convert_enter`.
    pub convert_enter: u64,
    /// `ftail_convert_leave`.
    pub convert_leave: u64,
}

impl Trampolines {
    fn all(&self) -> [u64; 5] {
        [
            self.entry,
            self.exit,
            self.tail_mark,
            self.convert_enter,
            self.convert_leave,
        ]
    }
}

/// What patching one module did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Patched {
    /// Functions whose sites were written.
    pub functions: u64,
    /// Sites written.
    pub sites: u64,
    /// Sites left alone because they did not hold the nop.
    pub skipped: u64,
    /// Tail sites given a convert thunk.
    pub converted: u64,
}

const PAGE: u64 = 4096;
/// Bytes reserved per convert thunk.
const THUNK: u64 = 48;
/// Bytes per near stub.
const STUB: u64 = 16;

/// Functions that must see their real caller or return twice: a tail call
/// to them is never converted (DESIGN.md).
const MUST_SEE_CALLER: &[&str] = &[
    "setjmp",
    "_setjmp",
    "__setjmp",
    "sigsetjmp",
    "__sigsetjmp",
    "vfork",
    "__vfork",
    "getcontext",
    "dlopen",
    "dlmopen",
    "dlsym",
    "dlvsym",
    "__libc_dlopen_mode",
];

fn fits_rel32(from_end: u64, to: u64) -> bool {
    let d = to.wrapping_sub(from_end) as i64;
    d >= i64::from(i32::MIN) && d <= i64::from(i32::MAX)
}

fn rel32(from_end: u64, to: u64) -> [u8; 4] {
    (to.wrapping_sub(from_end) as i32).to_le_bytes()
}

/// An anonymous RW mapping within rel32 range of `near` (made executable
/// once filled).
fn map_near(near: u64, len: u64) -> Option<u64> {
    for step in 1..128u64 {
        for hint in [near.wrapping_sub(step << 24), near.wrapping_add(step << 24)] {
            let hint = hint & !(PAGE - 1);
            // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing
            // mapping; the new anonymous pages are ours.
            let p = unsafe {
                libc::mmap(
                    hint as *mut libc::c_void,
                    len as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                continue;
            }
            let base = p as u64;
            if fits_rel32(near, base) && fits_rel32(near, base + len) {
                return Some(base);
            }
            // SAFETY: unmapping what we just mapped.
            unsafe { libc::munmap(p, len as usize) };
        }
    }
    None
}

/// The tail jump that follows a tail site, decoded as far as a thunk
/// needs it.
enum TailJump {
    /// `jmp rel32`: its target.
    Direct(u64),
    /// `jmp *operand`: its bytes, where its ModRM byte is, and where its
    /// RIP-relative displacement is (if it has one).
    Indirect {
        bytes: Vec<u8>,
        modrm: usize,
        rip_disp: Option<usize>,
    },
}

/// Decodes the instruction at `at` (the byte after a tail site). Indirect
/// jumps through `rsp` are refused: the thunk moves `rsp`.
fn decode_tail_jump(at: u64) -> Option<TailJump> {
    // SAFETY: a tail site is followed by its jump in the same executable
    // segment; at most 15 bytes are read.
    let b = unsafe { std::slice::from_raw_parts(at as *const u8, 15) };
    if b[0] == 0xe9 {
        let rel = i32::from_le_bytes([b[1], b[2], b[3], b[4]]);
        return Some(TailJump::Direct((at + 5).wrapping_add(rel as i64 as u64)));
    }
    let mut i = 0;
    while matches!(b[i], 0x2e | 0x3e | 0x26 | 0x36 | 0x64 | 0x65 | 0xf2) {
        i += 1;
    }
    let rex = if (0x40..=0x4f).contains(&b[i]) {
        i += 1;
        b[i - 1]
    } else {
        0
    };
    if b[i] != 0xff || (b[i + 1] >> 3) & 7 != 4 {
        return None;
    }
    let modrm = i + 1;
    let (md, rm) = (b[modrm] >> 6, b[modrm] & 7);
    let mut len = modrm + 1;
    let mut rip_disp = None;
    if md == 3 {
        if rm | ((rex & 1) << 3) == 4 {
            return None;
        }
    } else {
        if rm == 4 {
            let sib = b[len];
            len += 1;
            let base = sib & 7 | ((rex & 1) << 3);
            if base == 4 {
                return None;
            }
            if md == 0 && sib & 7 == 5 {
                len += 4;
            }
        } else if md == 0 && rm == 5 {
            rip_disp = Some(len);
            len += 4;
        }
        len += match md {
            1 => 1,
            2 => 4,
            _ => 0,
        };
    }
    Some(TailJump::Indirect {
        bytes: b[..len].to_vec(),
        modrm,
        rip_disp,
    })
}

/// Address a PLT stub jumps through (`jmp *disp(%rip)`), if `at` is one.
fn plt_slot(at: u64) -> Option<u64> {
    // SAFETY: reading the first bytes of a direct tail target inside an
    // executable mapping of the same module (its PLT) or another module.
    let b = unsafe { std::slice::from_raw_parts(at as *const u8, 16) };
    (0..10).find_map(|i| {
        (b[i] == 0xff && b[i + 1] == 0x25).then(|| {
            let disp = i32::from_le_bytes([b[i + 2], b[i + 3], b[i + 4], b[i + 5]]);
            (at + i as u64 + 6).wrapping_add(disp as i64 as u64)
        })
    })
}

/// One planned write.
struct Plan {
    site: u64,
    what: Write,
}

enum Write {
    /// `call` this trampoline index (into [`Trampolines::all`]).
    Call(usize),
    /// `jmp` to a thunk for this jump.
    Thunk(TailJump),
}

/// Patches the selected functions of `m`.
pub fn patch_module(m: &Module, t: Trampolines) -> Patched {
    let cfg = crate::CONFIG.get().expect("configured before patching");
    let mut done = Patched::default();
    let selected: Vec<_> = m
        .funcs
        .iter()
        .copied()
        // SAFETY: records come from this loaded module's notes.
        .filter(|&f| cfg.selects(unsafe { func_name(f) }))
        .collect();
    // SAFETY: as above.
    let traced_starts: HashSet<u64> = selected
        .iter()
        .map(|&f| unsafe { crate::modules::rel(std::ptr::addr_of!((*f).start)) })
        .collect();
    let mode = effective_tail_mode(cfg.tail);
    let got = if mode == TailMode::Mark {
        HashMap::new()
    } else {
        got_symbols(m)
    };
    let mut plans = Vec::new();
    for &f in &selected {
        done.functions += 1;
        // SAFETY: as above.
        for site in unsafe { func_sites(f) } {
            let Some(kind) = SiteKind::from_u8(site.record.kind) else {
                continue;
            };
            if !kind.is_site() {
                continue;
            }
            if !m
                .text
                .iter()
                .any(|s| site.addr >= s.0 && site.addr + 10 <= s.1)
            {
                done.skipped += 1;
                continue;
            }
            // SAFETY: the site lies in an executable segment of the module.
            let current = unsafe { std::slice::from_raw_parts(site.addr as *const u8, 5) };
            if current != NOP5 {
                done.skipped += 1;
                continue;
            }
            let what = match kind {
                SiteKind::Entry => Write::Call(0),
                SiteKind::Exit | SiteKind::ExitThunk => Write::Call(1),
                _ => match tail_plan(mode, site.addr, &traced_starts, &got) {
                    Some(j) => Write::Thunk(j),
                    None => Write::Call(2),
                },
            };
            plans.push(Plan {
                site: site.addr,
                what,
            });
        }
    }
    let thunks = plans
        .iter()
        .filter(|p| matches!(p.what, Write::Thunk(_)))
        .count() as u64;
    let near = m.text.first().map_or(m.base, |s| s.0);
    let area_len = (5 * STUB + thunks * THUNK + PAGE - 1) & !(PAGE - 1);
    let Some(area) = map_near(near, area_len) else {
        return done;
    };
    let stubs = write_stubs(area, t);
    let mut writes: Vec<(u64, [u8; 5])> = Vec::new();
    let mut next_thunk = area + 5 * STUB;
    for p in plans {
        let bytes = match p.what {
            Write::Call(i) => call_or_jmp(0xe8, p.site, stubs[i]),
            Write::Thunk(j) => match write_thunk(next_thunk, p.site, &j, &stubs) {
                Some(()) => {
                    done.converted += 1;
                    let b = call_or_jmp(0xe9, p.site, next_thunk);
                    next_thunk += THUNK;
                    b
                }
                None => call_or_jmp(0xe8, p.site, stubs[2]),
            },
        };
        writes.push((p.site, bytes));
    }
    // SAFETY: the area is ours; it becomes read+exec only.
    unsafe {
        libc::mprotect(
            area as *mut libc::c_void,
            area_len as usize,
            libc::PROT_READ | libc::PROT_EXEC,
        )
    };
    write_text(m, &writes);
    done.sites = writes.len() as u64;
    done
}

/// The tail mode actually used. Convert thunks have no unwind information
/// yet, so a C++ exception thrown through one cannot pass it: while a C++
/// runtime is loaded (`__cxa_throw` resolves), every tail site is marked
/// instead, whatever was asked.
pub fn effective_tail_mode(asked: TailMode) -> TailMode {
    // SAFETY: dlsym with a NUL-terminated name.
    let cxx = !unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__cxa_throw".as_ptr()) }.is_null();
    if cxx {
        TailMode::Mark
    } else {
        asked
    }
}

/// Decides a tail site's strategy: `Some(jump)` to convert it.
fn tail_plan(
    mode: TailMode,
    site: u64,
    traced: &HashSet<u64>,
    got: &HashMap<u64, String>,
) -> Option<TailJump> {
    if mode == TailMode::Mark {
        return None;
    }
    let jump = decode_tail_jump(site + 5)?;
    let slot = match &jump {
        TailJump::Direct(target) => {
            if mode == TailMode::Auto && traced.contains(target) {
                return None;
            }
            plt_slot(*target)
        }
        TailJump::Indirect {
            bytes,
            rip_disp: Some(at),
            ..
        } => {
            let disp = i32::from_le_bytes(bytes[*at..*at + 4].try_into().ok()?);
            Some((site + 5 + bytes.len() as u64).wrapping_add(disp as i64 as u64))
        }
        TailJump::Indirect { .. } => None,
    };
    let callee = slot.and_then(|s| got.get(&s));
    if callee.is_some_and(|n| MUST_SEE_CALLER.contains(&n.as_str())) {
        return None;
    }
    Some(jump)
}

/// Near stubs `jmp *0(%rip); .quad target`, one per trampoline.
fn write_stubs(area: u64, t: Trampolines) -> [u64; 5] {
    let mut out = [0; 5];
    for (i, &target) in t.all().iter().enumerate() {
        let stub = area + i as u64 * STUB;
        let code = stub_code(target);
        // SAFETY: the stub lies in the writable area mapped for it.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), stub as *mut u8, code.len()) };
        out[i] = stub;
    }
    out
}

/// `jmp *0(%rip); .quad target`, padded with int3.
fn stub_code(target: u64) -> [u8; STUB as usize] {
    let mut code = [0xccu8; STUB as usize];
    code[..6].copy_from_slice(&[0xff, 0x25, 0, 0, 0, 0]);
    code[6..14].copy_from_slice(&target.to_le_bytes());
    code
}

fn call_or_jmp(opcode: u8, at: u64, target: u64) -> [u8; 5] {
    let r = rel32(at + 5, target);
    [opcode, r[0], r[1], r[2], r[3]]
}

/// Writes the thunk for the tail site at `site` at `at`:
/// `call enter; jnz 1f; call TARGET; jmp leave; int3; 1: jmp site+5; int3`.
fn write_thunk(at: u64, site: u64, jump: &TailJump, stubs: &[u64; 5]) -> Option<()> {
    let mut code: Vec<u8> = Vec::with_capacity(THUNK as usize);
    code.extend(call_or_jmp(0xe8, at, stubs[3]));
    let jnz_at = code.len();
    code.extend([0x75, 0]);
    let call_at = at + code.len() as u64;
    match jump {
        TailJump::Direct(target) => {
            if !fits_rel32(call_at + 5, *target) {
                return None;
            }
            code.extend(call_or_jmp(0xe8, call_at, *target));
        }
        TailJump::Indirect {
            bytes,
            modrm,
            rip_disp,
        } => {
            let mut b = bytes.clone();
            b[*modrm] = (b[*modrm] & !0x38) | (2 << 3); // jmp /4 -> call /2
            if let Some(d) = rip_disp {
                let old = i32::from_le_bytes(b[*d..*d + 4].try_into().ok()?);
                let target = (site + 5 + b.len() as u64).wrapping_add(old as i64 as u64);
                let end = call_at + b.len() as u64;
                if !fits_rel32(end, target) {
                    return None;
                }
                b[*d..*d + 4].copy_from_slice(&rel32(end, target));
            }
            code.extend(b);
        }
    }
    let leave_at = at + code.len() as u64;
    code.extend(call_or_jmp(0xe9, leave_at, stubs[4]));
    code.push(0xcc);
    code[jnz_at + 1] = (code.len() - jnz_at - 2) as u8;
    let fallback_at = at + code.len() as u64;
    if !fits_rel32(fallback_at + 5, site + 5) {
        return None;
    }
    code.extend(call_or_jmp(0xe9, fallback_at, site + 5));
    code.push(0xcc);
    if code.len() as u64 > THUNK {
        return None;
    }
    // SAFETY: [at, at + THUNK) lies in the writable area mapped for thunks.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), at as *mut u8, code.len()) };
    Some(())
}

/// An address `from` can reach with a rel32 jump or call that ends up at
/// `to`: `to` itself, or a near stub jumping there.
pub fn reachable(from: u64, to: u64) -> Option<u64> {
    if fits_rel32(from + 5, to) {
        return Some(to);
    }
    let stub = map_near(from, PAGE)?;
    let code = stub_code(to);
    // SAFETY: the page was just mapped writable for us; it becomes
    // read+exec only.
    unsafe {
        std::ptr::copy_nonoverlapping(code.as_ptr(), stub as *mut u8, code.len());
        libc::mprotect(
            stub as *mut libc::c_void,
            PAGE as usize,
            libc::PROT_READ | libc::PROT_EXEC,
        );
    }
    Some(stub)
}

/// Writes a few code bytes at `at` (made writable for the duration);
/// false when the page protection cannot be changed.
pub fn write_code(at: u64, bytes: &[u8]) -> bool {
    let lo = at & !(PAGE - 1);
    let len = ((at + bytes.len() as u64 + PAGE - 1) & !(PAGE - 1)) - lo;
    let rx = libc::PROT_READ | libc::PROT_EXEC;
    // SAFETY: the caller guarantees nothing executes these bytes while they
    // change (start-up, single thread) and that they are ours to change.
    unsafe {
        if libc::mprotect(lo as *mut libc::c_void, len as usize, rx | libc::PROT_WRITE) != 0 {
            return false;
        }
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, bytes.len());
        libc::mprotect(lo as *mut libc::c_void, len as usize, rx);
    }
    true
}

/// Writes code bytes: each executable segment that receives writes is made
/// writable for the duration and then gets its own protection back.
fn write_text(m: &Module, writes: &[(u64, [u8; 5])]) {
    for &(start, end, flags) in &m.text {
        let here: Vec<_> = writes
            .iter()
            .filter(|w| w.0 >= start && w.0 + 5 <= end)
            .collect();
        if here.is_empty() {
            continue;
        }
        let lo = start & !(PAGE - 1);
        let len = ((end + PAGE - 1) & !(PAGE - 1)) - lo;
        let mut prot = libc::PROT_EXEC;
        if flags & libc::PF_R != 0 {
            prot |= libc::PROT_READ;
        }
        // SAFETY: [lo, lo+len) is this module's mapped executable segment;
        // no other thread runs yet (start-up), so nothing executes the
        // bytes while they change.
        unsafe {
            if libc::mprotect(
                lo as *mut libc::c_void,
                len as usize,
                prot | libc::PROT_WRITE,
            ) != 0
            {
                continue;
            }
            for (addr, bytes) in here {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), *addr as *mut u8, 5);
            }
            libc::mprotect(lo as *mut libc::c_void, len as usize, prot);
        }
    }
}

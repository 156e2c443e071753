//! The code the runtime writes next to a module: near stubs (one per
//! trampoline, `jmp *0(%rip)`, for trampolines out of rel32 reach), site
//! stubs (`call TRAMPOLINE` then the site's own `ret` or jump) and convert
//! thunks, in one area per module within rel32 reach of its code. Areas
//! of unloaded modules are kept for reuse (a thread may still return
//! through one of their thunks).

use crate::code::jumps::TailJump;
use crate::code::unwind::ThunkLayout;

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
    /// `ftail_lib_enter`, which library thunks call (`plan::libcall`).
    pub lib_enter: u64,
    /// `ftail_lib_leave`, which library thunks jump to.
    pub lib_leave: u64,
    /// `ftail_lib_entry_c`, which the entry site of a library thunk
    /// whose entry takes no spec calls (`plan::libcall`); 0 in the ring
    /// format, whose thunks call the entry trampoline and `lib_enter`.
    pub lib_entry: u64,
    /// `ftail_lib_exit_c`, which such a thunk jumps to.
    pub lib_exit: u64,
    /// `ftail_entry_spec`, which the spec stubs call (`record::args`).
    pub entry_spec: u64,
}

/// Near stubs per module, one per trampoline (the spec trampoline's
/// last).
pub const NEAR: usize = 10;

impl Trampolines {
    pub fn all(&self) -> [u64; NEAR] {
        [
            self.entry,
            self.exit,
            self.tail_mark,
            self.convert_enter,
            self.convert_leave,
            self.lib_enter,
            self.lib_leave,
            self.lib_entry,
            self.lib_exit,
            self.entry_spec,
        ]
    }
}

pub const PAGE: u64 = 4096;
/// Bytes reserved per convert thunk.
pub const THUNK: u64 = 48;
/// Bytes per near stub.
pub const STUB: u64 = 16;

pub fn fits_rel32(from_end: u64, to: u64) -> bool {
    let d = to.wrapping_sub(from_end) as i64;
    d >= i64::from(i32::MIN) && d <= i64::from(i32::MAX)
}

pub fn rel32(from_end: u64, to: u64) -> [u8; 4] {
    (to.wrapping_sub(from_end) as i32).to_le_bytes()
}

/// An anonymous RW mapping within rel32 range of `near` (made executable
/// once filled).
pub fn map_near(near: u64, len: u64) -> Option<u64> {
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

/// The memory a planned module's stubs and thunks live in.
pub struct Area {
    /// Address and length of the mapping.
    pub at: (u64, u64),
    /// The thunks' unwind information as registered, if any thunks.
    pub unwind: Option<crate::code::unwind::Registration>,
}

impl Area {
    /// Gives the area back: its thunks' unwind registrations (libgcc must
    /// not describe addresses that another module may reuse), then the
    /// memory, to the pool of areas to reuse.
    pub fn release(self) {
        if let Some(r) = self.unwind {
            crate::code::unwind::deregister(r);
        }
        free_area(self.at);
    }
}

/// Areas of unloaded modules, oldest first, kept mapped (read and
/// execute) for reuse by the next module planned within reach of one: a
/// thread may still be returning through a convert thunk of an unloaded
/// module (its tail callee lives elsewhere and may still run), so an area
/// is not unmapped at once. Beyond [`AREAS_KEPT`] the oldest is unmapped.
/// Only touched by planning, which runs under the control lock.
static FREE_AREAS: crate::process::sync::Locked<Vec<(u64, u64)>> =
    crate::process::sync::Locked::new(Vec::new());
const AREAS_KEPT: usize = 64;

fn free_area(at: (u64, u64)) {
    let oldest = FREE_AREAS.with(|free| {
        free.push(at);
        (free.len() > AREAS_KEPT).then(|| free.remove(0))
    });
    if let Some((addr, len)) = oldest {
        // SAFETY: an area of a module unloaded 64 unloads ago, ours.
        unsafe { libc::munmap(addr as *mut libc::c_void, len as usize) };
    }
}

/// A writable area of `len` bytes within rel32 reach of `near`: a freed
/// one when one is large enough and close enough, else a new mapping.
pub fn take_area(near: u64, len: u64) -> Option<u64> {
    let reused = FREE_AREAS.with(|free| {
        let i = free
            .iter()
            .position(|&(a, l)| l >= len && fits_rel32(near, a) && fits_rel32(near, a + len))?;
        Some(free.remove(i))
    });
    match reused {
        Some((addr, l)) => {
            // SAFETY: a freed area of ours, made writable to be filled
            // again (it becomes read+exec once filled).
            let ok = unsafe {
                libc::mprotect(
                    addr as *mut libc::c_void,
                    l as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            } == 0;
            if ok {
                Some(addr)
            } else {
                map_near(near, len)
            }
        }
        None => map_near(near, len),
    }
}

/// A stub in a module's area that sites jump to: `call TRAMPOLINE` (its
/// near stub), then the site's own ending — its `ret` (exits) or a jump
/// to its target (return-thunk exits and marked tails). Shared by every
/// site with the same trampoline and ending. Its frame is that of the
/// function it ends (CFA = rsp + 8 throughout), which its unwind info
/// says.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stub {
    /// `call exit; RET` (the `ret`'s bytes, up to 4), for the exits of
    /// function N of the module.
    Exit([u8; 4], u8, u32),
    /// `call TRAMPOLINE; jmp TARGET` (trampoline 1: exit, of function N;
    /// 2: tail mark, [`NO_FUNCTION`]).
    Jump(u8, u64, u32),
}

/// [`Stub::Jump`]'s function for a stub that is no function's exit.
pub const NO_FUNCTION: u32 = u32::MAX;

/// Bytes per site stub (which lie at multiples of it in their area).
pub const SITE_STUB: u64 = crate::record::before::EXIT_STUB;

/// Writes a site stub at `at`: `call NEAR_STUB; RET; int3` or `call
/// NEAR_STUB; jmp TARGET; int3` (an absolute `jmp *0(%rip)` when TARGET
/// is out of rel32 reach). An exit stub's last bytes, which never run,
/// name its function (`entry`, its entry address) for exits whose entry
/// was never recorded (`record::before`).
pub fn write_site_stub(at: u64, stub: Stub, near_stubs: &[u64; NEAR], entry: u64) {
    let mut code = [0xccu8; SITE_STUB as usize];
    let trampoline = match stub {
        Stub::Exit(..) => 1,
        Stub::Jump(t, ..) => t as usize,
    };
    code[..5].copy_from_slice(&call_or_jmp(0xe8, at, near_stubs[trampoline]));
    match stub {
        Stub::Exit(ret, len, _) => code[5..5 + len as usize].copy_from_slice(&ret[..len as usize]),
        Stub::Jump(_, target, _) if fits_rel32(at + 10, target) => {
            code[5..10].copy_from_slice(&call_or_jmp(0xe9, at + 5, target));
        }
        Stub::Jump(_, target, _) => {
            code[5..11].copy_from_slice(&[0xff, 0x25, 0, 0, 0, 0]);
            code[11..19].copy_from_slice(&target.to_le_bytes());
        }
    }
    if trampoline == 1 && entry != 0 {
        use crate::record::before::{ENTRY_AT, TAG, TAG_AT};
        code[TAG_AT..TAG_AT + 4].copy_from_slice(&TAG.to_le_bytes());
        code[ENTRY_AT..ENTRY_AT + 8].copy_from_slice(&entry.to_le_bytes());
    }
    // SAFETY: [at, at + SITE_STUB) lies in the writable area mapped for
    // the module's stubs.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), at as *mut u8, code.len()) };
}

/// Near stubs `jmp *0(%rip); .quad target`, one per trampoline.
pub fn write_stubs(area: u64, t: Trampolines) -> [u64; NEAR] {
    let mut out = [0; NEAR];
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
pub fn stub_code(target: u64) -> [u8; STUB as usize] {
    let mut code = [0xccu8; STUB as usize];
    code[..6].copy_from_slice(&[0xff, 0x25, 0, 0, 0, 0]);
    code[6..14].copy_from_slice(&target.to_le_bytes());
    code
}

pub fn call_or_jmp(opcode: u8, at: u64, target: u64) -> [u8; 5] {
    let r = rel32(at + 5, target);
    [opcode, r[0], r[1], r[2], r[3]]
}

/// Writes the thunk for the tail site at `site` at `at`:
/// `call enter; jnz 1f; call TARGET; jmp leave; int3; 1: jmp FALLBACK;
/// int3`, FALLBACK being the original jump (after an indirect tail's nop)
/// or its target (a direct tail, which is the site itself).
pub fn write_thunk(
    at: u64,
    site: u64,
    jump: &TailJump,
    fallback_to: u64,
    stubs: &[u64; NEAR],
) -> Option<ThunkLayout> {
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
    let fallback = code.len() as u64;
    let fallback_at = at + fallback;
    if !fits_rel32(fallback_at + 5, fallback_to) {
        return None;
    }
    code.extend(call_or_jmp(0xe9, fallback_at, fallback_to));
    code.push(0xcc);
    if code.len() as u64 > THUNK {
        return None;
    }
    // SAFETY: [at, at + THUNK) lies in the writable area mapped for thunks.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), at as *mut u8, code.len()) };
    Some(ThunkLayout {
        start: at,
        call: call_at - at,
        fallback,
        len: code.len() as u64,
    })
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

/// Writes a function's spec stub at `at` (`record::args::spec_stub`: a
/// call to the spec trampoline's near stub, then the spec itself).
pub fn write_spec_stub(
    at: u64,
    entry_spec: u64,
    (spec, actions): &(ftail_abi::argspec::FnSpec, ftail_abi::trigger::Actions),
) {
    let code = crate::record::args::spec_stub(at, entry_spec, spec, actions);
    // SAFETY: [at, at + SPEC_STUB) lies in the writable area mapped for
    // the module's stubs.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), at as *mut u8, code.len()) };
}

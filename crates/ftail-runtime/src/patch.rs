//! Writing the sites: an entry's nop becomes `call rel32` to its
//! trampoline (through a near stub when the trampoline is out of rel32
//! range); an exit's `ret` and padding become `jmp rel32` to a stub that
//! calls the exit trampoline and returns with the same `ret`; a direct
//! tail, return-thunk or retpoline jump is retargeted to a stub that
//! calls the trampoline and jumps on to the original target (`mark`), or
//! to the site's convert thunk; an indirect tail's nop becomes a `call`
//! to the mark trampoline or a `jmp` to its convert thunk.
//!
//! A module is *planned* once, when it is found ([`plan_module`]): every
//! site's patched form is decided and the near stubs, site stubs and
//! convert thunks are written then, so that switching functions on and
//! off later (`control.rs`) only ever writes 5-byte sites (`poke.rs`). A
//! site that does not hold its kind's untraced form when planned is left
//! alone for good.

use std::collections::BTreeMap;

use ftail_abi::{SiteKind, NOP5};

use crate::modules::Site;

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
    /// `ftail_entry_spec`, which the spec stubs call (`args.rs`).
    pub entry_spec: u64,
}

/// Near stubs per module, one per trampoline.
const NEAR: usize = 6;

impl Trampolines {
    fn all(&self) -> [u64; NEAR] {
        [
            self.entry,
            self.exit,
            self.tail_mark,
            self.convert_enter,
            self.convert_leave,
            self.entry_spec,
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
    /// Modules left untraced as a whole.
    pub modules_skipped: u64,
}

impl std::ops::AddAssign for Patched {
    fn add_assign(&mut self, o: Patched) {
        self.functions += o.functions;
        self.sites += o.sites;
        self.skipped += o.skipped;
        self.converted += o.converted;
        self.modules_skipped += o.modules_skipped;
    }
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
/// jumps through `rsp` are refused (the thunk moves `rsp`), and so are
/// jumps that read `rbx` (the thunk borrows it; compilers never emit one,
/// since a tail caller has restored `rbx` for its own caller).
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
    let (rsp, rbx) = (4, 3);
    if md == 3 {
        if [rsp, rbx].contains(&(rm | ((rex & 1) << 3))) {
            return None;
        }
    } else {
        if rm == 4 {
            let sib = b[len];
            len += 1;
            let base = sib & 7 | ((rex & 1) << 3);
            let index = (sib >> 3) & 7 | ((rex & 2) << 2);
            let base_used = !(md == 0 && sib & 7 == 5);
            if base == rsp || (base_used && base == rbx) || index == rbx {
                return None;
            }
            if md == 0 && sib & 7 == 5 {
                len += 4;
            }
        } else if md == 0 && rm == 5 {
            rip_disp = Some(len);
            len += 4;
        } else if rm | ((rex & 1) << 3) == rbx {
            return None;
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

/// A site and the bytes that switch it on and off.
pub struct SitePlan {
    /// Address of the 5-byte site.
    pub addr: u64,
    /// Index of its function in [`ModulePlan::names`].
    pub func: u32,
    /// What the site holds untraced (as the compiler side left it).
    pub off: [u8; 5],
    /// What the site becomes when its function is traced.
    pub on: OnBytes,
    /// Where a thread that meets the site while its first byte is the
    /// `int3` of a live change goes on, doing what the untraced site does
    /// (`poke.rs`): past a nop, to a `ret` like the site's, or to the
    /// jump's target.
    pub resume: u64,
}

/// The patched forms of a site.
#[derive(Clone, Copy)]
pub enum OnBytes {
    /// Always this `call` or `jmp` (entry, exit; tails that are only ever
    /// marked).
    Fixed([u8; 5]),
    /// A tail site with a convert thunk: `jmp thunk`, or the mark form
    /// when `mark_if_traced` names a function of this module that is
    /// traced (the `auto` rule).
    Tail {
        mark: [u8; 5],
        convert: [u8; 5],
        mark_if_traced: Option<u32>,
    },
}

/// Everything needed to switch a module's functions on and off: built
/// once when the module is found, with every convert thunk already
/// written, so that switching is only 5-byte writes.
pub struct ModulePlan {
    /// Load bias.
    pub base: u64,
    /// Executable segments: (start, end, PF_* flags).
    pub text: Vec<(u64, u64, u32)>,
    /// Function names, indexed by [`SitePlan::func`].
    pub names: Vec<&'static str>,
    /// Every site that held the nop when the module was planned.
    pub sites: Vec<SitePlan>,
    /// Sites that did not hold the nop (left alone for good).
    pub skipped: u64,
    /// Tail sites that have a convert thunk.
    pub thunks: u64,
    /// Why the module is left untraced as a whole, if it is.
    pub failure: Option<&'static str>,
    /// Its near stubs and convert thunks, and their unwind registrations:
    /// given back when the module is unloaded ([`ModulePlan::release`]).
    pub area: Option<Area>,
}

/// The memory a planned module's stubs and thunks live in.
pub struct Area {
    /// Address and length of the mapping.
    pub at: (u64, u64),
    /// The thunks' unwind information as registered, if any thunks.
    pub unwind: Option<crate::unwind::Registration>,
}

impl ModulePlan {
    /// Gives back what planning took: the thunks' unwind registrations
    /// (libgcc must not describe addresses that another module may reuse)
    /// and the stub area, which goes to the pool of areas to reuse.
    pub fn release(&mut self) {
        if let Some(area) = self.area.take() {
            if let Some(r) = area.unwind {
                crate::unwind::deregister(r);
            }
            free_area(area.at);
        }
    }
}

/// Areas of unloaded modules, oldest first, kept mapped (read and
/// execute) for reuse by the next module planned within reach of one: a
/// thread may still be returning through a convert thunk of an unloaded
/// module (its tail callee lives elsewhere and may still run), so an area
/// is not unmapped at once. Beyond [`AREAS_KEPT`] the oldest is unmapped.
/// Only touched by planning, which runs under the control lock.
static FREE_AREAS: crate::sync::Locked<Vec<(u64, u64)>> = crate::sync::Locked::new(Vec::new());
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
fn take_area(near: u64, len: u64) -> Option<u64> {
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

impl ModulePlan {
    /// What the site should hold given which functions are traced.
    pub fn wanted(&self, site: &SitePlan, traced: &[bool]) -> [u8; 5] {
        if !traced[site.func as usize] {
            return site.off;
        }
        match site.on {
            OnBytes::Fixed(b) => b,
            OnBytes::Tail {
                mark,
                convert,
                mark_if_traced,
            } => match mark_if_traced {
                Some(f) if traced[f as usize] => mark,
                _ => convert,
            },
        }
    }

    /// Whether the site, holding `bytes`, goes through its convert thunk.
    pub fn is_converted(site: &SitePlan, bytes: &[u8]) -> bool {
        matches!(site.on, OnBytes::Tail { convert, .. } if bytes == convert)
    }

    /// Whether `bytes` is one of the forms the site may hold.
    pub fn is_ours(site: &SitePlan, bytes: &[u8]) -> bool {
        bytes == site.off
            || match site.on {
                OnBytes::Fixed(b) => bytes == b,
                OnBytes::Tail { mark, convert, .. } => bytes == mark || bytes == convert,
            }
    }
}

/// A `ret` the compiler side left as an exit site: `ret`, `rep ret`,
/// `bnd ret` or `ret $n`, padded with `int3` to 5 bytes; its length.
fn exit_ret_len(b: &[u8; 5]) -> Option<usize> {
    let len = match b {
        [0xc3, ..] => 1,
        [0xf3 | 0xf2, 0xc3, ..] => 2,
        [0xc2, ..] => 3,
        _ => return None,
    };
    b[len..].iter().all(|&x| x == 0xcc).then_some(len)
}

/// The target of a `jmp rel32` at `at` holding `b`.
fn jmp_target(at: u64, b: &[u8; 5]) -> Option<u64> {
    (b[0] == 0xe9).then(|| {
        let rel = i32::from_le_bytes([b[1], b[2], b[3], b[4]]);
        (at + 5).wrapping_add(rel as i64 as u64)
    })
}

/// A stub in a module's area that sites jump to: `call TRAMPOLINE` (its
/// near stub), then the site's own ending — its `ret` (exits) or a jump
/// to its target (return-thunk exits and marked tails). Shared by every
/// site with the same trampoline and ending. Its frame is that of the
/// function it ends (CFA = rsp + 8 throughout), which its unwind info
/// says.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stub {
    /// `call exit; RET` (the `ret`'s bytes, up to 4).
    Exit([u8; 4], u8),
    /// `call TRAMPOLINE; jmp TARGET` (trampoline 1: exit, 2: tail mark).
    Jump(u8, u64),
}

/// Plans module `m`: decides each site's patched form and writes the near
/// stubs, site stubs and convert thunks; no site is written here.
pub fn plan_module(m: &Module, t: Trampolines) -> ModulePlan {
    let mode = crate::CONFIG.get().map_or(TailMode::Auto, |c| c.tail);
    let mut plan = ModulePlan {
        base: m.base,
        text: m.text.clone(),
        names: Vec::with_capacity(m.funcs.len()),
        sites: Vec::new(),
        skipped: 0,
        thunks: 0,
        failure: None,
        area: None,
    };
    let starts: BTreeMap<u64, u32> = m
        .funcs
        .iter()
        .enumerate()
        .map(|(i, &f)| {
            (
                // SAFETY: records come from this loaded module's notes.
                unsafe { crate::modules::rel(std::ptr::addr_of!((*f).start)) },
                i as u32,
            )
        })
        .collect();
    let got = if mode == TailMode::Mark {
        BTreeMap::new()
    } else {
        got_symbols(m)
    };
    // First the sites and what they need; stubs and thunks are written
    // once the area for them is mapped.
    let mut needs: Vec<Option<Stub>> = Vec::new();
    let mut tails: Vec<(usize, TailJump, u64)> = Vec::new();
    let mut stubs_wanted: BTreeMap<Stub, u64> = BTreeMap::new();
    for (fi, &f) in m.funcs.iter().enumerate() {
        // SAFETY: as above.
        plan.names.push(unsafe { func_name(f) });
        // SAFETY: as above.
        for site in unsafe { func_sites(f) } {
            let Some(kind) = SiteKind::from_u8(site.record.kind) else {
                continue;
            };
            if !kind.is_site() {
                continue;
            }
            match site_plan(mode, &m.text, &site, kind, fi as u32, &starts, &got) {
                Some((sp, stub, tail)) => {
                    if let Some(st) = stub {
                        stubs_wanted.insert(st, 0);
                    }
                    if let Some((jump, fallback)) = tail {
                        tails.push((plan.sites.len(), jump, fallback));
                    }
                    needs.push(stub);
                    plan.sites.push(sp);
                }
                None => plan.skipped += 1,
            }
        }
    }
    let near = m.text.first().map_or(m.base, |s| s.0);
    // Functions whose values are recorded get a spec stub (args.rs).
    let specs: Vec<_> = plan
        .names
        .iter()
        .map(|n| crate::args::spec_for(n))
        .collect();
    let spec_stubs = specs.iter().flatten().count() as u64 * crate::args::SPEC_STUB;
    let stubs_len = stubs_wanted.len() as u64 * SITE_STUB + spec_stubs;
    let area_len =
        (NEAR as u64 * STUB + stubs_len + tails.len() as u64 * THUNK + PAGE - 1) & !(PAGE - 1);
    let Some(area) = take_area(near, area_len) else {
        plan.skipped += plan.sites.len() as u64;
        plan.sites.clear();
        plan.failure = Some("no free memory within reach for its stubs");
        return plan;
    };
    let near_stubs = write_stubs(area, t);
    let mut next = area + NEAR as u64 * STUB;
    for (stub, at) in stubs_wanted.iter_mut() {
        write_site_stub(next, *stub, &near_stubs);
        *at = next;
        next += SITE_STUB;
    }
    let mut spec_at = vec![None; specs.len()];
    for (at, spec) in spec_at.iter_mut().zip(&specs) {
        if let Some(spec) = spec {
            let code = crate::args::spec_stub(next, near_stubs[NEAR - 1], spec);
            // SAFETY: [next, next + SPEC_STUB) lies in the writable area
            // mapped for the module's stubs.
            unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), next as *mut u8, code.len()) };
            *at = Some(next);
            next += crate::args::SPEC_STUB;
        }
    }
    let stubs_range = (area + NEAR as u64 * STUB, stubs_len);
    for (s, need) in plan.sites.iter_mut().zip(&needs) {
        let via = need.map(|st| stubs_wanted[&st]);
        if let Some(at) = via {
            if let Stub::Exit(..) = need.expect("a stub") {
                // A thread that traps on the site's int3 mid-change
                // returns through the stub's own `ret`.
                s.resume = at + 5;
            }
        }
        let fix = |b: [u8; 5]| match (b[0], via) {
            (0, _) => call_or_jmp(
                0xe8,
                s.addr,
                spec_at[s.func as usize].unwrap_or(near_stubs[0]),
            ),
            (1, Some(at)) => call_or_jmp(0xe9, s.addr, at),
            (2, Some(at)) => call_or_jmp(0xe9, s.addr, at),
            (_, _) => call_or_jmp(0xe8, s.addr, near_stubs[2]),
        };
        s.on = match s.on {
            OnBytes::Fixed(b) => OnBytes::Fixed(fix(b)),
            OnBytes::Tail {
                mark,
                convert,
                mark_if_traced,
            } => OnBytes::Tail {
                mark: fix(mark),
                convert,
                mark_if_traced,
            },
        };
    }
    let mut next_thunk = next;
    let mut layouts = Vec::new();
    for (i, jump, fallback) in tails {
        let s = &mut plan.sites[i];
        let OnBytes::Tail {
            mark,
            mark_if_traced,
            ..
        } = s.on
        else {
            unreachable!("tails are planned as Tail")
        };
        s.on = match write_thunk(next_thunk, s.addr, &jump, fallback, &near_stubs) {
            Some(layout) => {
                layouts.push(layout);
                plan.thunks += 1;
                let convert = call_or_jmp(0xe9, s.addr, next_thunk);
                next_thunk += THUNK;
                OnBytes::Tail {
                    mark,
                    convert,
                    mark_if_traced: if mode == TailMode::Auto {
                        mark_if_traced
                    } else {
                        None
                    },
                }
            }
            None => OnBytes::Fixed(mark),
        };
    }
    // SAFETY: the area is ours; it becomes read+exec only.
    unsafe {
        libc::mprotect(
            area as *mut libc::c_void,
            area_len as usize,
            libc::PROT_READ | libc::PROT_EXEC,
        )
    };
    plan.area = Some(Area {
        at: (area, area_len),
        unwind: crate::unwind::register_thunks(&layouts, stubs_range),
    });
    plan
}

/// Bytes per site stub.
const SITE_STUB: u64 = 32;

/// One site's plan, if it holds its kind's untraced form: the plan (its
/// `on` bytes for now name what they call: 0 the entry trampoline, 1 an
/// exit stub, 2 a mark stub, 3 the mark trampoline itself; filled in
/// once the stubs are written), the stub it needs, and for a tail with a
/// convert thunk its decoded jump and the thunk's fallback target.
#[allow(clippy::type_complexity)]
fn site_plan(
    mode: TailMode,
    text: &[(u64, u64, u32)],
    site: &Site,
    kind: SiteKind,
    func: u32,
    starts: &BTreeMap<u64, u32>,
    got: &BTreeMap<u64, String>,
) -> Option<(SitePlan, Option<Stub>, Option<(TailJump, u64)>)> {
    let addr = site.addr;
    // The site, and the jump after an indirect tail's nop, lie in one
    // executable segment of the module.
    let after = if kind.is_nop() { 5 } else { 0 };
    if !text.iter().any(|s| addr >= s.0 && addr + 5 + after <= s.1) {
        return None;
    }
    // SAFETY: checked to lie in an executable segment of the module.
    let off: [u8; 5] = unsafe { std::ptr::read_unaligned(addr as *const [u8; 5]) };
    let mut sp = SitePlan {
        addr,
        func,
        off,
        on: OnBytes::Fixed([0; 5]),
        resume: addr + 5,
    };
    match kind {
        SiteKind::Entry => {
            (off == NOP5).then_some(())?;
            Some((sp, None, None))
        }
        SiteKind::Exit => {
            let len = exit_ret_len(&off)?;
            let mut ret = [0xcc; 4];
            ret[..len].copy_from_slice(&off[..len]);
            sp.on = OnBytes::Fixed([1; 5]);
            Some((sp, Some(Stub::Exit(ret, len as u8)), None))
        }
        SiteKind::ExitThunk => {
            let target = jmp_target(addr, &off)?;
            sp.resume = target;
            sp.on = OnBytes::Fixed([1; 5]);
            Some((sp, Some(Stub::Jump(1, target)), None))
        }
        SiteKind::TailDirect | SiteKind::TailRetpoline | SiteKind::TailIndirect => {
            let (jump_at, stub, fallback) = if kind == SiteKind::TailIndirect {
                (off == NOP5).then_some(())?;
                (addr + 5, None, addr + 5)
            } else {
                let target = jmp_target(addr, &off)?;
                sp.resume = target;
                (addr, Some(Stub::Jump(2, target)), target)
            };
            let mark = if stub.is_some() { [2; 5] } else { [3; 5] };
            match tail_plan(mode, jump_at, starts, got) {
                Some((jump, target)) => {
                    sp.on = OnBytes::Tail {
                        mark,
                        convert: [0; 5],
                        mark_if_traced: target,
                    };
                    Some((sp, stub, Some((jump, fallback))))
                }
                None => {
                    sp.on = OnBytes::Fixed(mark);
                    Some((sp, stub, None))
                }
            }
        }
        SiteKind::LocalIndirect => None,
    }
}

/// Writes a site stub at `at`: `call NEAR_STUB; RET; int3` or `call
/// NEAR_STUB; jmp TARGET; int3` (an absolute `jmp *0(%rip)` when TARGET
/// is out of rel32 reach).
fn write_site_stub(at: u64, stub: Stub, near_stubs: &[u64; NEAR]) {
    let mut code = [0xccu8; SITE_STUB as usize];
    let trampoline = match stub {
        Stub::Exit(..) => 1,
        Stub::Jump(t, _) => t as usize,
    };
    code[..5].copy_from_slice(&call_or_jmp(0xe8, at, near_stubs[trampoline]));
    match stub {
        Stub::Exit(ret, len) => code[5..5 + len as usize].copy_from_slice(&ret[..len as usize]),
        Stub::Jump(_, target) if fits_rel32(at + 10, target) => {
            code[5..10].copy_from_slice(&call_or_jmp(0xe9, at + 5, target));
        }
        Stub::Jump(_, target) => {
            code[5..11].copy_from_slice(&[0xff, 0x25, 0, 0, 0, 0]);
            code[11..19].copy_from_slice(&target.to_le_bytes());
        }
    }
    // SAFETY: [at, at + SITE_STUB) lies in the writable area mapped for
    // the module's stubs.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), at as *mut u8, code.len()) };
}

/// Where the parts of a written convert thunk are, for its unwind info.
pub struct ThunkLayout {
    /// Address of the thunk.
    pub start: u64,
    /// Offset of the `call` to the tail target.
    pub call: u64,
    /// Offset of the fallback `jmp` (taken when not converted).
    pub fallback: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Decides a tail site's strategy: `Some((jump, target))` when it gets a
/// convert thunk, with the index of the function it jumps to when that is
/// a function of the same module (`auto` marks those while they are
/// traced); `None` to always mark. `at` is the tail jump: the site itself,
/// or what follows an indirect tail's nop.
fn tail_plan(
    mode: TailMode,
    at: u64,
    starts: &BTreeMap<u64, u32>,
    got: &BTreeMap<u64, String>,
) -> Option<(TailJump, Option<u32>)> {
    if mode == TailMode::Mark {
        return None;
    }
    let jump = decode_tail_jump(at)?;
    let mut target_func = None;
    let slot = match &jump {
        TailJump::Direct(target) => {
            target_func = starts.get(target).copied();
            plt_slot(*target)
        }
        TailJump::Indirect {
            bytes,
            rip_disp: Some(at_disp),
            ..
        } => {
            let disp = i32::from_le_bytes(bytes[*at_disp..*at_disp + 4].try_into().ok()?);
            Some((at + bytes.len() as u64).wrapping_add(disp as i64 as u64))
        }
        TailJump::Indirect { .. } => None,
    };
    let callee = slot.and_then(|s| got.get(&s));
    if callee.is_some_and(|n| MUST_SEE_CALLER.contains(&n.as_str())) {
        return None;
    }
    Some((jump, target_func))
}

/// Near stubs `jmp *0(%rip); .quad target`, one per trampoline.
fn write_stubs(area: u64, t: Trampolines) -> [u64; NEAR] {
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
/// `call enter; jnz 1f; call TARGET; jmp leave; int3; 1: jmp FALLBACK;
/// int3`, FALLBACK being the original jump (after an indirect tail's nop)
/// or its target (a direct tail, which is the site itself).
fn write_thunk(
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

//! Planning a module: when a module with site tables is found, every
//! site's patched form is decided once ([`plan_module`]), and the near
//! stubs, site stubs and convert thunks it needs are written then
//! (`code::stubs`), so that switching functions on and off later
//! (`control::selection`) only ever writes 5-byte sites (`code::poke`). A
//! site that does not hold its kind's untraced form when planned is left
//! alone for good.
//!
//! The patched forms: an entry's nop becomes `call rel32` to its
//! trampoline (through a near stub when the trampoline is out of rel32
//! range); an exit's `ret` and padding become `jmp rel32` to a stub that
//! calls the exit trampoline and returns with the same `ret`; a direct
//! tail, return-thunk or retpoline jump is retargeted to a stub that
//! calls the trampoline and jumps on to the original target (`mark`), or
//! to the site's convert thunk; an indirect tail's nop becomes a `call`
//! to the mark trampoline or a `jmp` to its convert thunk.

pub mod indirect;
pub mod libcall;

use std::collections::BTreeMap;

use ftail_abi::{SiteKind, NOP5};
use libcall::{CallOut, Callee, Known, LIB_POINTER, LIB_THUNK, RESUME};

use crate::code::jumps::{decode_tail_jump, exit_ret_len, jmp_target, plt_slot, TailJump};
use crate::code::stubs::{
    call_or_jmp, take_area, write_site_stub, write_spec_stub, write_stubs, write_thunk, Area, Stub,
    Trampolines, NEAR, NO_FUNCTION, PAGE, SITE_STUB, STUB, THUNK,
};
use crate::found::modules::{func_name, func_sites, got_symbols, Module, Site};
use crate::found::symtab::{local_functions, LocalFunctions};
use crate::process::config::TailMode;
use crate::record::args;

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
    /// Unchanged bytes of the instruction before `addr` (1 for a `call
    /// *disp(%rip)` site, whose displacement is what changes).
    pub lead: u8,
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

/// A library function called from a module, and its thunk there.
pub struct LibCall {
    /// The symbol its call sites name (`memcpy`).
    pub name: String,
    /// The entry address its events record (the thunk's entry site + 5).
    pub entry: u64,
    /// The module that defines it: `None` for a function of the calling
    /// module itself, `Some("")` when no loaded object defines it.
    pub module: Option<String>,
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
    /// The library functions its call sites call, indexed by
    /// [`SitePlan::func`] − `names.len()`.
    pub libcalls: Vec<LibCall>,
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

impl ModulePlan {
    /// Gives back what planning took: the thunks' unwind registrations
    /// (libgcc must not describe addresses that another module may reuse)
    /// and the stub area, which goes to the pool of areas to reuse.
    pub fn release(&mut self) {
        if let Some(area) = self.area.take() {
            area.release();
        }
    }
}

impl ModulePlan {
    /// Every name a site's function index may refer to: the module's
    /// functions, then the library functions it calls.
    pub fn all_names(&self) -> impl Iterator<Item = &str> {
        self.names
            .iter()
            .copied()
            .chain(self.libcalls.iter().map(|l| l.name.as_str()))
    }

    /// The index in `traced` (see [`ModulePlan::wanted`]) that says
    /// whether tracing is on at all, which is what indirect call sites
    /// follow: their callee is known only when the call is made, and a
    /// library function's thunk, or an instrumented function's own entry,
    /// chooses by name then (`indirect.rs`).
    pub fn enabled_index(&self) -> usize {
        self.names.len() + self.libcalls.len()
    }

    /// What the site should hold given which functions are traced (one
    /// flag per name of [`ModulePlan::all_names`], then whether tracing
    /// is on).
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

/// Plans module `m`: decides each site's patched form and writes the near
/// stubs, site stubs and convert thunks; no site is written here.
pub fn plan_module(m: &Module, t: Trampolines, known: &Known) -> ModulePlan {
    let mode = crate::CONFIG.get().map_or(TailMode::Auto, |c| c.tail);
    let libcalls = crate::CONFIG.get().is_none_or(|c| c.libcall);
    let mut plan = ModulePlan {
        base: m.base,
        text: m.text.clone(),
        names: Vec::with_capacity(m.funcs.len()),
        libcalls: Vec::new(),
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
                unsafe { crate::found::modules::rel(std::ptr::addr_of!((*f).start)) },
                i as u32,
            )
        })
        .collect();
    let got = if mode == TailMode::Mark && !libcalls {
        BTreeMap::new()
    } else {
        got_symbols(m)
    };
    let local = if libcalls {
        local_functions(m, libcall::never_local)
    } else {
        LocalFunctions::default()
    };
    // Library functions by what their thunk calls: index in
    // `plan.libcalls`.
    let mut libs: BTreeMap<Callee, usize> = BTreeMap::new();
    let mut lib_slots: Vec<Callee> = Vec::new();
    let mut lib_of = |slot: Callee, name: &str, plan: &mut ModulePlan| -> usize {
        *libs.entry(slot).or_insert_with(|| {
            let module = match slot {
                Callee::Slot(_) => Some(known.definer(name).unwrap_or("").to_string()),
                Callee::Local(_) => None,
            };
            plan.libcalls.push(LibCall {
                name: name.to_string(),
                entry: 0,
                module,
            });
            lib_slots.push(slot);
            lib_slots.len() - 1
        })
    };
    // Call sites to libraries: (index in `plan.sites`, the call, its
    // library function).
    let mut calls: Vec<(usize, CallOut, usize)> = Vec::new();
    // Indirect call sites: (index in `plan.sites`, the call).
    let mut indirect_calls: Vec<(usize, indirect::IndirectCall)> = Vec::new();
    // Tails into libraries: index in `tails`, library function.
    let mut lib_tails: BTreeMap<usize, usize> = BTreeMap::new();
    // First the sites and what they need; stubs and thunks are written
    // once the area for them is mapped.
    let mut needs: Vec<Option<Stub>> = Vec::new();
    let mut tails: Vec<(usize, TailJump, u64)> = Vec::new();
    let mut stubs_wanted: BTreeMap<Stub, u64> = BTreeMap::new();
    // Each function's entry address (entry site + 5; 0: none), which its
    // exit stubs keep.
    let mut entries: Vec<u64> = vec![0; m.funcs.len()];
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
            if kind == SiteKind::CallIndirect {
                let in_text = |a: u64, len: u64| m.text.iter().any(|s| a >= s.0 && a + len <= s.1);
                if let Some(call) = libcalls
                    .then(|| indirect::decode(site.addr, in_text))
                    .flatten()
                {
                    let lead = call.len - 5;
                    plan.sites.push(SitePlan {
                        addr: call.insn + lead,
                        func: fi as u32,
                        off: call.off,
                        on: OnBytes::Fixed(call.off),
                        resume: call.insn,
                        lead: lead as u8,
                    });
                    needs.push(None);
                    indirect_calls.push((plan.sites.len() - 1, call));
                }
                continue;
            }
            if kind.is_call() {
                if !libcalls {
                    continue;
                }
                if let Some((call, name)) = libcall::resolve(m, &site, kind, &got, known, &local) {
                    let lib = lib_of(call.callee, &name, &mut plan);
                    let lead = u8::from(call.len == 6);
                    plan.sites.push(SitePlan {
                        addr: call.insn + u64::from(lead),
                        func: 0,
                        off: call.off,
                        on: OnBytes::Fixed(call.off),
                        resume: call.insn,
                        lead,
                    });
                    needs.push(None);
                    calls.push((plan.sites.len() - 1, call, lib));
                }
                continue;
            }
            match site_plan(mode, &m.text, &site, kind, fi as u32, &starts, &got) {
                Some((sp, stub, tail)) => {
                    if kind == SiteKind::Entry {
                        entries[fi] = sp.addr + 5;
                    }
                    if let Some(st) = stub {
                        stubs_wanted.insert(st, 0);
                    }
                    if let Some((jump, fallback)) = tail {
                        let into_lib = libcalls
                            .then(|| tail_library(&jump, sp.addr, m, &got, known, &local))
                            .flatten();
                        if let Some((slot, name)) = into_lib {
                            lib_tails.insert(tails.len(), lib_of(slot, &name, &mut plan));
                        }
                        tails.push((plan.sites.len(), jump, fallback));
                    }
                    needs.push(stub);
                    plan.sites.push(sp);
                }
                None => plan.skipped += 1,
            }
        }
    }
    let nfuncs = plan.names.len() as u32;
    let near = m.text.first().map_or(m.base, |s| s.0);
    // Functions whose values are recorded, or with triggers, get a spec
    // stub (record::args, record::triggers).
    let specs: Vec<_> = plan.all_names().map(args::stub_for).collect();
    let spec_stubs = specs.iter().flatten().count() as u64 * args::SPEC_STUB;
    let stubs_len = stubs_wanted.len() as u64 * SITE_STUB + spec_stubs;
    let indirect_len = if indirect_calls.is_empty() {
        0
    } else {
        indirect::REG_STUBS + indirect_calls.len() as u64 * indirect::PER_SITE
    };
    let libs_len = lib_slots.len() as u64 * (LIB_THUNK + LIB_POINTER)
        + calls.len() as u64 * RESUME
        + indirect_len;
    let area_len = (NEAR as u64 * STUB + stubs_len + tails.len() as u64 * THUNK + libs_len + PAGE
        - 1)
        & !(PAGE - 1);
    let Some(area) = take_area(near, area_len) else {
        plan.skipped += plan.sites.len() as u64;
        plan.sites.clear();
        plan.failure = Some("no free memory within reach for its stubs");
        return plan;
    };
    let near_stubs = write_stubs(area, t);
    let mut next = area + NEAR as u64 * STUB;
    for (stub, at) in stubs_wanted.iter_mut() {
        let entry = match *stub {
            Stub::Exit(.., f) | Stub::Jump(1, _, f) => entries[f as usize],
            Stub::Jump(..) => 0,
        };
        write_site_stub(next, *stub, &near_stubs, entry);
        *at = next;
        next += SITE_STUB;
    }
    let mut spec_at = vec![None; specs.len()];
    for (at, spec) in spec_at.iter_mut().zip(&specs) {
        if let Some(spec) = spec {
            write_spec_stub(next, near_stubs[NEAR - 1], spec);
            *at = Some(next);
            next += args::SPEC_STUB;
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
    // Library thunks first: tails into libraries call them.
    let mut lib_thunks: Vec<Option<(u64, u64)>> = Vec::with_capacity(lib_slots.len());
    for (i, &callee) in lib_slots.iter().enumerate() {
        let at = next_thunk;
        let pointer = next_thunk + LIB_THUNK;
        next_thunk += LIB_THUNK + LIB_POINTER;
        let name = &plan.libcalls[i].name;
        // A thunk for a function of the module calls through its pointer
        // word, which then holds that function (its sites are direct
        // calls and never need the word to hold the thunk).
        let (slot, word) = match callee {
            Callee::Slot(slot) => (slot, at),
            Callee::Local(target) => (pointer, target),
        };
        let func = nfuncs + i as u32;
        let (target, merged) = libcall::entry_target(name, spec_at[func as usize], &near_stubs, &t);
        let Some(thunk) = libcall::write_thunk(at, slot, name, merged, &near_stubs) else {
            lib_thunks.push(None);
            continue;
        };
        // SAFETY: the pointer word lies in the writable area mapped for
        // the module's thunks.
        unsafe { std::ptr::write_unaligned(pointer as *mut u64, word) };
        let on = call_or_jmp(0xe8, at, target);
        plan.sites.push(SitePlan {
            addr: at,
            func,
            off: thunk.off,
            on: OnBytes::Fixed(on),
            resume: thunk.resume,
            lead: 0,
        });
        plan.libcalls[i].entry = at + 5;
        layouts.push(thunk.layout);
        lib_thunks.push(Some((at, pointer)));
    }
    for (i, call, lib) in calls {
        let resume_at = next_thunk;
        next_thunk += RESUME;
        let s = &mut plan.sites[i];
        s.func = nfuncs + lib as u32;
        let on = lib_thunks[lib].and_then(|(at, pointer)| libcall::call_on(&call, at, pointer));
        match on {
            Some(on) if libcall::write_resume(resume_at, &call) => {
                s.on = OnBytes::Fixed(on);
                s.resume = resume_at;
            }
            // Out of reach: the call stays as it is, traced or not.
            _ => s.on = OnBytes::Fixed(s.off),
        }
    }
    plan_indirect(&mut plan, indirect_calls, &mut next_thunk, t);
    for (k, (i, jump, fallback)) in tails.into_iter().enumerate() {
        let jump = match lib_tails.get(&k).and_then(|&lib| lib_thunks[lib]) {
            Some((thunk, _)) => TailJump::Direct(thunk),
            None => jump,
        };
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
        unwind: crate::code::unwind::register_thunks(
            &layouts,
            stubs_range,
            local.address("__register_frame_info"),
        ),
    });
    if !plan.libcalls.is_empty() {
        // The library thunks' entry sites are switched like the module's.
        let rx = libc::PF_R | libc::PF_X;
        plan.text.push((area, area + area_len, rx));
    }
    plan
}

/// Writes the stubs of the module's indirect call sites from `*next`
/// on (the pool of thunks first, once per process) and sets their
/// traced forms; a site left without one stays as it is, traced or not.
fn plan_indirect(
    plan: &mut ModulePlan,
    calls: Vec<(usize, indirect::IndirectCall)>,
    next: &mut u64,
    t: Trampolines,
) {
    if calls.is_empty() {
        return;
    }
    let pool = indirect::ensure_pool(t);
    let reg_stubs = *next;
    indirect::write_register_stubs(reg_stubs);
    *next += indirect::REG_STUBS;
    let enabled = plan.enabled_index() as u32;
    for (i, call) in calls {
        let s = &mut plan.sites[i];
        s.func = enabled;
        let at = *next;
        *next += indirect::PER_SITE;
        match pool
            .then(|| indirect::write_site(&call, at, reg_stubs))
            .flatten()
        {
            Some((on, resume)) => {
                s.on = OnBytes::Fixed(on);
                s.resume = resume;
            }
            None => s.on = OnBytes::Fixed(s.off),
        }
    }
}

/// What a library thunk for the library function a tail jump goes to
/// (through a PLT stub or a GOT slot, or a function of the module without
/// an entry site) calls, and its symbol, if it is one to record.
fn tail_library(
    jump: &TailJump,
    at: u64,
    m: &Module,
    got: &BTreeMap<u64, String>,
    known: &Known,
    local: &LocalFunctions,
) -> Option<(Callee, String)> {
    let slot = match jump {
        TailJump::Direct(target) => {
            if let Some(name) = local.name(*target) {
                return libcall::is_local_library(*target, m, known, local)
                    .then(|| (Callee::Local(*target), name.to_string()));
            }
            m.text
                .iter()
                .any(|s| *target >= s.0 && target + 16 <= s.1)
                .then_some(())?;
            plt_slot(*target)?
        }
        TailJump::Indirect {
            bytes,
            rip_disp: Some(d),
            ..
        } => {
            let disp = i32::from_le_bytes(bytes[*d..*d + 4].try_into().ok()?);
            // The jump follows an indirect tail's nop; a direct tail is
            // the site itself.
            let jump_at = at + 5;
            (jump_at + bytes.len() as u64).wrapping_add(disp as i64 as u64)
        }
        TailJump::Indirect { .. } => return None,
    };
    let name = got.get(&slot)?;
    (!libcall::is_leaf(name) && libcall::is_library(name, slot, m, known))
        .then(|| (Callee::Slot(slot), name.clone()))
}

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
        lead: 0,
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
            Some((sp, Some(Stub::Exit(ret, len as u8, func)), None))
        }
        SiteKind::ExitThunk => {
            let target = jmp_target(addr, &off)?;
            sp.resume = target;
            sp.on = OnBytes::Fixed([1; 5]);
            Some((sp, Some(Stub::Jump(1, target, func)), None))
        }
        SiteKind::TailDirect | SiteKind::TailRetpoline | SiteKind::TailIndirect => {
            let (jump_at, stub, fallback) = if kind == SiteKind::TailIndirect {
                (off == NOP5).then_some(())?;
                (addr + 5, None, addr + 5)
            } else {
                let target = jmp_target(addr, &off)?;
                sp.resume = target;
                (addr, Some(Stub::Jump(2, target, NO_FUNCTION)), target)
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
        // Call sites are planned by `libcall`.
        SiteKind::LocalIndirect | SiteKind::Call | SiteKind::CallGot | SiteKind::CallIndirect => {
            None
        }
    }
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

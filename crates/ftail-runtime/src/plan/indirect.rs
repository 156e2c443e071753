//! Indirect calls (`call *operand`) into libraries, recorded around a real
//! `call` like the direct ones (`libcall.rs`), their callee found when
//! the call is made.
//!
//! The compiler side pads an indirect call shorter than 5 bytes with `cs`
//! prefixes, so untraced the one original instruction runs. Traced, the
//! site becomes `call STUB`, which pushes the very return address the
//! original call pushes:
//! * `call *%reg`: a stub per register (`ftail_ind_REG`, reached through
//!   a near stub of the module) copies the register into `r11`;
//! * `call *disp(%base,%index,s)` of 5 bytes: a stub per site loads the
//!   operand into `r11` (`mov`, the operand re-encoded, an `rsp`-based
//!   displacement + 8 for the pushed return address);
//! * `call *disp(%rip)` (6 bytes): like a `call *disp(%rip)` library call
//!   site, only its displacement changes, to a word holding the site's
//!   stub, which loads the original operand.
//!
//! `r11` is no argument register and is clobbered by any call, and so are
//! the flags. The stubs then look the target up in a direct-mapped,
//! lock-free cache ([`FTAIL_IND_CACHE`]: key the target, value where to
//! go): a function with an entry site goes to the function itself (its
//! own entry records it, so it is never counted twice); a library
//! function goes to a thunk of the pool, a library thunk
//! (`libcall::write_thunk`) that calls through its pointer word, which
//! holds the target. A miss takes the slow path ([`ftail_indirect_resolve`],
//! with every register and the x87/SSE/AVX state saved), which decides,
//! takes a thunk of the pool, logs it in `KEY.modules` (an `indirect`
//! line: the thunk's entry, the target's module and offset, which the
//! readers symbolise) and fills the cache. It allocates nothing and
//! takes only its own lock, with signals blocked; the pool is written and
//! its unwind information registered when the first module with indirect
//! sites is planned.
//!
//! Name filters (`-F`, `-N`, `ftail ctl`) choose a library function
//! reached this way by the symbol of the calling module's GOT slot that
//! held the pointer, the name the readers give it: the slow path sends
//! the calls of a target that the selection leaves out straight to it
//! (cached as itself), and each change of the selection sends every
//! target handed a thunk so far to its thunk or straight to it again
//! (only the cache's values change, never its keys). A target no slot
//! names is recorded unless include globs are given. The sites
//! themselves stay patched whenever tracing is on, whichever function
//! holds them: the callee's own entry, or its thunk, chooses.
//!
//! A target that is not a function start of an instrumented module is a
//! library function: code of a shared library, a function of an
//! instrumented module built without ftail, or a PLT stub of the program
//! (unless its slot is bound to an instrumented function). Calls of the
//! functions that must see their real caller (`libcall::NEVER`) go
//! straight to them, unrecorded, and so do calls into the runtime and
//! into code no module holds. A function that returns twice (`setjmp`,
//! `libcall::LEAF`) goes through a leaf thunk of the pool, as a direct
//! call does: recorded as a call that ends at once, the function then
//! entered with its caller's own return address, so a `longjmp` back to
//! it finds its caller's frame as the program left it.

use std::cell::UnsafeCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::code::jumps::plt_slot;
use crate::code::stubs::{
    call_or_jmp, fits_rel32, map_near, rel32, stub_code, write_stubs, Trampolines, NEAR, PAGE, STUB,
};
use crate::plan::libcall::{self, LIB_THUNK};
use crate::process::sync::SlowLock;

/// Entries of the target cache (a power of two).
const CACHE_LEN: usize = 1 << 12;

/// One entry of the target cache: written once, value first (x86 keeps
/// stores in order and loads in order, so a stub that reads the key reads
/// the value written with it).
#[repr(C, align(16))]
pub struct CacheEntry {
    key: AtomicU64,
    value: AtomicU64,
}

/// The target cache the stubs read (`ftail_ind_lookup`).
pub static FTAIL_IND_CACHE: [CacheEntry; CACHE_LEN] = [const {
    CacheEntry {
        key: AtomicU64::new(0),
        value: AtomicU64::new(0),
    }
}; CACHE_LEN];

/// Thunks in the pool: distinct library functions reached by indirect
/// calls in one process; past them, such calls go unrecorded.
const POOL: usize = 1024;
/// Leaf thunks after them, for functions that return twice (`setjmp`
/// and the like, `libcall::LEAF`): a call that ends at once, then a jump
/// to the function, which returns straight to its caller.
const LEAVES: usize = 16;

/// Bytes of a site's stub (`mov OPERAND, %r11; jmp ftail_ind_lookup`).
pub const SITE_STUB: u64 = 16;
/// Bytes of the near stubs a module with indirect sites gets: one per
/// register (the slot of `rsp`, never a call operand, goes to
/// `ftail_ind_lookup` itself).
pub const REG_STUBS: u64 = 16 * STUB;

extern "C" {
    fn ftail_ind_rax();
    fn ftail_ind_rcx();
    fn ftail_ind_rdx();
    fn ftail_ind_rbx();
    fn ftail_ind_rbp();
    fn ftail_ind_rsi();
    fn ftail_ind_rdi();
    fn ftail_ind_r8();
    fn ftail_ind_r9();
    fn ftail_ind_r10();
    fn ftail_ind_r12();
    fn ftail_ind_r13();
    fn ftail_ind_r14();
    fn ftail_ind_r15();
    /// The lookup, with the target in `r11`.
    fn ftail_ind_lookup();
}

/// Where a call through register N goes: `ftail_ind_REG`, and for `r11`
/// (and the slot of `rsp`) the lookup itself.
fn register_entries() -> [u64; 16] {
    let f = |p: unsafe extern "C" fn()| p as usize as u64;
    [
        f(ftail_ind_rax),
        f(ftail_ind_rcx),
        f(ftail_ind_rdx),
        f(ftail_ind_rbx),
        f(ftail_ind_lookup),
        f(ftail_ind_rbp),
        f(ftail_ind_rsi),
        f(ftail_ind_rdi),
        f(ftail_ind_r8),
        f(ftail_ind_r9),
        f(ftail_ind_r10),
        f(ftail_ind_lookup),
        f(ftail_ind_r12),
        f(ftail_ind_r13),
        f(ftail_ind_r14),
        f(ftail_ind_r15),
    ]
}

std::arch::global_asm!(
    r#"
    .macro FTAIL_IND_REG reg
    .text
    .p2align 4
    .globl ftail_ind_\reg
    .hidden ftail_ind_\reg
    .type ftail_ind_\reg, @function
ftail_ind_\reg:
    .cfi_startproc
    mov %\reg, %r11
    jmp ftail_ind_lookup
    .cfi_endproc
    .size ftail_ind_\reg, .-ftail_ind_\reg
    .endm

    FTAIL_IND_REG rax
    FTAIL_IND_REG rcx
    FTAIL_IND_REG rdx
    FTAIL_IND_REG rbx
    FTAIL_IND_REG rbp
    FTAIL_IND_REG rsi
    FTAIL_IND_REG rdi
    FTAIL_IND_REG r8
    FTAIL_IND_REG r9
    FTAIL_IND_REG r10
    FTAIL_IND_REG r12
    FTAIL_IND_REG r13
    FTAIL_IND_REG r14
    FTAIL_IND_REG r15

    # r11: the call's target; [rsp]: the return address the site's call
    # pushed, as the original call pushes it. Clobbers r11 and the flags
    # only (neither is live across a call).
    .p2align 4
    .globl ftail_ind_lookup
    .hidden ftail_ind_lookup
    .type ftail_ind_lookup, @function
ftail_ind_lookup:
    .cfi_startproc
    push %rax
    .cfi_adjust_cfa_offset 8
    push %rcx
    .cfi_adjust_cfa_offset 8
    mov %r11, %rax
    shr $4, %rax
    and ${mask}, %eax
    shl $4, %rax
    lea {cache}(%rip), %rcx
    add %rcx, %rax
    cmp (%rax), %r11
    jne 1f
    mov 8(%rax), %r11
    pop %rcx
    .cfi_adjust_cfa_offset -8
    pop %rax
    .cfi_adjust_cfa_offset -8
    jmp *%r11
    int3
    .cfi_adjust_cfa_offset 16
1:  pop %rcx
    .cfi_adjust_cfa_offset -8
    pop %rax
    .cfi_adjust_cfa_offset -8
    jmp ftail_ind_miss
    int3
    .cfi_endproc
    .size ftail_ind_lookup, .-ftail_ind_lookup

    # The cache missed: ftail_indirect_resolve(target, return address) with every
    # register and the x87/SSE/AVX state saved, then on to where it says.
    .p2align 4
    .type ftail_ind_miss, @function
ftail_ind_miss:
    .cfi_startproc
    push %rax
    .cfi_adjust_cfa_offset 8
    push %rcx
    .cfi_adjust_cfa_offset 8
    push %rdx
    .cfi_adjust_cfa_offset 8
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
    mov %r11, %rdi
    mov 72(%rbp), %rsi               # the call's return address
    and $-64, %rsp
    mov {xsave_size}(%rip), %rax
    test %rax, %rax
    jz 2f
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
    jmp 3f
2:  sub $512, %rsp
    fxsave64 (%rsp)
3:  call {resolve}
    mov %rax, %r11
    mov {xsave_size}(%rip), %rax
    test %rax, %rax
    jz 4f
    mov {xsave_mask}(%rip), %eax
    mov {xsave_mask}+4(%rip), %edx
    xrstor64 (%rsp)
    jmp 5f
4:  fxrstor64 (%rsp)
5:  mov %rbp, %rsp
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
    pop %rdx
    .cfi_adjust_cfa_offset -8
    pop %rcx
    .cfi_adjust_cfa_offset -8
    pop %rax
    .cfi_adjust_cfa_offset -8
    jmp *%r11
    int3
    .cfi_endproc
    .size ftail_ind_miss, .-ftail_ind_miss
"#,
    mask = const CACHE_LEN - 1,
    cache = sym FTAIL_IND_CACHE,
    xsave_size = sym crate::record::state::FTAIL_XSAVE_SIZE,
    xsave_mask = sym crate::record::state::FTAIL_XSAVE_MASK,
    resolve = sym ftail_indirect_resolve,
    options(att_syntax)
);

/// What the slow path knows, behind [`LOCK`].
struct Shared {
    /// Where every function with an entry site starts, sorted.
    starts: Vec<u64>,
    /// Addresses of the functions never called through a thunk.
    never: Vec<u64>,
    /// Addresses of the functions that return twice.
    leaf: Vec<u64>,
    /// The pool, once written.
    pool: Option<Pool>,
    /// The runtime's own load bias (its calls go straight).
    runtime: u64,
    /// Per module with tables (by load bias): its GOT slots bound to
    /// functions, and their symbols, which name a target loaded from one
    /// (the function a program takes the address of, not the
    /// implementation an IFUNC chose: `strlen`, not `__strlen_avx2`).
    slots: Vec<(u64, BTreeMap<u64, String>)>,
    /// Which library functions are recorded, by name (the selection's
    /// copy: see [`select`]).
    chosen: Chosen,
}

/// A copy of the selection the slow path reads (it cannot take the
/// control lock: a signal handler may run it while its thread holds it).
struct Chosen {
    enabled: bool,
    include: Vec<String>,
    exclude: Vec<String>,
}

impl Chosen {
    /// Whether calls of the function named `name` (empty: no GOT slot
    /// named it, and only the readers will) are recorded: as
    /// `Selection::selects`; an unnamed one only while no include glob
    /// is given.
    fn selects(&self, name: &[u8]) -> bool {
        let included = self.include.is_empty()
            || (!name.is_empty() && self.include.iter().any(|g| glob(g.as_bytes(), name)));
        self.enabled && included && !self.exclude.iter().any(|g| glob(g.as_bytes(), name))
    }
}

/// `config::glob` (`*` and `?`) over bytes, without allocating.
fn glob(p: &[u8], t: &[u8]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The thunks the slow path hands out.
struct Pool {
    /// Address of thunk 0 (thunk i at + i × [`LIB_THUNK`]).
    code: u64,
    /// Address of pointer word 0 (each thunk calls through its own).
    words: u64,
    /// Library thunks handed out.
    used: usize,
    /// Leaf thunks handed out (thunks `POOL..POOL + leaves`).
    leaves: usize,
    /// Per thunk: the symbol its target was loaded as, NUL-padded (empty:
    /// the readers symbolise the target).
    names: Vec<[u8; NAME_LEN]>,
}

impl Pool {
    /// The thunks handed out.
    fn handed_out(&self) -> impl Iterator<Item = usize> {
        (0..self.used).chain(POOL..POOL + self.leaves)
    }

    /// The target and address of thunk `i` (handed out).
    fn handed(&self, i: usize) -> (u64, u64) {
        // SAFETY: word i of the pool's writable page, written when the
        // thunk was handed out.
        let target = unsafe { std::ptr::read_volatile((self.words + i as u64 * 8) as *const u64) };
        (target, self.code + i as u64 * LIB_THUNK)
    }
}

/// Bytes kept of a target's symbol.
const NAME_LEN: usize = 128;

struct SharedCell(UnsafeCell<Shared>);

// SAFETY: only reached through `with_shared`, under `LOCK`.
unsafe impl Sync for SharedCell {}

static LOCK: SlowLock = SlowLock::new();
static SHARED: SharedCell = SharedCell(UnsafeCell::new(Shared {
    starts: Vec::new(),
    never: Vec::new(),
    leaf: Vec::new(),
    pool: None,
    runtime: 0,
    slots: Vec::new(),
    chosen: Chosen {
        enabled: true,
        include: Vec::new(),
        exclude: Vec::new(),
    },
}));

fn with_shared<R>(f: impl FnOnce(&mut Shared) -> R) -> R {
    // SAFETY: the lock is held (with signals blocked) while `f` runs, so
    // nothing else reaches the value meanwhile.
    LOCK.with(|| f(unsafe { &mut *SHARED.0.get() }))
}

/// Publishes the function starts and bound GOT slots of `modules`, every
/// loaded module with tables (when modules are found, never in a signal
/// handler: it allocates).
pub fn publish(modules: &[crate::found::modules::Module]) {
    let with_tables = || modules.iter().filter(|m| !m.funcs.is_empty());
    let mut fresh: Vec<u64> = with_tables()
        .flat_map(|m| &m.funcs)
        // SAFETY: records come from these loaded modules' notes.
        .map(|&f| unsafe { crate::found::modules::rel(std::ptr::addr_of!((*f).start)) })
        .collect();
    fresh.sort_unstable();
    let slots = with_tables()
        .map(|m| (m.base, crate::found::modules::bound_slots(m)))
        .collect();
    let old = with_shared(|s| {
        (
            std::mem::replace(&mut s.starts, fresh),
            std::mem::replace(&mut s.slots, slots),
        )
    });
    drop(old);
}

/// Takes the selection (tracing on, include and exclude globs) that the
/// indirect calls' library functions follow from now on, and sends the
/// calls of every target handed a thunk so far where it says: to the
/// thunk, or straight to the function (never in a signal handler: it
/// allocates).
pub fn select(enabled: bool, include: &[String], exclude: &[String]) {
    let fresh = Chosen {
        enabled,
        include: include.to_vec(),
        exclude: exclude.to_vec(),
    };
    let old = with_shared(|s| {
        let old = std::mem::replace(&mut s.chosen, fresh);
        if let Some(pool) = s.pool.as_ref() {
            for i in pool.handed_out() {
                let (target, thunk) = pool.handed(i);
                recache(target, pool_dest(&s.chosen, pool, i, target, thunk));
            }
        }
        old
    });
    drop(old);
}

/// Where calls of `target`, handed thunk `i` of `pool` (at `thunk`), go.
fn pool_dest(chosen: &Chosen, pool: &Pool, i: usize, target: u64, thunk: u64) -> u64 {
    let name = &pool.names[i];
    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN)];
    if chosen.selects(name) {
        thunk
    } else {
        target
    }
}

/// `_dl_find_object`'s result (glibc 2.35, x86-64 layout).
#[repr(C)]
struct DlFindObject {
    flags: u64,
    map_start: *mut libc::c_void,
    map_end: *mut libc::c_void,
    link_map: *mut LinkMap,
    eh_frame: *mut libc::c_void,
    reserved: [u64; 7],
}

/// The start of glibc's `struct link_map`.
#[repr(C)]
struct LinkMap {
    l_addr: u64,
    l_name: *const libc::c_char,
}

type FindObject = unsafe extern "C" fn(*mut libc::c_void, *mut DlFindObject) -> libc::c_int;

/// `_dl_find_object` (async-signal-safe), looked up once: 0 before glibc
/// 2.35, and then no indirect call is recorded.
static FIND_OBJECT: AtomicU64 = AtomicU64::new(0);

/// The load bias and path (NUL-terminated; empty for the main program)
/// of the module holding `addr`.
fn module_of(addr: u64) -> Option<(u64, *const libc::c_char)> {
    let f = FIND_OBJECT.load(Ordering::Relaxed);
    if f == 0 {
        return None;
    }
    // SAFETY: a non-zero value was set from dlsym's `_dl_find_object`.
    let find: FindObject = unsafe { std::mem::transmute::<u64, FindObject>(f) };
    let mut out = std::mem::MaybeUninit::<DlFindObject>::zeroed();
    // SAFETY: `out` is room for the result; the function only reads
    // the loader's lock-free tables.
    if unsafe { find(addr as *mut libc::c_void, out.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: filled by a successful call.
    let map = unsafe { out.assume_init() }.link_map;
    if map.is_null() {
        return None;
    }
    // SAFETY: the loader's link map of a loaded object.
    Some(unsafe { ((*map).l_addr, (*map).l_name) })
}

/// Writes the pool of thunks and learns what the slow path needs; called
/// when the first module with indirect sites is planned (under the
/// control lock). False when the pool cannot be written.
pub fn ensure_pool(t: Trampolines) -> bool {
    if with_shared(|s| s.pool.is_some()) {
        return true;
    }
    // SAFETY: dlsym with a NUL-terminated name.
    let find = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_dl_find_object".as_ptr()) };
    FIND_OBJECT.store(find as u64, Ordering::Relaxed);
    let runtime = module_of(ensure_pool as *const () as usize as u64).map_or(0, |m| m.0);
    let mut never = addresses(libcall::NEVER);
    if libcall::shadow_stack_in_use() {
        never.extend(addresses(libcall::VFORK));
    }
    let leaf = addresses(libcall::LEAF);
    let Some(pool) = write_pool(t) else {
        return false;
    };
    with_shared(|s| {
        s.never = never;
        s.leaf = leaf;
        s.runtime = runtime;
        s.pool = Some(pool);
    });
    true
}

/// Where the functions named `names` are (those the loader finds).
fn addresses(names: &[&str]) -> Vec<u64> {
    let mut out = Vec::new();
    for name in names {
        let Ok(c) = std::ffi::CString::new(*name) else {
            continue;
        };
        // SAFETY: dlsym with a NUL-terminated name.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) };
        if !p.is_null() {
            out.push(p as u64);
        }
    }
    out
}

/// Maps and writes the pool: near stubs, then [`POOL`] library thunks
/// and [`LEAVES`] leaf thunks whose entry sites always call the entry
/// trampoline, read and execute only, their unwind information
/// registered; the pointer words in a writable page within reach.
fn write_pool(t: Trampolines) -> Option<Pool> {
    let thunks = (POOL + LEAVES) as u64;
    let code_len = (NEAR as u64 * STUB + thunks * LIB_THUNK + PAGE - 1) & !(PAGE - 1);
    let words_len = (thunks * 8 + PAGE - 1) & !(PAGE - 1);
    let words = map_near(ftail_ind_lookup as *const () as usize as u64, words_len)?;
    let area = map_near(words, code_len)?;
    let near = write_stubs(area, t);
    let code = area + NEAR as u64 * STUB;
    let mut layouts = Vec::with_capacity(POOL + LEAVES);
    for i in 0..thunks {
        let at = code + i * LIB_THUNK;
        let kind = if i < POOL as u64 {
            ""
        } else {
            libcall::LEAF[0]
        };
        let (target, merged) = libcall::entry_target(kind, None, &near, &t);
        let thunk = libcall::write_thunk(at, words + i * 8, kind, merged, &near)?;
        let entry = call_or_jmp(0xe8, at, target);
        // SAFETY: the thunk lies in the writable area just mapped.
        unsafe { std::ptr::copy_nonoverlapping(entry.as_ptr(), at as *mut u8, 5) };
        layouts.push(thunk.layout);
    }
    // SAFETY: the area is ours; it becomes read+exec only.
    unsafe {
        libc::mprotect(
            area as *mut libc::c_void,
            code_len as usize,
            libc::PROT_READ | libc::PROT_EXEC,
        )
    };
    // Registered for the life of the process: the pool is never freed,
    // so the registration is never taken back. With the shared libgcc
    // only: a module with an unwinder of its own (`-static-libgcc`) does
    // not see the pool's thunks.
    let _kept = crate::code::unwind::register_thunks(&layouts, (0, 0), None);
    Some(Pool {
        code,
        words,
        used: 0,
        leaves: 0,
        names: vec![[0; NAME_LEN]; POOL + LEAVES],
    })
}

/// The slow path of an indirect call site: where the call to `target`
/// goes (the target, or its thunk), cached for the next calls. Runs with
/// every register saved; keeps `errno`.
pub extern "C" fn ftail_indirect_resolve(target: u64, ret: u64) -> u64 {
    let errno = crate::process::files::errno();
    let dest = with_shared(|s| resolve(s, target, ret));
    // SAFETY: errno is thread-local.
    unsafe { *libc::__errno_location() = errno };
    dest
}

fn resolve(s: &mut Shared, target: u64, ret: u64) -> u64 {
    let Some(pool) = s.pool.as_mut() else {
        return target;
    };
    if let Some(i) = pool.handed_out().find(|&i| pool.handed(i).0 == target) {
        let thunk = pool.handed(i).1;
        let dest = pool_dest(&s.chosen, pool, i, target, thunk);
        cache(target, dest);
        return dest;
    }
    let leaf = match classify(s, target) {
        _ if target == 0 => None,
        Call::Straight => None,
        Call::Library => Some(false),
        Call::Leaf => Some(true),
    };
    let Some(leaf) = leaf else {
        cache(target, target);
        return target;
    };
    let Some(pool) = s.pool.as_mut() else {
        return target;
    };
    let i = match leaf {
        false if pool.used < POOL => {
            pool.used += 1;
            pool.used - 1
        }
        true if pool.leaves < LEAVES => {
            pool.leaves += 1;
            POOL + pool.leaves - 1
        }
        _ => return target,
    } as u64;
    let thunk = pool.code + i * LIB_THUNK;
    // SAFETY: word i of the pool's writable page.
    unsafe { std::ptr::write_volatile((pool.words + i * 8) as *mut u64, target) };
    let name = &mut pool.names[i as usize];
    if let Some(symbol) = slot_name(&s.slots, target, ret) {
        let n = symbol.len().min(NAME_LEN - 1);
        name[..n].copy_from_slice(&symbol.as_bytes()[..n]);
    }
    log_thunk(thunk + 5, target, name);
    let dest = pool_dest(&s.chosen, pool, i as usize, target, thunk);
    cache(target, dest);
    dest
}

/// The symbol of a GOT slot of the calling module (whose code holds
/// `ret`, the call's return address, so it is mapped) that holds
/// `target`.
fn slot_name(slots: &[(u64, BTreeMap<u64, String>)], target: u64, ret: u64) -> Option<&str> {
    let (base, _) = module_of(ret)?;
    let (_, named) = slots.iter().find(|(b, _)| *b == base)?;
    named
        .iter()
        // SAFETY: a slot of a mapped module's relocations.
        .find(|(&slot, _)| unsafe { std::ptr::read_volatile(slot as *const u64) } == target)
        .map(|(_, name)| name.as_str())
}

/// How calls of a target are made.
enum Call {
    /// Straight to it, unrecorded (or recorded by its own entry).
    Straight,
    /// Through a library thunk.
    Library,
    /// Through a leaf thunk: it returns twice.
    Leaf,
}

/// How calls of `target` are made: see the module's text.
fn classify(s: &Shared, target: u64) -> Call {
    let instrumented = |a: u64| s.starts.binary_search(&a).is_ok();
    let of = |a: u64| {
        if instrumented(a) || s.never.contains(&a) {
            Call::Straight
        } else if s.leaf.contains(&a) {
            Call::Leaf
        } else {
            Call::Library
        }
    };
    if instrumented(target) || s.never.contains(&target) {
        return Call::Straight;
    }
    let Some((base, _)) = module_of(target) else {
        return Call::Straight;
    };
    if base == s.runtime {
        return Call::Straight;
    }
    // A PLT stub: what its slot holds decides.
    if let Some(slot) = plt_slot(target) {
        if module_of(slot).is_some_and(|m| m.0 == base) {
            // SAFETY: a slot of the module holding the stub, mapped.
            let bound = unsafe { std::ptr::read_volatile(slot as *const u64) };
            if !matches!(of(bound), Call::Library) {
                return of(bound);
            }
        }
    }
    of(target)
}

/// Fills the cache entry of `target`, unless another target has it
/// (entries are never replaced: a stub may be reading one).
fn cache(target: u64, dest: u64) {
    let e = &FTAIL_IND_CACHE[(target >> 4) as usize & (CACHE_LEN - 1)];
    if e.key.load(Ordering::Relaxed) == 0 {
        e.value.store(dest, Ordering::Relaxed);
        e.key.store(target, Ordering::Release);
    }
}

/// Sends the calls of `target` to `dest` from now on, when the cache
/// holds `target`: a stub that read the key reads the old or the new
/// value, and either calls `target` (through its thunk, or straight).
fn recache(target: u64, dest: u64) {
    let e = &FTAIL_IND_CACHE[(target >> 4) as usize & (CACHE_LEN - 1)];
    if e.key.load(Ordering::Relaxed) == target {
        e.value.store(dest, Ordering::Release);
    }
}

/// A line built without allocating.
struct Line {
    buf: [u8; 1024 + 128],
    len: usize,
}

impl Line {
    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn dec(&mut self, mut v: u64) {
        let mut d = [0u8; 20];
        let mut i = d.len();
        loop {
            i -= 1;
            d[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&d[i..]);
    }

    fn hex(&mut self, v: u64) {
        let mut d = [0u8; 18];
        let mut i = d.len();
        let mut v = v;
        loop {
            i -= 1;
            d[i] = b"0123456789abcdef"[(v & 15) as usize];
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        i -= 2;
        d[i] = b'0';
        d[i + 1] = b'x';
        self.push(&d[i..]);
    }

    /// `bytes` as `escape_value` writes a value.
    fn escaped(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'\\' => self.push(b"\\\\"),
                b'\n' => self.push(b"\\n"),
                b'\t' => self.push(b"\\t"),
                b if b < 0x20 || b == 0x7f => {
                    self.push(b"\\x");
                    let h = b"0123456789abcdef";
                    self.push(&[h[(b >> 4) as usize], h[(b & 15) as usize]]);
                }
                b => self.push(&[b]),
            }
        }
    }
}

/// Appends the `indirect` line of the thunk whose events record `entry`
/// and that calls `target` to `KEY.modules`: `indirect TSC ENTRY OFFSET
/// NAME PATH`, the offset from the target's module's load bias, the
/// symbol (NUL-padded `name`) or `-`.
fn log_thunk(entry: u64, target: u64, name: &[u8; NAME_LEN]) {
    let Some((base, path)) = module_of(target) else {
        return;
    };
    let mut line = Line {
        buf: [0; 1024 + 128],
        len: 0,
    };
    line.push(b"indirect ");
    // SAFETY: rdtsc has no memory effects.
    line.dec(unsafe { core::arch::x86_64::_rdtsc() });
    line.push(b" ");
    line.hex(entry);
    line.push(b" ");
    line.hex(target - base);
    line.push(b" ");
    let symbol = &name[..name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN)];
    if symbol.is_empty() {
        line.push(b"-");
    } else {
        line.escaped(symbol);
    }
    line.push(b" ");
    let path = if path.is_null() {
        &[][..]
    } else {
        // SAFETY: the loader's NUL-terminated name of a loaded object.
        unsafe { std::ffi::CStr::from_ptr(path) }.to_bytes()
    };
    if path.is_empty() {
        let mut exe = [0u8; 1024];
        // SAFETY: readlink writes at most exe.len() bytes into `exe`.
        let n = unsafe {
            libc::readlink(
                c"/proc/self/exe".as_ptr(),
                exe.as_mut_ptr().cast(),
                exe.len(),
            )
        };
        if n <= 0 {
            return;
        }
        line.escaped(&exe[..n as usize]);
    } else {
        line.escaped(path);
    }
    line.push(b"\n");
    if let Ok(fd) =
        crate::process::files::open_append(&mut crate::process::key::key_name(b".modules"))
    {
        crate::process::files::write_all(fd, &line.buf[..line.len]);
        crate::process::files::close(fd);
    }
}

/// The `indirect` lines of the thunks handed out so far, again, for a
/// forked child's own `KEY.modules` (the child is single-threaded).
pub fn log_again() {
    let used: Vec<(u64, u64, [u8; NAME_LEN])> = with_shared(|s| {
        s.pool.as_ref().map_or_else(Vec::new, |p| {
            p.handed_out()
                .map(|i| {
                    let (target, thunk) = p.handed(i);
                    (thunk + 5, target, p.names[i])
                })
                .collect()
        })
    });
    for (entry, target, name) in used {
        log_thunk(entry, target, &name);
    }
}

/// An indirect call site, decoded.
pub struct IndirectCall {
    /// The instruction (its first `cs` prefix).
    pub insn: u64,
    /// Its length: 5, or 6 for `call *disp(%rip)`.
    pub len: u64,
    /// What the bytes written hold untraced (at `insn + len - 5`).
    pub off: [u8; 5],
    /// How the target is found.
    pub operand: Operand,
}

/// How an indirect call's target is found.
pub enum Operand {
    /// In register N.
    Register(u8),
    /// By `mov` with this re-encoding (`mov OPERAND, %r11`, for a stub
    /// one return address below the call's stack).
    Memory(Vec<u8>),
    /// At this address (`call *disp(%rip)`).
    Rip(u64),
}

/// Decodes the indirect call site at `at` (checked to lie in the code):
/// `None` for a form the runtime does not patch.
pub fn decode(at: u64, in_text: impl Fn(u64, u64) -> bool) -> Option<IndirectCall> {
    if !in_text(at, 5) {
        return None;
    }
    let six = in_text(at, 6);
    // SAFETY: checked to lie in an executable segment of the module.
    let b: [u8; 6] = unsafe {
        let mut b = [0u8; 6];
        std::ptr::copy_nonoverlapping(at as *const u8, b.as_mut_ptr(), if six { 6 } else { 5 });
        b
    };
    if six && b[0] == 0xff && b[1] == 0x15 {
        let disp = i32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        return Some(IndirectCall {
            insn: at,
            len: 6,
            off: [b[1], b[2], b[3], b[4], b[5]],
            operand: Operand::Rip((at + 6).wrapping_add(disp as i64 as u64)),
        });
    }
    let mut i = 0;
    while i < 4 && b[i] == 0x2e {
        i += 1;
    }
    let rex = if (0x40..=0x47).contains(&b[i]) {
        i += 1;
        b[i - 1]
    } else {
        0
    };
    if i + 2 > 5 || b[i] != 0xff || (b[i + 1] >> 3) & 7 != 2 {
        return None;
    }
    let modrm = b[i + 1];
    let (md, rm) = (modrm >> 6, modrm & 7);
    let off = [b[0], b[1], b[2], b[3], b[4]];
    if md == 3 {
        let reg = rm | ((rex & 1) << 3);
        return (i + 2 == 5 && reg != 4).then_some(IndirectCall {
            insn: at,
            len: 5,
            off,
            operand: Operand::Register(reg),
        });
    }
    let rest = &b[i + 2..5];
    let mov = memory_mov(rex, md, rm, rest)?;
    Some(IndirectCall {
        insn: at,
        len: 5,
        off,
        operand: Operand::Memory(mov),
    })
}

/// `mov OPERAND, %r11` for the memory operand of `ff /2` with `rex`,
/// ModRM fields `md` and `rm` and the bytes after the ModRM (which must
/// be exactly its SIB and displacement), the stack one word lower: an
/// `rsp`-based displacement grows by 8. `None` for RIP-relative forms and
/// when `rest` is not exactly the operand.
fn memory_mov(rex: u8, md: u8, rm: u8, rest: &[u8]) -> Option<Vec<u8>> {
    let mut n = 0;
    let sib = if rm == 4 {
        n += 1;
        Some(*rest.first()?)
    } else {
        None
    };
    if md == 0 && rm == 5 {
        return None;
    }
    let no_base = sib.is_some_and(|s| md == 0 && s & 7 == 5);
    let disp_len = match md {
        1 => 1,
        2 => 4,
        _ if no_base => 4,
        _ => 0,
    };
    if n + disp_len != rest.len() {
        return None;
    }
    let mut disp: i64 = match disp_len {
        1 => i64::from(rest[n] as i8),
        4 => i64::from(i32::from_le_bytes(rest[n..n + 4].try_into().ok()?)),
        _ => 0,
    };
    let rsp_based = sib.is_some_and(|s| s & 7 == 4 && rex & 1 == 0) && !no_base;
    let mut md = md;
    if rsp_based {
        disp += 8;
        md = if (-128..=127).contains(&disp) { 1 } else { 2 };
    }
    let mut out = vec![0x4c | (rex & 3), 0x8b, (md << 6) | (3 << 3) | rm];
    out.extend(sib);
    match (md, no_base) {
        (_, true) => out.extend((disp as i32).to_le_bytes()),
        (1, _) => out.push(disp as i8 as u8),
        (2, _) => out.extend((disp as i32).to_le_bytes()),
        _ => {}
    }
    Some(out)
}

/// Bytes reserved per indirect site in a module's area: its stub, a
/// pointer word (RIP-relative forms) and its resume stub.
pub const PER_SITE: u64 = SITE_STUB + 8 + libcall::RESUME;

/// Writes what the site needs at `at` (its [`PER_SITE`] bytes) and
/// returns its traced form and resume address: `call` to the register's
/// near stub (`reg_stubs`), to the site's stub, or for `call
/// *disp(%rip)` the displacement of the word holding the site's stub.
/// `None` when something is out of reach.
pub fn write_site(c: &IndirectCall, at: u64, reg_stubs: u64) -> Option<([u8; 5], u64)> {
    let stub = at;
    let word = at + SITE_STUB;
    let resume = word + 8;
    let site = c.insn + c.len - 5;
    let lookup = reg_stubs + 4 * STUB;
    let on = match &c.operand {
        Operand::Register(r) => {
            let to = reg_stubs + u64::from(*r) * STUB;
            fits_rel32(site + 5, to).then(|| call_or_jmp(0xe8, site, to))?
        }
        Operand::Memory(mov) => {
            write_stub(stub, mov, lookup)?;
            fits_rel32(site + 5, stub).then(|| call_or_jmp(0xe8, site, stub))?
        }
        Operand::Rip(slot) => {
            let mut mov = vec![0x4c, 0x8b, 0x1d];
            if !fits_rel32(stub + 7, *slot) || !fits_rel32(c.insn + 6, word) {
                return None;
            }
            mov.extend(rel32(stub + 7, *slot));
            write_stub(stub, &mov, lookup)?;
            // SAFETY: the word lies in the writable area mapped for the
            // module's stubs.
            unsafe { std::ptr::write_unaligned(word as *mut u64, stub) };
            let r = rel32(c.insn + 6, word);
            [0x15, r[0], r[1], r[2], r[3]]
        }
    };
    write_resume(resume, c)?;
    Some((on, resume))
}

/// `mov …, %r11; jmp lookup` at `at`.
fn write_stub(at: u64, mov: &[u8], lookup: u64) -> Option<()> {
    let jmp_at = at + mov.len() as u64;
    if mov.len() + 5 > SITE_STUB as usize || !fits_rel32(jmp_at + 5, lookup) {
        return None;
    }
    let mut code = [0xccu8; SITE_STUB as usize];
    code[..mov.len()].copy_from_slice(mov);
    code[mov.len()..mov.len() + 5].copy_from_slice(&call_or_jmp(0xe9, jmp_at, lookup));
    // SAFETY: [at, at + SITE_STUB) lies in the writable area mapped for
    // the module's stubs.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), at as *mut u8, code.len()) };
    Some(())
}

/// The original call, made at `at` (a RIP-relative one relocated), then
/// a jump back after the site: for a thread that meets the site while a
/// live change holds its `int3`.
fn write_resume(at: u64, c: &IndirectCall) -> Option<()> {
    let mut code = [0xccu8; libcall::RESUME as usize];
    let len = c.len as usize;
    // SAFETY: the site's instruction lies in the module's code.
    unsafe { std::ptr::copy_nonoverlapping(c.insn as *const u8, code.as_mut_ptr(), len) };
    if let Operand::Rip(slot) = c.operand {
        if !fits_rel32(at + 6, slot) {
            return None;
        }
        code[2..6].copy_from_slice(&rel32(at + 6, slot));
    }
    let back = at + c.len;
    if !fits_rel32(back + 5, c.insn + c.len) {
        return None;
    }
    code[len..len + 5].copy_from_slice(&call_or_jmp(0xe9, back, c.insn + c.len));
    // SAFETY: [at, at + RESUME) lies in the writable area mapped for the
    // module's stubs.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), at as *mut u8, code.len()) };
    Some(())
}

/// Writes the near stubs of the per-register entry points at `at`
/// ([`REG_STUBS`] bytes).
pub fn write_register_stubs(at: u64) {
    for (i, &to) in register_entries().iter().enumerate() {
        let code = stub_code(to);
        let stub = at + i as u64 * STUB;
        // SAFETY: the stub lies in the writable area mapped for the
        // module's stubs.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), stub as *mut u8, code.len()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_operands_are_loaded_into_r11_one_word_lower() {
        // call *(%rax) -> mov (%rax), %r11
        assert_eq!(memory_mov(0, 0, 0, &[]), Some(vec![0x4c, 0x8b, 0x18]));
        // call *8(%rbx) -> mov 8(%rbx), %r11
        assert_eq!(memory_mov(0, 1, 3, &[8]), Some(vec![0x4c, 0x8b, 0x5b, 8]));
        // call *(%rax,%rbx,8) -> mov (%rax,%rbx,8), %r11
        assert_eq!(
            memory_mov(0, 0, 4, &[0xd8]),
            Some(vec![0x4c, 0x8b, 0x1c, 0xd8])
        );
        // call *(%rsp) -> mov 8(%rsp), %r11
        assert_eq!(
            memory_mov(0, 0, 4, &[0x24]),
            Some(vec![0x4c, 0x8b, 0x5c, 0x24, 8])
        );
        // call *0x7c(%rsp) -> mov 0x84(%rsp), %r11 (disp32)
        assert_eq!(
            memory_mov(0, 1, 4, &[0x24, 0x7c]),
            Some(vec![0x4c, 0x8b, 0x9c, 0x24, 0x84, 0, 0, 0])
        );
        // call *(%r12) keeps its base: mov (%r12), %r11
        assert_eq!(
            memory_mov(0x41, 0, 4, &[0x24]),
            Some(vec![0x4d, 0x8b, 0x1c, 0x24])
        );
        // call *8(%r8) -> mov 8(%r8), %r11
        assert_eq!(
            memory_mov(0x41, 1, 0, &[8]),
            Some(vec![0x4d, 0x8b, 0x58, 8])
        );
        // RIP-relative forms have their own path; a wrong length is refused.
        assert_eq!(memory_mov(0, 0, 5, &[0, 0, 0, 0]), None);
        assert_eq!(memory_mov(0, 1, 3, &[]), None);
    }
}

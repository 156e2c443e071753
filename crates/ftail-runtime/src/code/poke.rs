//! Writing code bytes, before other threads exist or while they run.
//!
//! Quiescent writes (start-up, a library being mapped) just make the text
//! writable, copy, and restore the protection.
//!
//! Live writes follow the kernel's `text_poke_bp` protocol, because other
//! threads may be executing the very bytes that change and x86 only
//! guarantees cross-modifying code for a single-byte `int3`:
//! 1. write `int3` over the first byte of every site, serialise every core;
//! 2. write bytes 1–4 of the new instruction, serialise;
//! 3. write the new first byte, serialise.
//!
//! "Serialise" is `membarrier(PRIVATE_EXPEDITED_SYNC_CORE)`: every thread
//! of the process executes a core-serialising instruction before it runs
//! user code again. A thread that reaches a site while it holds `int3`
//! traps; [`on_sigtrap`] lets it do what the untraced site does (that
//! call records nothing): go on past an entry's or indirect tail's nop,
//! to a `ret` like an exit site's (a real `ret` instruction, so a shadow
//! stack stays in step), or to a jump site's target; or it restarts the
//! site once it is complete. Every instruction the protocol writes is a
//! single instruction, so a thread is never left in the middle of one.
//!
//! An exit site's bytes 1–4 are `int3` padding no thread ever executes,
//! and a jump site's are its rel32: could the switch be a single store
//! of the first byte once the rest is in place? x86 does not promise it:
//! a core that runs code another core modifies must execute a
//! serialising instruction before it runs the new code (Intel SDM vol. 3,
//! 8.1.3, cross-modifying code), and only a single-byte `int3` is known
//! to be safe without one (the kernel's `text_poke_bp` relies on exactly
//! that). A `ret` (c3) turned into `jmp` (e9) is a different first byte,
//! which a core may execute with stale bytes after it. So every live
//! change keeps the three steps; they cost only at switching time.

use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

const PAGE: u64 = 4096;

/// `membarrier` commands (linux/membarrier.h).
const MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_long = 1 << 5;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_long = 1 << 6;

/// Text segments (start, end, PF_* flags) and the 5-byte writes to make
/// in them: (address, bytes, lead), `lead` being how many unchanged bytes
/// of the instruction precede the address (1 for a `call *disp(%rip)`
/// site, whose displacement is what changes; 0 elsewhere), so that the
/// live protocol puts its `int3` on the instruction's first byte.
pub struct Batch<'a> {
    pub text: &'a [(u64, u64, u32)],
    pub writes: &'a [(u64, [u8; 5], u8)],
}

/// Writes a few code bytes at `at` while no other thread can execute
/// them; false when the page protection cannot be changed.
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

/// Applies `batch`; `live` when other threads may be running the code.
pub fn write_sites(batch: &Batch, live: bool) {
    for &(start, end, flags) in batch.text {
        let here: Vec<(u64, [u8; 5], u8)> = batch
            .writes
            .iter()
            .copied()
            .filter(|w| w.0 - u64::from(w.2) >= start && w.0 + 5 <= end)
            .collect();
        if here.is_empty() {
            continue;
        }
        let lo = start & !(PAGE - 1);
        let len = (((end + PAGE - 1) & !(PAGE - 1)) - lo) as usize;
        let mut prot = libc::PROT_EXEC;
        if flags & libc::PF_R != 0 {
            prot |= libc::PROT_READ;
        }
        // SAFETY: [lo, lo+len) is a mapped executable segment of a loaded
        // module; while it is writable other threads keep executing it
        // (the mapping stays executable).
        if unsafe { libc::mprotect(lo as *mut libc::c_void, len, prot | libc::PROT_WRITE) } != 0 {
            continue;
        }
        if live {
            write_live(&here, lo, len, prot);
        } else {
            for (addr, bytes, _) in &here {
                // SAFETY: quiescent: nothing executes the site; the page
                // is writable.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), *addr as *mut u8, 5) };
            }
        }
        // SAFETY: as above; the segment gets its own protection back.
        unsafe { libc::mprotect(lo as *mut libc::c_void, len, prot) };
    }
}

/// The int3-first protocol over writable text.
fn write_live(writes: &[(u64, [u8; 5], u8)], lo: u64, len: usize, prot: i32) {
    install_trap_handler();
    let sync = || sync_cores(lo, len, prot);
    // Every address is a 5-byte site in the writable segment (after its
    // instruction's `lead` unchanged bytes); byte stores are single-copy
    // atomic, and between the steps every core is serialised, so a
    // thread sees the old instruction, `int3`, or the new instruction —
    // never a mix.
    let store = |at: u64, b: u8| {
        // SAFETY: as above.
        unsafe { std::ptr::write_volatile(at as *mut u8, b) }
    };
    let load = |at: u64| {
        // SAFETY: as above.
        unsafe { std::ptr::read_volatile(at as *const u8) }
    };
    // The first byte of each instruction, once complete: the new one, or
    // the unchanged lead byte.
    let firsts: Vec<u8> = writes
        .iter()
        .map(|&(addr, bytes, lead)| if lead == 0 { bytes[0] } else { load(addr - 1) })
        .collect();
    for &(addr, _, lead) in writes {
        store(addr - u64::from(lead), 0xcc);
    }
    sync();
    for &(addr, bytes, lead) in writes {
        for (i, &b) in bytes.iter().enumerate().skip(usize::from(lead == 0)) {
            store(addr + i as u64, b);
        }
    }
    sync();
    for (&(addr, _, lead), &first) in writes.iter().zip(&firsts) {
        store(addr - u64::from(lead), first);
    }
    sync();
}

/// The process for which the sync-core membarrier is registered (it is
/// per address space: a forked child registers again).
static MEMBARRIER_PID: AtomicU32 = AtomicU32::new(0);

/// Makes every thread of the process execute a serialising instruction
/// before it runs user code again. Without the sync-core membarrier
/// (kernels before 4.16), a protection change on the segment does it: its
/// TLB shootdown interrupts every core running this process, and the
/// return from that interrupt serialises.
fn sync_cores(lo: u64, len: usize, prot: i32) {
    // SAFETY: getpid and membarrier have no memory effects on this process.
    let pid = unsafe { libc::getpid() } as u32;
    if MEMBARRIER_PID.load(Ordering::Relaxed) != pid {
        // SAFETY: as above.
        let r = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
                0,
                0,
            )
        };
        if r == 0 {
            MEMBARRIER_PID.store(pid, Ordering::Relaxed);
        }
    }
    if MEMBARRIER_PID.load(Ordering::Relaxed) == pid {
        // SAFETY: as above.
        let r = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE,
                0,
                0,
            )
        };
        if r == 0 {
            return;
        }
    }
    // SAFETY: the segment is ours to re-protect (see write_sites); it ends
    // writable as it was.
    unsafe {
        libc::mprotect(lo as *mut libc::c_void, len, prot);
        libc::mprotect(lo as *mut libc::c_void, len, prot | libc::PROT_WRITE);
    }
}

// ---------------------------------------------------------------------
// The SIGTRAP handler.

/// Each planned module's sites, sorted by address, with where a thread
/// that traps on one goes on (see [`on_site_trap`]), for the handler. A
/// module's slot is emptied when it is unloaded and reused by the next
/// module; its table is freed then unless a handler is running (it may be
/// reading it), in which case it is left allocated for good.
const MAX_TABLES: usize = 1024;
type Table = Box<[(u64, u64)]>;
static TABLES: [AtomicPtr<Table>; MAX_TABLES] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_TABLES];
/// One past the highest slot ever used (the handler scans that far).
static TABLES_USED: AtomicUsize = AtomicUsize::new(0);
/// SIGTRAP handlers running now, in any thread.
static HANDLERS_RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Publishes a module's sites (address, where a thread that traps on it
/// mid-change goes on); returns its slot. Called under the control lock
/// (one publisher at a time).
pub fn publish_sites(mut addrs: Vec<(u64, u64)>) -> Option<usize> {
    addrs.sort_unstable();
    let slot = TABLES
        .iter()
        .position(|t| t.load(Ordering::Acquire).is_null())?;
    let table = Box::into_raw(Box::new(addrs.into_boxed_slice()));
    TABLES[slot].store(table, Ordering::Release);
    TABLES_USED.fetch_max(slot + 1, Ordering::AcqRel);
    Some(slot)
}

/// Withdraws a module's table (the module is being unloaded).
pub fn withdraw_sites(slot: usize) {
    let table = TABLES[slot].swap(std::ptr::null_mut(), Ordering::SeqCst);
    // A handler counts itself before it loads any table: when none runs
    // now, none can still hold this one (it is no longer published).
    if !table.is_null() && HANDLERS_RUNNING.load(Ordering::SeqCst) == 0 {
        // SAFETY: published by `publish_sites` from a Box, now unreachable.
        drop(unsafe { Box::from_raw(table) });
    }
}

/// Where a thread that trapped on the site at `addr` goes on while the
/// site is still `int3`, if `addr` is a site.
fn resume_of(addr: u64) -> Option<u64> {
    let used = TABLES_USED.load(Ordering::Acquire).min(MAX_TABLES);
    TABLES[..used].iter().find_map(|t| {
        let t = t.load(Ordering::SeqCst);
        if t.is_null() {
            return None;
        }
        // SAFETY: a table loaded while HANDLERS_RUNNING counts this
        // handler is not freed until the handler returns (see
        // withdraw_sites).
        let table = unsafe { &*t };
        let i = table.binary_search_by_key(&addr, |e| e.0).ok()?;
        Some(table[i].1)
    })
}

/// The handler that was installed before ours (to chain to).
static PREVIOUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(std::ptr::null_mut());

/// Installs [`on_sigtrap`] unless it is already the handler; the program
/// may have installed its own since the last batch.
fn install_trap_handler() {
    // SAFETY: sigaction with valid pointers; `old` is leaked so the handler
    // can read it at any time.
    unsafe {
        let mut cur: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGTRAP, std::ptr::null(), &mut cur);
        if cur.sa_sigaction == on_sigtrap as *const () as usize {
            return;
        }
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_sigtrap as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER | libc::SA_RESTART;
        libc::sigemptyset(&mut act.sa_mask);
        let old = Box::into_raw(Box::new(std::mem::zeroed::<libc::sigaction>()));
        if libc::sigaction(libc::SIGTRAP, &act, old) == 0 {
            PREVIOUS.store(old, Ordering::Release);
        }
    }
}

/// SIGTRAP: a thread hit a site while it held `int3` (its first byte, so
/// RIP is the site + 1). While the site is still `int3` the thread does
/// what the untraced site does (see the module docs); once it is complete
/// the thread runs it again. Any other trap goes to the previous handler,
/// or takes the default action.
extern "C" fn on_sigtrap(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    HANDLERS_RUNNING.fetch_add(1, Ordering::SeqCst);
    let ours = on_site_trap(ctx);
    HANDLERS_RUNNING.fetch_sub(1, Ordering::SeqCst);
    if !ours {
        chain(sig, info, ctx);
    }
}

/// Steps the thread over or back onto the site it trapped on; false when
/// the trap was not at a site.
fn on_site_trap(ctx: *mut libc::c_void) -> bool {
    let uc = ctx.cast::<libc::ucontext_t>();
    // SAFETY: the kernel passes this thread's saved context.
    let rip = unsafe { (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] } as u64;
    let site = rip.wrapping_sub(1);
    if let Some(untraced) = resume_of(site) {
        // SAFETY: `site` is a mapped, executable site address.
        let still_int3 = unsafe { std::ptr::read_volatile(site as *const u8) } == 0xcc;
        let resume = if still_int3 { untraced } else { site };
        // SAFETY: as above; the resume point is an instruction boundary.
        unsafe { (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] = resume as i64 };
        return true;
    }
    false
}

fn chain(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = PREVIOUS.load(Ordering::Acquire);
    let handler = if prev.is_null() {
        libc::SIG_DFL
    } else {
        // SAFETY: `prev` is the leaked previous action.
        unsafe { (*prev).sa_sigaction }
    };
    match handler {
        libc::SIG_IGN => {}
        libc::SIG_DFL => {
            // SAFETY: restoring the default action and raising again ends
            // the process as the trap would have without us (SA_NODEFER:
            // the signal is not blocked here).
            unsafe {
                libc::signal(libc::SIGTRAP, libc::SIG_DFL);
                libc::raise(libc::SIGTRAP);
            }
        }
        f => {
            // SAFETY: the program installed this handler for SIGTRAP with
            // these flags; it is called as the kernel would have.
            unsafe {
                if (*prev).sa_flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) =
                        std::mem::transmute(f);
                    f(sig, info, ctx);
                } else {
                    let f: extern "C" fn(i32) = std::mem::transmute(f);
                    f(sig);
                }
            }
        }
    }
}

//! Writing the sites: `call rel32` to a trampoline, through a near stub
//! when the trampoline is out of rel32 range.
//!
//! Patching happens at start-up, before `main` and before any thread of
//! the program exists, so no other thread can be executing the bytes being
//! written. (Live patching while threads run — the int3-first protocol —
//! is not implemented yet.) Each site is checked to still hold the 5-byte
//! nop before it is written: anything else is left alone.

use ftail_abi::{SiteKind, NOP5};

use crate::modules::{func_name, func_sites, Module};

/// Addresses of the trampolines.
#[derive(Clone, Copy)]
pub struct Trampolines {
    /// `ftail_entry`.
    pub entry: u64,
    /// `ftail_exit`.
    pub exit: u64,
    /// `ftail_tail_mark`.
    pub tail_mark: u64,
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
}

const PAGE: u64 = 4096;

fn fits_rel32(from: u64, to: u64) -> bool {
    let d = to.wrapping_sub(from + 5) as i64;
    d >= i64::from(i32::MIN) && d <= i64::from(i32::MAX)
}

/// Stubs `jmp *0(%rip); .quad target` for each trampoline, mapped within
/// rel32 range of `near`.
fn near_stubs(near: u64, t: Trampolines) -> Option<Trampolines> {
    let targets = [t.entry, t.exit, t.tail_mark];
    for step in 1..64u64 {
        for hint in [near.wrapping_sub(step << 24), near.wrapping_add(step << 24)] {
            let hint = hint & !(PAGE - 1);
            // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing
            // mapping; we own the new anonymous page.
            let p = unsafe {
                libc::mmap(
                    hint as *mut libc::c_void,
                    PAGE as usize,
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
            if !fits_rel32(near, base) || !fits_rel32(near, base + PAGE) {
                // SAFETY: unmapping the page we just mapped.
                unsafe { libc::munmap(p, PAGE as usize) };
                continue;
            }
            let mut addrs = [0u64; 3];
            for (i, &target) in targets.iter().enumerate() {
                let stub = base + i as u64 * 16;
                let mut code = [0u8; 16];
                code[..6].copy_from_slice(&[0xff, 0x25, 0, 0, 0, 0]);
                code[6..14].copy_from_slice(&target.to_le_bytes());
                code[14] = 0xcc;
                code[15] = 0xcc;
                // SAFETY: the stub lies in the writable page mapped above.
                unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), stub as *mut u8, 16) };
                addrs[i] = stub;
            }
            // SAFETY: the page is ours; it becomes read+exec only.
            unsafe { libc::mprotect(p, PAGE as usize, libc::PROT_READ | libc::PROT_EXEC) };
            return Some(Trampolines {
                entry: addrs[0],
                exit: addrs[1],
                tail_mark: addrs[2],
            });
        }
    }
    None
}

fn call_bytes(site: u64, target: u64) -> [u8; 5] {
    let rel = target.wrapping_sub(site + 5) as i32;
    let r = rel.to_le_bytes();
    [0xe8, r[0], r[1], r[2], r[3]]
}

/// Patches the selected functions of `m`.
pub fn patch_module(m: &Module, t: Trampolines) -> Patched {
    let cfg = crate::CONFIG.get().expect("configured before patching");
    let mut done = Patched::default();
    let mut writes: Vec<(u64, [u8; 5])> = Vec::new();
    let near = m.text.first().map_or(m.base, |s| s.0);
    let targets = if fits_rel32(near, t.entry) && m.text.iter().all(|s| fits_rel32(s.1, t.entry)) {
        Some(t)
    } else {
        near_stubs(near, t)
    };
    let Some(targets) = targets else {
        return done;
    };
    for &f in &m.funcs {
        // SAFETY: `f` came from this loaded module's notes.
        let name = unsafe { func_name(f) };
        if !cfg.selects(name) {
            continue;
        }
        done.functions += 1;
        // SAFETY: as above.
        for site in unsafe { func_sites(f) } {
            let target = match SiteKind::from_u8(site.record.kind) {
                Some(SiteKind::Entry) => targets.entry,
                Some(SiteKind::Exit | SiteKind::ExitThunk) => targets.exit,
                Some(SiteKind::TailDirect | SiteKind::TailIndirect | SiteKind::TailRetpoline) => {
                    targets.tail_mark
                }
                _ => continue,
            };
            if !m
                .text
                .iter()
                .any(|s| site.addr >= s.0 && site.addr + 5 <= s.1)
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
            writes.push((site.addr, call_bytes(site.addr, target)));
        }
    }
    write_text(m, &writes);
    done.sites = writes.len() as u64;
    done
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

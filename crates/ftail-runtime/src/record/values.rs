//! Argument and return values written as payload records
//! (`ftail_abi::argspec`): arguments from the registers and stack a slow
//! path saved ([`write_args`]), return values captured by the exit slow
//! paths ([`capture_ret`]) and written right before the close of the
//! frame they belong to ([`write_ret`], from `frames::pop`). Memory a
//! value points at is read with `process_vm_readv` on this process
//! ([`read_memory`]), which fails with `EFAULT` instead of faulting.

use ftail_abi::argspec::{
    class, value, ArgSpec, FnSpec, Ty, LOC_INT, LOC_NONE, LOC_STACK, LOC_XMM, MAX_STRING,
};
use ftail_abi::trace::{compact, EventKind};

use crate::record::state::{ThreadState, RET_TY_SHIFT};
use crate::record::write::reserve;

/// Where the arguments were saved by `ftail_entry_spec`.
pub struct Regs {
    /// `FTAIL_SLOW`'s frame.
    pub frame: u64,
    /// The saved SSE state.
    pub area: u64,
    /// The function's CFA.
    pub cfa: u64,
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
            class::STD_STRING => {
                let mut first = [0u8; 8];
                if read_memory(raw, &mut first) != 8 {
                    return self.push(a.ty, value::BAD_POINTER, &raw.to_le_bytes());
                }
                let chars = ArgSpec {
                    ty: Ty::new(class::STRING, 8),
                    ..*a
                };
                self.push_value(&chars, u64::from_le_bytes(first))
            }
            // Nothing of it is read: its name is enough (see argspec).
            class::AGGREGATE => self.push(a.ty, 0, &u32::from(a.aux).to_le_bytes()),
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
        let Some(slot) = reserve(st, size, EventKind::Entry) else {
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

pub fn write_args(st: &mut ThreadState, spec: &FnSpec, regs: &Regs) {
    let mut p = Payload::new();
    for a in spec.args() {
        let ok = match a.loc {
            _ if a.ty.class() == class::AGGREGATE => p.push_value(a, 0),
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
pub fn read_memory(addr: u64, out: &mut [u8]) -> usize {
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

/// Called by `frames::pop` before a flagged frame's close (`word` is its
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

#[cfg(test)]
mod tests {
    use super::*;
    use ftail_abi::argspec::class;

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

//! Reading the program's own code where planning needs more than the
//! site tables say: the jump after a tail site, a PLT stub's slot, an
//! exit site's `ret` and a `jmp rel32`'s target.

/// The tail jump that follows a tail site, decoded as far as a thunk
/// needs it.
pub enum TailJump {
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
pub fn decode_tail_jump(at: u64) -> Option<TailJump> {
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
pub fn plt_slot(at: u64) -> Option<u64> {
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

/// A `ret` the compiler side left as an exit site: `ret`, `rep ret`,
/// `bnd ret` or `ret $n`, padded with `int3` to 5 bytes; its length.
pub fn exit_ret_len(b: &[u8; 5]) -> Option<usize> {
    let len = match b {
        [0xc3, ..] => 1,
        [0xf3 | 0xf2, 0xc3, ..] => 2,
        [0xc2, ..] => 3,
        _ => return None,
    };
    b[len..].iter().all(|&x| x == 0xcc).then_some(len)
}

/// The target of a `jmp rel32` at `at` holding `b`.
pub fn jmp_target(at: u64, b: &[u8; 5]) -> Option<u64> {
    (b[0] == 0xe9).then(|| {
        let rel = i32::from_le_bytes([b[1], b[2], b[3], b[4]]);
        (at + 5).wrapping_add(rel as i64 as u64)
    })
}

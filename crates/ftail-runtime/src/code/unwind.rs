//! Unwind information for the convert thunks and the site stubs, which
//! are written at run time: one `.eh_frame`-format block per module (a CIE, one FDE per
//! thunk, a zero terminator) registered with libgcc's `__register_frame`,
//! so that a C++ exception or a backtrace taken inside a tail callee
//! passes through the thunk to the tail caller's caller; and given to gdb
//! through its JIT interface (`gdbjit.rs`).
//!
//! While the callee runs, the thunk's frame is unusual: its return address
//! is not on the stack but in its side-stack entry, and rbx points at that
//! entry (`tramp.rs`). The rules for the `call` to the callee say so:
//! * CFA = rsp + 8 — a frame of its own: libgcc tells frames apart by
//!   their CFA, and rsp itself is the callee's CFA;
//! * the caller's rsp = CFA − 8 (where the tail caller's return address
//!   was);
//! * rbx points at the thunk's side-stack entry, whose `base` field
//!   (+24) points at the first entry of its chain (itself, unless thunks
//!   are chained on one stack slot): the return address is saved at
//!   [base], the caller's rbx at [base+16] (`DW_CFA_expression` with
//!   `DW_OP_breg3 24; DW_OP_deref`). A chain thus unwinds as one frame.
//!
//! Before the call and on the fallback path the thunk was jumped to with
//! the return address on the stack, which is the CIE's default rule.

extern "C" {
    /// libgcc: registers a block of CIEs and FDEs, ended by a zero word,
    /// with `object` as libgcc's bookkeeping for it; both must stay
    /// mapped while registered. (`__register_frame` would allocate the
    /// object with the program's `malloc`.)
    fn __register_frame_info(begin: *const u8, object: *mut u8);
    /// libgcc: forgets the block registered at `begin`; returns its object.
    fn __deregister_frame_info(begin: *const u8) -> *mut u8;
}

/// A module's registered thunk unwind information, owned until
/// [`deregister`].
pub struct Registration {
    block: *mut [u8],
    object: *mut [u8],
    /// The bookkeeping of the module's own unwinder, if it has one.
    own_object: Option<*mut [u8]>,
    jit: crate::code::gdbjit::Entry,
}

// SAFETY: the pointers are owned allocations, only touched by planning
// and unloading, both under the control lock.
unsafe impl Send for Registration {}

/// Bytes of libgcc's `struct object` (seven words in GCC 12), with room
/// to spare.
const LIBGCC_OBJECT: usize = 16 * 8;

// DWARF call frame instructions and operations (DWARF 5, 6.4.2, 2.5).
const DW_CFA_ADVANCE_LOC: u8 = 0x40;
const DW_CFA_OFFSET: u8 = 0x80;
const DW_CFA_RESTORE: u8 = 0xc0;
const DW_CFA_DEF_CFA: u8 = 0x0c;
const DW_CFA_EXPRESSION: u8 = 0x10;
const DW_CFA_VAL_OFFSET: u8 = 0x14;
const DW_OP_BREG3: u8 = 0x73;
const DW_OP_DEREF: u8 = 0x06;
const DW_OP_PLUS_UCONST: u8 = 0x23;
// x86-64 DWARF register numbers.
const RBX: u8 = 3;
const RSP: u8 = 7;
const RA: u8 = 16;

/// Registers the unwind info of a module's thunks and site stubs
/// (`stubs`: their address range; nothing when there are neither), with
/// the shared libgcc and, for a module linked with an unwinder of its
/// own (`-static-libgcc`), with that one too at `own_register` (its
/// `__register_frame_info`): its exceptions are unwound by that copy,
/// which knows nothing of what the shared one was given.
pub fn register_thunks(
    thunks: &[ThunkLayout],
    stubs: (u64, u64),
    own_register: Option<u64>,
) -> Option<Registration> {
    if thunks.is_empty() && stubs.1 == 0 {
        return None;
    }
    // Both stay allocated while registered: libgcc reads them.
    let block = Box::into_raw(eh_frame(thunks, stubs).into_boxed_slice());
    let object = Box::into_raw(vec![0u8; LIBGCC_OBJECT].into_boxed_slice());
    // SAFETY: `block` is a well-formed .eh_frame block (CIE, FDEs, zero
    // terminator) and `object` zeroed room for libgcc's bookkeeping; both
    // stay allocated until `deregister`.
    unsafe { __register_frame_info(block.cast::<u8>(), object.cast::<u8>()) };
    let own_object = own_register.map(|at| {
        let own = Box::into_raw(vec![0u8; LIBGCC_OBJECT].into_boxed_slice());
        // SAFETY: `at` is where the module's `.symtab` (its build id
        // checked) says its `__register_frame_info` starts, the same
        // libgcc function as above; `own` is zeroed room for its
        // bookkeeping, and both it and `block` stay allocated while the
        // module is loaded (its unwinder goes with it).
        unsafe {
            let register: unsafe extern "C" fn(*const u8, *mut u8) = std::mem::transmute(at);
            register(block.cast::<u8>(), own.cast::<u8>());
        }
        own
    });
    // SAFETY: `block` is live (see above).
    let eh: &[u8] = unsafe { &*block };
    let ranges = || {
        thunks
            .iter()
            .map(|t| (t.start, t.start + t.len))
            .chain((stubs.1 > 0).then_some((stubs.0, stubs.0 + stubs.1)))
    };
    let start = ranges().map(|r| r.0).min().unwrap_or(0);
    let end = ranges().map(|r| r.1).max().unwrap_or(0);
    let named: Vec<crate::code::gdbjit::Thunk> = thunks
        .iter()
        .map(|t| crate::code::gdbjit::Thunk {
            start: t.start,
            len: t.len,
        })
        .collect();
    let jit = crate::code::gdbjit::register((start, end - start), &named, eh);
    Some(Registration {
        block,
        object,
        own_object,
        jit,
    })
}

/// Takes a module's thunks' unwind information back from libgcc and gdb
/// (the module is unloaded) and frees it.
pub fn deregister(r: Registration) {
    crate::code::gdbjit::unregister(r.jit);
    // SAFETY: `block` was registered by `register_thunks` and not since
    // deregistered; afterwards libgcc no longer reads it or the object,
    // and both were allocated as boxed slices there.
    unsafe {
        __deregister_frame_info(r.block.cast::<u8>());
        drop(Box::from_raw(r.block));
        drop(Box::from_raw(r.object));
        // The module's own unwinder, if it had one, is unmapped with it.
        if let Some(own) = r.own_object {
            drop(Box::from_raw(own));
        }
    }
}

/// The `.eh_frame` block for `thunks` and the site stubs in `stubs`.
fn eh_frame(thunks: &[ThunkLayout], stubs: (u64, u64)) -> Vec<u8> {
    let mut out = Vec::new();
    // CIE: version 1, no augmentation, code alignment 1, data alignment
    // -8, return address column 16; CFA = rsp + 8, RA at CFA − 8.
    let cie = entry(&mut out, 0, |b| {
        b.extend([1, 0, 1, 0x78, RA]);
        b.extend([DW_CFA_DEF_CFA, RSP, 8, DW_CFA_OFFSET | RA, 1]);
    });
    if stubs.1 > 0 {
        // The site stubs run in the frame of the function they end, its
        // return address on top of the stack: the CIE's rule throughout.
        let fde = entry(&mut out, 0, |b| {
            b.extend(stubs.0.to_le_bytes());
            b.extend(stubs.1.to_le_bytes());
        });
        let pointer_field = fde + 4;
        let cie_pointer = (pointer_field - cie) as u32;
        out[pointer_field..pointer_field + 4].copy_from_slice(&cie_pointer.to_le_bytes());
    }
    for t in thunks {
        // The CIE pointer (patched below) is relative to its own field.
        let fde = entry(&mut out, 0, |b| {
            b.extend(t.start.to_le_bytes());
            b.extend(t.len.to_le_bytes());
            b.push(DW_CFA_ADVANCE_LOC | t.call as u8);
            b.extend([DW_CFA_EXPRESSION, RA, 3, DW_OP_BREG3, 24, DW_OP_DEREF]);
            b.extend([DW_CFA_EXPRESSION, RBX, 5, DW_OP_BREG3, 24, DW_OP_DEREF]);
            b.extend([DW_OP_PLUS_UCONST, 16]);
            b.extend([DW_CFA_VAL_OFFSET, RSP, 1]);
            b.push(DW_CFA_ADVANCE_LOC | (t.fallback - t.call) as u8);
            b.extend([
                DW_CFA_RESTORE | RA,
                DW_CFA_RESTORE | RBX,
                DW_CFA_RESTORE | RSP,
            ]);
        });
        let pointer_field = fde + 4;
        let cie_pointer = (pointer_field - cie) as u32;
        out[pointer_field..pointer_field + 4].copy_from_slice(&cie_pointer.to_le_bytes());
    }
    out.extend([0; 4]);
    out
}

/// Appends one CIE or FDE: length, id (0 for a CIE; for an FDE a
/// placeholder the caller patches), body, padded with `DW_CFA_nop` to 8
/// bytes. Returns where it starts.
fn entry(out: &mut Vec<u8>, id: u32, body: impl FnOnce(&mut Vec<u8>)) -> usize {
    let start = out.len();
    let mut b = id.to_le_bytes().to_vec();
    body(&mut b);
    while !(b.len() + 4).is_multiple_of(8) {
        b.push(0);
    }
    out.extend((b.len() as u32).to_le_bytes());
    out.extend(b);
    start
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

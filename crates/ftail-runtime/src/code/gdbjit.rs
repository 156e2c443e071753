//! Telling gdb about the convert thunks, through its JIT interface: gdb
//! breaks on `__jit_debug_register_code` and reads, from the process, a
//! small in-memory ELF file per thunk area that names the thunks
//! (`ftail_convert_thunk`) and carries their `.eh_frame` — so a backtrace
//! taken inside a converted tail callee continues through the thunk to
//! the tail caller's caller. Without a debugger attached this costs one
//! call of an empty function per module.
//!
//! The ELF file holds only section headers (no program headers): `.text`
//! (`SHT_NOBITS` at the thunks' address), `.eh_frame` (a copy of the block
//! registered with libgcc, whose pointers are absolute), `.symtab`,
//! `.strtab` and `.shstrtab`.

use std::sync::Mutex;

/// `struct jit_code_entry` of gdb's JIT interface.
#[repr(C)]
pub struct JitCodeEntry {
    next_entry: *mut JitCodeEntry,
    prev_entry: *mut JitCodeEntry,
    symfile_addr: *const u8,
    symfile_size: u64,
}

/// `struct jit_descriptor` of gdb's JIT interface.
#[repr(C)]
pub struct JitDescriptor {
    version: u32,
    action_flag: u32,
    relevant_entry: *mut JitCodeEntry,
    first_entry: *mut JitCodeEntry,
}

/// `JIT_REGISTER_FN`.
const JIT_REGISTER: u32 = 1;
/// `JIT_UNREGISTER_FN`.
const JIT_UNREGISTER: u32 = 2;

/// A registered image, owned until [`unregister`].
pub struct Entry {
    entry: *mut JitCodeEntry,
    image: *mut [u8],
}

/// The descriptor gdb reads (by this name).
#[no_mangle]
pub static mut __jit_debug_descriptor: JitDescriptor = JitDescriptor {
    version: 1,
    action_flag: 0,
    relevant_entry: std::ptr::null_mut(),
    first_entry: std::ptr::null_mut(),
};

/// gdb sets a breakpoint here (by this name) and reads the descriptor.
#[no_mangle]
#[inline(never)]
pub extern "C" fn __jit_debug_register_code() {
    // SAFETY: an empty asm statement (no instructions, no effects) keeps
    // the function from being optimised away or merged.
    unsafe { std::arch::asm!("", options(nomem, nostack, preserves_flags)) };
}

/// Serialises registrations (the descriptor is a linked list).
static LOCK: Mutex<()> = Mutex::new(());

/// One thunk: address and length.
pub struct Thunk {
    pub start: u64,
    pub len: u64,
}

/// Registers the thunks of one area (`text`: its start and length) and the
/// `.eh_frame` block describing them.
pub fn register(text: (u64, u64), thunks: &[Thunk], eh_frame: &[u8]) -> Entry {
    let image = Box::into_raw(elf_image(text, thunks, eh_frame).into_boxed_slice());
    let entry = Box::into_raw(Box::new(JitCodeEntry {
        next_entry: std::ptr::null_mut(),
        prev_entry: std::ptr::null_mut(),
        symfile_addr: image.cast::<u8>(),
        symfile_size: image.len() as u64,
    }));
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the descriptor is only written under LOCK; `entry` and the
    // image stay allocated until `unregister` unlinks them.
    unsafe {
        let d = std::ptr::addr_of_mut!(__jit_debug_descriptor);
        (*entry).next_entry = (*d).first_entry;
        if !(*d).first_entry.is_null() {
            (*(*d).first_entry).prev_entry = entry;
        }
        (*d).first_entry = entry;
        (*d).relevant_entry = entry;
        (*d).action_flag = JIT_REGISTER;
    }
    __jit_debug_register_code();
    Entry { entry, image }
}

/// Tells gdb an image is gone (its module was unloaded) and frees it.
pub fn unregister(e: Entry) {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: `e.entry` is linked in the descriptor's list (by `register`,
    // under LOCK, held here too); it is unlinked, reported, then freed
    // with its image, which nothing else references.
    unsafe {
        let d = std::ptr::addr_of_mut!(__jit_debug_descriptor);
        let entry = e.entry;
        let (prev, next) = ((*entry).prev_entry, (*entry).next_entry);
        if prev.is_null() {
            (*d).first_entry = next;
        } else {
            (*prev).next_entry = next;
        }
        if !next.is_null() {
            (*next).prev_entry = prev;
        }
        (*d).relevant_entry = entry;
        (*d).action_flag = JIT_UNREGISTER;
        __jit_debug_register_code();
        drop(Box::from_raw(entry));
        drop(Box::from_raw(e.image));
    }
}

const SHT_PROGBITS: u32 = 1;
const SHT_SYMTAB: u32 = 2;
const SHT_STRTAB: u32 = 3;
const SHT_NOBITS: u32 = 8;
const SHF_ALLOC: u64 = 2;
const SHF_EXECINSTR: u64 = 4;

/// A section header's fields.
struct Section {
    name: u32,
    kind: u32,
    flags: u64,
    addr: u64,
    offset: u64,
    size: u64,
    link: u32,
    info: u32,
    align: u64,
    entsize: u64,
}

/// The ELF file: header, section contents, section headers.
fn elf_image(text: (u64, u64), thunks: &[Thunk], eh_frame: &[u8]) -> Vec<u8> {
    let shstrtab = b"\0.text\0.eh_frame\0.symtab\0.strtab\0.shstrtab\0";
    let strtab = b"\0ftail_convert_thunk\0";
    let mut symtab = vec![0u8; 24]; // the null symbol
    for t in thunks {
        symtab.extend(1u32.to_le_bytes()); // st_name: "ftail_convert_thunk"
        symtab.push(0x12); // STB_GLOBAL, STT_FUNC
        symtab.push(0); // st_other
        symtab.extend(1u16.to_le_bytes()); // st_shndx: .text
        symtab.extend(t.start.to_le_bytes());
        symtab.extend(t.len.to_le_bytes());
    }
    let mut out = vec![0u8; 64];
    let mut place = |data: &[u8]| {
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let at = out.len() as u64;
        out.extend_from_slice(data);
        at
    };
    let eh_at = place(eh_frame);
    let sym_at = place(&symtab);
    let str_at = place(strtab);
    let shstr_at = place(shstrtab);
    let sections = [
        Section {
            name: 0,
            kind: 0,
            flags: 0,
            addr: 0,
            offset: 0,
            size: 0,
            link: 0,
            info: 0,
            align: 0,
            entsize: 0,
        },
        Section {
            name: 1,
            kind: SHT_NOBITS,
            flags: SHF_ALLOC | SHF_EXECINSTR,
            addr: text.0,
            offset: eh_at,
            size: text.1,
            link: 0,
            info: 0,
            align: 16,
            entsize: 0,
        },
        Section {
            name: 7,
            kind: SHT_PROGBITS,
            flags: SHF_ALLOC,
            addr: eh_frame.as_ptr() as u64,
            offset: eh_at,
            size: eh_frame.len() as u64,
            link: 0,
            info: 0,
            align: 8,
            entsize: 0,
        },
        Section {
            name: 17,
            kind: SHT_SYMTAB,
            flags: 0,
            addr: 0,
            offset: sym_at,
            size: symtab.len() as u64,
            link: 4,
            info: 1,
            align: 8,
            entsize: 24,
        },
        Section {
            name: 25,
            kind: SHT_STRTAB,
            flags: 0,
            addr: 0,
            offset: str_at,
            size: strtab.len() as u64,
            link: 0,
            info: 0,
            align: 1,
            entsize: 0,
        },
        Section {
            name: 33,
            kind: SHT_STRTAB,
            flags: 0,
            addr: 0,
            offset: shstr_at,
            size: shstrtab.len() as u64,
            link: 0,
            info: 0,
            align: 1,
            entsize: 0,
        },
    ];
    while !out.len().is_multiple_of(8) {
        out.push(0);
    }
    let shoff = out.len() as u64;
    for s in &sections {
        out.extend(s.name.to_le_bytes());
        out.extend(s.kind.to_le_bytes());
        out.extend(s.flags.to_le_bytes());
        out.extend(s.addr.to_le_bytes());
        out.extend(s.offset.to_le_bytes());
        out.extend(s.size.to_le_bytes());
        out.extend(s.link.to_le_bytes());
        out.extend(s.info.to_le_bytes());
        out.extend(s.align.to_le_bytes());
        out.extend(s.entsize.to_le_bytes());
    }
    // The ELF header: ELFCLASS64, little endian, ET_EXEC, EM_X86_64.
    let mut h = Vec::with_capacity(64);
    h.extend(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    h.extend(2u16.to_le_bytes()); // e_type: ET_EXEC
    h.extend(62u16.to_le_bytes()); // e_machine: EM_X86_64
    h.extend(1u32.to_le_bytes()); // e_version
    h.extend(0u64.to_le_bytes()); // e_entry
    h.extend(0u64.to_le_bytes()); // e_phoff
    h.extend(shoff.to_le_bytes()); // e_shoff
    h.extend(0u32.to_le_bytes()); // e_flags
    h.extend(64u16.to_le_bytes()); // e_ehsize
    h.extend(0u16.to_le_bytes()); // e_phentsize
    h.extend(0u16.to_le_bytes()); // e_phnum
    h.extend(64u16.to_le_bytes()); // e_shentsize
    h.extend((sections.len() as u16).to_le_bytes()); // e_shnum
    h.extend(5u16.to_le_bytes()); // e_shstrndx
    out[..64].copy_from_slice(&h);
    out
}

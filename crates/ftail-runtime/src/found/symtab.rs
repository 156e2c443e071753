//! A module's own functions, from the `.symtab` of its file: what a call
//! into code of the same module that carries no site tables (the Rust
//! standard library linked into a program, a static archive built
//! without ftail) calls, and whether that function must never be called
//! through a library thunk.
//!
//! Read once when the module is planned (a slow path), with `pread` on a
//! descriptor opened for the purpose and closed at once. A file that
//! cannot be read, holds no `.symtab` (stripped) or whose build id is not
//! the loaded module's gives no functions: such calls then stay unrecorded,
//! since nothing would tell a `setjmp` apart from any other function.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::found::modules::Module;

/// Section header types (elf.h).
const SHT_SYMTAB: u32 = 2;
const SHT_NOTE: u32 = 7;
/// Symbol type of a function (`STT_FUNC`); `STT_GNU_IFUNC` symbols name
/// resolvers, which calls never reach directly.
const STT_FUNC: u8 = 2;
/// Binding of a file-local symbol (`STB_LOCAL`).
const STB_LOCAL: u8 = 0;
/// `NT_GNU_BUILD_ID`.
const NT_GNU_BUILD_ID: u32 = 3;
const SHDR: usize = 64;
const SYM: usize = 24;

/// The function symbols of a module, at run-time addresses.
#[derive(Default)]
pub struct LocalFunctions {
    /// (address, 0 for a global or weak symbol and 1 for a local one,
    /// offset of its name in `names`), sorted: the first at an address
    /// is the name shown.
    funcs: Vec<(u64, u8, u32)>,
    /// The symbol table's string table.
    names: Vec<u8>,
    /// Addresses that some symbol of `never` names, sorted.
    never: Vec<u64>,
}

impl LocalFunctions {
    /// The name of the function that starts at `addr`, if one does.
    pub fn name(&self, addr: u64) -> Option<&str> {
        let i = self.funcs.partition_point(|f| f.0 < addr);
        let &(a, _, off) = self.funcs.get(i)?;
        (a == addr).then_some(())?;
        let tail = self.names.get(off as usize..)?;
        let end = tail.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&tail[..end])
            .ok()
            .filter(|n| !n.is_empty())
    }

    /// Where the function named `name` starts, if the module has one.
    pub fn address(&self, name: &str) -> Option<u64> {
        let named = |off: u32| {
            let tail = self.names.get(off as usize..)?;
            tail.strip_prefix(name.as_bytes())?
                .first()
                .filter(|&&b| b == 0)
        };
        self.funcs
            .iter()
            .find(|f| named(f.2).is_some())
            .map(|f| f.0)
    }

    /// Whether any symbol at `addr` has one of the names given to
    /// [`local_functions`] as `never`.
    pub fn is_never(&self, addr: u64) -> bool {
        self.never.binary_search(&addr).is_ok()
    }
}

/// The function symbols of `m`'s file whose names are not in `never`
/// (those are only listed, by address); none when the file cannot be
/// read or is not the loaded module.
pub fn local_functions(m: &Module, never: impl Fn(&str) -> bool) -> LocalFunctions {
    let path = if m.path.is_empty() {
        "/proc/self/exe"
    } else {
        m.path.as_str()
    };
    File::open(path)
        .ok()
        .and_then(|f| read(&f, m, &never))
        .unwrap_or_default()
}

fn read(f: &File, m: &Module, never: &dyn Fn(&str) -> bool) -> Option<LocalFunctions> {
    let len = f.metadata().ok()?.len();
    let at = |off: u64, n: u64| -> Option<Vec<u8>> {
        (off.checked_add(n)? <= len).then_some(())?;
        let mut v = vec![0u8; usize::try_from(n).ok()?];
        f.read_exact_at(&mut v, off).ok()?;
        Some(v)
    };
    let eh = at(0, 64)?;
    // 64-bit, little-endian ELF.
    (eh[..4] == *b"\x7fELF" && eh[4] == 2 && eh[5] == 1).then_some(())?;
    let shoff = u64_at(&eh, 0x28);
    let shentsize = u16_at(&eh, 0x3a) as usize;
    let shnum = u16_at(&eh, 0x3c) as u64;
    (shentsize == SHDR).then_some(())?;
    let sh = at(shoff, shnum * SHDR as u64)?;
    let section = |i: usize| sh.get(i * SHDR..(i + 1) * SHDR);
    let mut symtab = None;
    let mut file_id = None;
    for i in 0..shnum as usize {
        let s = section(i)?;
        match u32_at(s, 4) {
            SHT_SYMTAB => symtab = Some(s),
            SHT_NOTE if file_id.is_none() => {
                file_id = build_id(&at(u64_at(s, 24), u64_at(s, 32))?);
            }
            _ => {}
        }
    }
    // A file replaced since it was loaded would name other code.
    if let (Some(loaded), Some(file)) = (&m.build_id, &file_id) {
        (loaded == file).then_some(())?;
    }
    let symtab = symtab?;
    let strtab = section(u32_at(symtab, 40) as usize)?;
    let names = at(u64_at(strtab, 24), u64_at(strtab, 32))?;
    let syms = at(u64_at(symtab, 24), u64_at(symtab, 32))?;
    let mut out = LocalFunctions {
        names,
        ..LocalFunctions::default()
    };
    let in_text = |a: u64| m.text.iter().any(|s| (s.0..s.1).contains(&a));
    for sym in syms.chunks_exact(SYM) {
        let info = sym[4];
        let shndx = u16_at(sym, 6);
        if info & 0xf != STT_FUNC || shndx == 0 {
            continue;
        }
        let addr = m.base.wrapping_add(u64_at(sym, 8));
        if !in_text(addr) {
            continue;
        }
        let off = u32_at(sym, 0);
        let rank = u8::from(info >> 4 == STB_LOCAL);
        out.funcs.push((addr, rank, off));
    }
    out.funcs.sort_unstable();
    out.funcs.dedup_by_key(|f| (f.0, f.2));
    for &(addr, _, off) in &out.funcs {
        let name = out.names.get(off as usize..).and_then(|t| {
            let end = t.iter().position(|&b| b == 0)?;
            std::str::from_utf8(&t[..end]).ok()
        });
        if name.is_some_and(never) {
            out.never.push(addr);
        }
    }
    out.never.dedup();
    Some(out)
}

/// The `NT_GNU_BUILD_ID` in a note section's bytes, if any.
fn build_id(notes: &[u8]) -> Option<Vec<u8>> {
    let mut p = 0usize;
    while p + 12 <= notes.len() {
        let namesz = u32_at(notes, p) as usize;
        let descsz = u32_at(notes, p + 4) as usize;
        let kind = u32_at(notes, p + 8);
        let desc = p + 12 + namesz.next_multiple_of(4);
        let end = desc.checked_add(descsz)?;
        if end > notes.len() {
            return None;
        }
        if kind == NT_GNU_BUILD_ID && notes.get(p + 12..p + 16) == Some(b"GNU\0") {
            return Some(notes[desc..end].to_vec());
        }
        p = desc + descsz.next_multiple_of(4);
    }
    None
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

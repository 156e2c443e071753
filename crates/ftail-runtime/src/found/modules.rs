//! Finding the loaded modules that carry site tables, from their program
//! headers (`dl_iterate_phdr`): each object file contributed an ftail note
//! to a `PT_NOTE` segment, pointing at its function records.

use ftail_abi::{
    reads_sites_version, FuncRecord, SiteRecord, SitesNote, NOTE_NAME, NOTE_TYPE_SITES,
    OLDEST_SITES_VERSION, SITES_VERSION,
};

/// A loaded module with site tables.
#[derive(Debug)]
pub struct Module {
    /// Load bias (`dlpi_addr`).
    pub base: u64,
    /// Path as the loader knows it (empty for the main program).
    pub path: String,
    /// Addresses of its function records.
    pub funcs: Vec<*const FuncRecord>,
    /// Executable segments: (start, end, PF_* flags).
    pub text: Vec<(u64, u64, u32)>,
    /// Run-time address of the dynamic section, if any.
    pub dynamic: Option<u64>,
    /// GNU build id (`NT_GNU_BUILD_ID` note), if any.
    pub build_id: Option<Vec<u8>>,
    /// Why its tables cannot be trusted, if they cannot: the module is
    /// then left untraced (`funcs` is empty).
    pub damage: Option<String>,
}

/// A site resolved to run-time addresses.
#[derive(Clone, Copy, Debug)]
pub struct Site {
    /// Address of the 5-byte site.
    pub addr: u64,
    /// Its record.
    pub record: SiteRecord,
}

/// Every loaded module with site tables.
pub fn loaded() -> Vec<Module> {
    let mut out: Vec<Module> = Vec::new();
    // SAFETY: the callback only reads the phdr array the loader passes
    // for the duration of the call, and `out` outlives the iteration.
    unsafe {
        libc::dl_iterate_phdr(Some(visit), (&mut out as *mut Vec<Module>).cast());
    }
    out
}

unsafe extern "C" fn visit(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut libc::c_void,
) -> i32 {
    // SAFETY: the loader passes a valid info for this call; `data` is the
    // Vec passed to dl_iterate_phdr above.
    let (info, out) = unsafe { (&*info, &mut *data.cast::<Vec<Module>>()) };
    let base = info.dlpi_addr;
    // SAFETY: dlpi_phdr points at dlpi_phnum program headers.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let mut tables = Vec::new();
    let mut text = Vec::new();
    let mut readable = Vec::new();
    let mut dynamic = None;
    let mut build_id = None;
    let mut other_version = None;
    for ph in phdrs {
        match ph.p_type {
            libc::PT_NOTE => {
                let start = base + ph.p_vaddr;
                // SAFETY: a PT_NOTE segment is mapped readable for its memsz.
                let bytes =
                    unsafe { std::slice::from_raw_parts(start as *const u8, ph.p_memsz as usize) };
                collect_notes(start, bytes, &mut tables, &mut build_id, &mut other_version);
            }
            libc::PT_DYNAMIC => dynamic = Some(base + ph.p_vaddr),
            libc::PT_LOAD => {
                let seg = (
                    base + ph.p_vaddr,
                    base + ph.p_vaddr + ph.p_memsz,
                    ph.p_flags,
                );
                if ph.p_flags & libc::PF_R != 0 {
                    readable.push(seg);
                }
                if ph.p_flags & libc::PF_X != 0 {
                    text.push(seg);
                }
            }
            _ => {}
        }
    }
    let mut funcs = Vec::new();
    let mut damage = check_counts(&tables, &readable)
        .and_then(|()| {
            funcs = records(&tables);
            check_tables(&funcs, &readable)
        })
        .err()
        .map(|d| format!("damaged site tables: {d}"));
    if damage.is_some() {
        funcs.clear();
    }
    if let Some(v) = other_version.filter(|_| damage.is_none()) {
        // Sites of another layout would be patched wrong: the whole module
        // is left alone, and says why.
        funcs.clear();
        damage = Some(format!(
            "its site tables are of version {v}, from {} ftail (this one reads versions \
             {OLDEST_SITES_VERSION} to {SITES_VERSION}): build it again with this ftail",
            if v < OLDEST_SITES_VERSION {
                "an older"
            } else {
                "a newer"
            }
        ));
    }
    if !funcs.is_empty() || damage.is_some() {
        let path = if info.dlpi_name.is_null() {
            String::new()
        } else {
            // SAFETY: dlpi_name is a NUL-terminated string when non-null.
            unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) }
                .to_string_lossy()
                .into_owned()
        };
        out.push(Module {
            base,
            path,
            funcs,
            text,
            dynamic,
            build_id,
            damage,
        });
    }
    0
}

/// A note's function records: where the first lies and how many there are.
#[derive(Clone, Copy)]
struct Table {
    first: u64,
    count: u32,
}

/// Checks each note's count of function records before anything is made
/// of it: every table lies inside one readable segment, and all of them
/// together fit in the module's readable bytes (the linker concatenates
/// them; a damaged count of 0xffffffff would otherwise ask for 32 GiB of
/// record pointers).
fn check_counts(tables: &[Table], readable: &[(u64, u64, u32)]) -> Result<(), String> {
    let record = std::mem::size_of::<FuncRecord>() as u64;
    let mut total = 0u64;
    for (i, t) in tables.iter().enumerate() {
        let len = u64::from(t.count) * record;
        let fits = readable
            .iter()
            .any(|s| t.first >= s.0 && t.first.checked_add(len).is_some_and(|e| e <= s.1));
        if !fits {
            return Err(format!(
                "note {i} counts {} function records, which do not lie inside the module",
                t.count
            ));
        }
        total += len;
    }
    let bytes: u64 = readable.iter().map(|s| s.1 - s.0).sum();
    if total > bytes {
        return Err(format!(
            "the notes count {} function records, more than the module's {bytes} bytes hold",
            total / record
        ));
    }
    Ok(())
}

/// The address of every function record of `tables` (counts checked).
fn records(tables: &[Table]) -> Vec<*const FuncRecord> {
    let record = std::mem::size_of::<FuncRecord>() as u64;
    tables
        .iter()
        .flat_map(|t| {
            (0..u64::from(t.count)).map(move |i| (t.first + i * record) as *const FuncRecord)
        })
        .collect()
}

/// Checks that every function record, name and site array the notes
/// point at lies inside a readable segment of the module (a name ending
/// there too), so that reading them cannot fault: a module whose tables
/// were damaged on disk runs fine on its own and must under ftail too.
fn check_tables(funcs: &[*const FuncRecord], readable: &[(u64, u64, u32)]) -> Result<(), String> {
    let inside = |at: u64, len: u64| {
        readable
            .iter()
            .find(|s| at >= s.0 && at.checked_add(len).is_some_and(|e| e <= s.1))
    };
    let record = std::mem::size_of::<FuncRecord>() as u64;
    for (i, &f) in funcs.iter().enumerate() {
        if inside(f as u64, record).is_none() {
            return Err(format!("function record {i} lies outside the module"));
        }
        // SAFETY: the record lies in a readable segment (checked above).
        let (name, sites, n) = unsafe {
            (
                rel(std::ptr::addr_of!((*f).name)),
                rel(std::ptr::addr_of!((*f).sites)),
                (*f).nsites,
            )
        };
        let Some(seg) = inside(name, 1) else {
            return Err(format!("the name of function {i} lies outside the module"));
        };
        // SAFETY: [name, seg end) is readable (checked above).
        let tail =
            unsafe { std::slice::from_raw_parts(name as *const u8, (seg.1 - name) as usize) };
        if !tail.contains(&0) {
            return Err(format!("the name of function {i} does not end"));
        }
        let len = u64::from(n) * std::mem::size_of::<SiteRecord>() as u64;
        if n > 0 && inside(sites, len).is_none() {
            return Err(format!("the sites of function {i} lie outside the module"));
        }
    }
    Ok(())
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// `NT_GNU_BUILD_ID` (elf.h).
const NT_GNU_BUILD_ID: u32 = 3;

fn collect_notes(
    start: u64,
    bytes: &[u8],
    tables: &mut Vec<Table>,
    build_id: &mut Option<Vec<u8>>,
    other_version: &mut Option<u32>,
) {
    let mut off = 0;
    let align4 = |n: usize| (n + 3) & !3;
    while let (Some(namesz), Some(descsz), Some(ty)) = (
        u32_at(bytes, off),
        u32_at(bytes, off + 4),
        u32_at(bytes, off + 8),
    ) {
        let name_at = off + 12;
        let desc_at = name_at + align4(namesz as usize);
        let next = desc_at + align4(descsz as usize);
        if next > bytes.len() {
            break;
        }
        let name = &bytes[name_at..name_at + namesz as usize];
        if ty == NT_GNU_BUILD_ID && name == b"GNU\0" {
            *build_id = Some(bytes[desc_at..desc_at + descsz as usize].to_vec());
        }
        let ours = ty == NOTE_TYPE_SITES && name.strip_suffix(&[0]) == Some(NOTE_NAME.as_bytes());
        // Each note's fields lie within the segment (`next` is checked
        // against its length above); its count is checked by
        // `check_counts`, where its records point by `check_tables`.
        if ours && descsz as usize >= std::mem::size_of::<SitesNote>() {
            let desc = start + desc_at as u64;
            let version = u32_at(bytes, desc_at);
            if version.is_some_and(|v| !reads_sites_version(v)) {
                *other_version = version;
            }
            if version.is_some_and(reads_sites_version) {
                let rel = u32_at(bytes, desc_at + 4).unwrap_or(0) as i32;
                let count = u32_at(bytes, desc_at + 8).unwrap_or(0);
                let first = (desc + 4).wrapping_add(rel as i64 as u64);
                tables.push(Table { first, count });
            }
        }
        off = next;
    }
}

/// Resolves a PC-relative field: the address it points at.
///
/// # Safety
///
/// `field` points at a readable `i32`.
pub unsafe fn rel(field: *const i32) -> u64 {
    // SAFETY: per the contract.
    (field as u64).wrapping_add(unsafe { field.read_unaligned() } as i64 as u64)
}

/// The name of a function record.
///
/// # Safety
///
/// `f` points at a function record of a loaded module.
pub unsafe fn func_name(f: *const FuncRecord) -> &'static str {
    // SAFETY: the record's name field points at a NUL-terminated string in
    // the same module, mapped while the module is loaded.
    unsafe {
        let p = rel(std::ptr::addr_of!((*f).name)) as *const libc::c_char;
        std::str::from_utf8(std::ffi::CStr::from_ptr(p).to_bytes()).unwrap_or("")
    }
}

/// The sites of a function record, with run-time addresses.
///
/// # Safety
///
/// As for [`func_name`].
pub unsafe fn func_sites(f: *const FuncRecord) -> impl Iterator<Item = Site> {
    // SAFETY: per the contract, the record and its site array are mapped.
    let (first, n) = unsafe { (rel(std::ptr::addr_of!((*f).sites)), (*f).nsites) };
    (0..u64::from(n)).map(move |i| {
        let p = (first + i * std::mem::size_of::<SiteRecord>() as u64) as *const SiteRecord;
        // SAFETY: i < nsites records of the mapped array.
        let record = unsafe { p.read_unaligned() };
        // SAFETY: `addr` is the record's first field.
        let addr = unsafe { rel(p.cast::<i32>()) };
        Site { addr, record }
    })
}

/// Names of the functions a module's PLT and GOT slots resolve to, from
/// its dynamic section: GOT slot address → symbol name.
pub fn got_symbols(m: &Module) -> std::collections::BTreeMap<u64, String> {
    relocated_symbols(m, |_| true)
}

/// The GOT slots of `m` that the loader binds to a function and no code
/// writes (`R_X86_64_GLOB_DAT`, `R_X86_64_JUMP_SLOT`), with the symbol
/// each is bound to: a function pointer the program loads from one is
/// that function.
pub fn bound_slots(m: &Module) -> std::collections::BTreeMap<u64, String> {
    const GLOB_DAT: u64 = 6;
    const JUMP_SLOT: u64 = 7;
    relocated_symbols(m, |ty| ty == GLOB_DAT || ty == JUMP_SLOT)
}

/// The words `m`'s dynamic relocations of a type `keep` accepts bind to
/// a symbol, with the symbol's name.
fn relocated_symbols(
    m: &Module,
    keep: impl Fn(u64) -> bool,
) -> std::collections::BTreeMap<u64, String> {
    let mut out = std::collections::BTreeMap::new();
    let Some(dynamic) = m.dynamic else { return out };
    let (mut jmprel, mut pltrelsz, mut rela, mut relasz, mut symtab, mut strtab) =
        (0, 0, 0, 0, 0, 0);
    let abs = |v: u64| if v < m.base { v + m.base } else { v };
    let mut p = dynamic as *const u64;
    // SAFETY: PT_DYNAMIC is mapped and ends with DT_NULL; the loader has
    // relocated its pointer entries (abs() covers those it has not).
    unsafe {
        loop {
            let (tag, val) = (p.read(), p.add(1).read());
            // ELF dynamic tags (elf.h).
            match tag {
                0 => break,              // DT_NULL
                23 => jmprel = abs(val), // DT_JMPREL
                2 => pltrelsz = val,     // DT_PLTRELSZ
                7 => rela = abs(val),    // DT_RELA
                8 => relasz = val,       // DT_RELASZ
                6 => symtab = abs(val),  // DT_SYMTAB
                5 => strtab = abs(val),  // DT_STRTAB
                _ => {}
            }
            p = p.add(2);
        }
    }
    if symtab == 0 || strtab == 0 {
        return out;
    }
    for (table, size) in [(jmprel, pltrelsz), (rela, relasz)] {
        if table == 0 {
            continue;
        }
        for i in 0..size / 24 {
            let r = (table + i * 24) as *const u64;
            // SAFETY: the relocation tables are mapped (PT_LOAD) for the
            // module's lifetime; indexes come from them.
            unsafe {
                let (offset, info) = (r.read(), r.add(1).read());
                let sym = info >> 32;
                if sym == 0 || !keep(info & 0xffff_ffff) {
                    continue;
                }
                let st_name = ((symtab + sym * 24) as *const u32).read();
                let name =
                    std::ffi::CStr::from_ptr((strtab + u64::from(st_name)) as *const libc::c_char);
                out.insert(m.base + offset, name.to_string_lossy().into_owned());
            }
        }
    }
    out
}

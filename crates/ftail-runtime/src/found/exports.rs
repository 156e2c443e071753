//! Which loaded object defines a symbol: the dynamic symbol tables of
//! every object the loader lists (`dl_iterate_phdr`), looked up through
//! their hash tables, in the loader's order — the order of its global
//! scope — so that `info` can name the module a library function comes
//! from (`libc.so.6`) even while the calling module's PLT slot is still
//! bound lazily. Lookups happen at planning only; nothing here calls
//! `dlsym`, whose failures would leave an error for the program's
//! `dlerror` to find.

/// An object's dynamic symbols, as mapped.
struct Object {
    /// Path as the loader knows it.
    path: String,
    symtab: u64,
    strtab: u64,
    /// `DT_GNU_HASH` table (0: none).
    gnu_hash: u64,
    /// `DT_HASH` table (0: none).
    hash: u64,
}

/// The dynamic symbol tables of the loaded objects with a name, but the
/// runtime's own (whose `execve` and others forward to libc's: the
/// program meant those).
#[derive(Default)]
pub struct Exports {
    objects: Vec<Object>,
}

impl Exports {
    /// The objects loaded now.
    pub fn loaded() -> Exports {
        let mut out = Exports::default();
        // SAFETY: the callback only reads what the loader passes for the
        // duration of each call, and `out` outlives the iteration.
        unsafe {
            libc::dl_iterate_phdr(Some(visit), (&mut out as *mut Exports).cast());
        }
        out
    }

    /// The path of the first object that defines `name`.
    pub fn definer(&self, name: &str) -> Option<&str> {
        self.objects
            .iter()
            .find(|o| o.defines(name.as_bytes()))
            .map(|o| o.path.as_str())
    }
}

unsafe extern "C" fn visit(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut libc::c_void,
) -> i32 {
    // SAFETY: the loader passes a valid info for this call; `data` is the
    // Exports passed to dl_iterate_phdr above.
    let (info, out) = unsafe { (&*info, &mut *data.cast::<Exports>()) };
    if info.dlpi_name.is_null() {
        return 0;
    }
    // SAFETY: dlpi_name is a NUL-terminated string when non-null.
    let path = unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) }.to_string_lossy();
    if path.is_empty() {
        return 0;
    }
    let base = info.dlpi_addr;
    // SAFETY: dlpi_phdr points at dlpi_phnum program headers.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let ours = Exports::loaded as *const () as u64;
    let holds_ours = phdrs.iter().any(|ph| {
        ph.p_type == libc::PT_LOAD
            && (base + ph.p_vaddr..base + ph.p_vaddr + ph.p_memsz).contains(&ours)
    });
    let dynamic = phdrs
        .iter()
        .find(|ph| ph.p_type == libc::PT_DYNAMIC)
        .map(|ph| base + ph.p_vaddr);
    if let (false, Some(dynamic)) = (holds_ours, dynamic) {
        // SAFETY: the object's PT_DYNAMIC segment, mapped while it is
        // loaded.
        if let Some(o) = unsafe { object(path.into_owned(), base, dynamic) } {
            out.objects.push(o);
        }
    }
    0
}

/// The symbol tables named by the dynamic section at `dynamic`.
///
/// # Safety
///
/// `dynamic` is a loaded object's mapped dynamic section, ending with
/// `DT_NULL`.
unsafe fn object(path: String, base: u64, dynamic: u64) -> Option<Object> {
    // The loader relocates the pointer entries of most objects in place,
    // not the vDSO's.
    let abs = |v: u64| if v < base { v + base } else { v };
    let mut o = Object {
        path,
        symtab: 0,
        strtab: 0,
        gnu_hash: 0,
        hash: 0,
    };
    let mut p = dynamic as *const u64;
    // SAFETY: per the contract, entries up to DT_NULL are mapped.
    unsafe {
        loop {
            let (tag, val) = (p.read(), p.add(1).read());
            // ELF dynamic tags (elf.h).
            match tag {
                0 => break,                           // DT_NULL
                6 => o.symtab = abs(val),             // DT_SYMTAB
                5 => o.strtab = abs(val),             // DT_STRTAB
                4 => o.hash = abs(val),               // DT_HASH
                0x6fff_fef5 => o.gnu_hash = abs(val), // DT_GNU_HASH
                _ => {}
            }
            p = p.add(2);
        }
    }
    (o.symtab != 0 && o.strtab != 0 && (o.gnu_hash != 0 || o.hash != 0)).then_some(o)
}

/// Bytes of an `Elf64_Sym`.
const SYM: u64 = 24;

impl Object {
    /// Whether symbol `i` is named `name` and defined here.
    fn is_definition(&self, i: u64, name: &[u8]) -> bool {
        let sym = self.symtab + i * SYM;
        // SAFETY: `i` indexes the mapped symbol table (from its hash
        // table); st_name is its first field, st_shndx at offset 6, and
        // names are NUL-terminated in the mapped string table.
        unsafe {
            let st_name = (sym as *const u32).read_unaligned();
            let shndx = ((sym + 6) as *const u16).read_unaligned();
            let s = std::ffi::CStr::from_ptr((self.strtab + u64::from(st_name)) as *const _);
            shndx != 0 && s.to_bytes() == name
        }
    }

    fn defines(&self, name: &[u8]) -> bool {
        if self.gnu_hash != 0 {
            self.defines_gnu(name)
        } else {
            self.defines_sysv(name)
        }
    }

    /// Through `DT_GNU_HASH`: buckets of symbol indexes, and a chain of
    /// hashes whose low bit ends a bucket.
    fn defines_gnu(&self, name: &[u8]) -> bool {
        let h = name.iter().fold(5381u32, |h, &c| {
            h.wrapping_mul(33).wrapping_add(u32::from(c))
        });
        let t = self.gnu_hash;
        let word = |at: u64| {
            // SAFETY: `at` lies in the mapped hash table: its header,
            // buckets and chains, as its header sizes them.
            unsafe { (at as *const u32).read_unaligned() }
        };
        let (nbuckets, symoffset, bloom_words) = (word(t), word(t + 4), word(t + 8));
        if nbuckets == 0 {
            return false;
        }
        let buckets = t + 16 + 8 * u64::from(bloom_words);
        let chains = buckets + 4 * u64::from(nbuckets);
        let mut i = u64::from(word(buckets + 4 * u64::from(h % nbuckets)));
        if i < u64::from(symoffset) {
            return false;
        }
        loop {
            let ch = word(chains + 4 * (i - u64::from(symoffset)));
            if ch | 1 == h | 1 && self.is_definition(i, name) {
                return true;
            }
            if ch & 1 != 0 {
                return false;
            }
            i += 1;
        }
    }

    /// Through `DT_HASH`: buckets and chains of symbol indexes.
    fn defines_sysv(&self, name: &[u8]) -> bool {
        let h = name.iter().fold(0u32, |h, &c| {
            let h = (h << 4).wrapping_add(u32::from(c));
            (h ^ ((h & 0xf000_0000) >> 24)) & 0x0fff_ffff
        });
        let t = self.hash;
        let word = |at: u64| {
            // SAFETY: `at` lies in the mapped hash table, as its header
            // sizes it.
            unsafe { (at as *const u32).read_unaligned() }
        };
        let (nbucket, nchain) = (word(t), word(t + 4));
        if nbucket == 0 {
            return false;
        }
        let chains = t + 8 + 4 * u64::from(nbucket);
        let mut i = word(t + 8 + 4 * u64::from(h % nbucket));
        // Bounded by the chain's length, should a table be looped.
        for _ in 0..nchain {
            if i == 0 || i >= nchain {
                return false;
            }
            if self.is_definition(u64::from(i), name) {
                return true;
            }
            i = word(chains + 4 * u64::from(i));
        }
        false
    }
}

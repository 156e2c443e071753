//! One ELF file as symbolization reads it: identity (build id,
//! `.gnu_debuglink`), position (fixed or relocatable) and function
//! symbols.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};

use super::Error;

/// An ELF file read whole, with what was learnt from its headers.
pub(super) struct ElfFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its bytes.
    pub data: Arc<[u8]>,
    /// GNU build id, lower-case hex.
    pub build_id: Option<String>,
    /// `ET_EXEC`: linked at its run-time addresses.
    pub fixed: bool,
    /// `.gnu_debuglink`: file name and CRC-32 of a separate debug file.
    pub debuglink: Option<(String, u32)>,
    /// Has a `.symtab` (not stripped).
    pub has_symtab: bool,
    /// Has DWARF line information with contents (not stripped, not a
    /// binary whose debug information went to a separate file).
    pub has_dwarf: bool,
}

/// A function symbol at its link-time address.
pub(super) struct RawSymbol {
    pub name: String,
    pub addr: u64,
    pub size: u64,
    pub global: bool,
}

impl ElfFile {
    /// Reads and parses `path`.
    pub fn open(path: &Path) -> Result<ElfFile, Error> {
        let data =
            crate::untrusted::files::read_regular(path, crate::untrusted::files::MODULE_LIMIT)
                .map_err(|e| Error::new(path, e.to_string()))?;
        ElfFile::parse(path, data.into())
    }

    /// Parses `data`, read from `path`.
    pub fn parse(path: &Path, data: Arc<[u8]>) -> Result<ElfFile, Error> {
        let err = |what: String| Error::new(path, what);
        let file = object::File::parse(&*data).map_err(|e| err(format!("not an ELF file: {e}")))?;
        if file.format() != object::BinaryFormat::Elf {
            return Err(err("not an ELF file".into()));
        }
        let build_id = file
            .build_id()
            .map_err(|e| err(format!("damaged build id note: {e}")))?
            .map(hex);
        let debuglink = file
            .gnu_debuglink()
            .ok()
            .flatten()
            .map(|(name, crc)| (String::from_utf8_lossy(name).into_owned(), crc));
        let fixed = file.kind() == object::ObjectKind::Executable;
        let has_symtab = file.section_by_name(".symtab").is_some();
        let has_dwarf = file
            .section_by_name(".debug_line")
            .is_some_and(|s| s.kind() != SectionKind::UninitializedData && s.size() > 0);
        Ok(ElfFile {
            path: path.to_path_buf(),
            data: data.clone(),
            build_id,
            fixed,
            debuglink,
            has_symtab,
            has_dwarf,
        })
    }

    /// The function symbols of `.symtab` and `.dynsym`, defined ones only.
    pub fn symbols(&self) -> Result<Vec<RawSymbol>, Error> {
        let file = object::File::parse(&*self.data)
            .map_err(|e| Error::new(&self.path, format!("not an ELF file: {e}")))?;
        let mut out = Vec::new();
        for sym in file.symbols().chain(file.dynamic_symbols()) {
            if sym.kind() != SymbolKind::Text || !sym.is_definition() || sym.address() == 0 {
                continue;
            }
            let Ok(name) = sym.name() else {
                continue;
            };
            if name.is_empty() {
                continue;
            }
            out.push(RawSymbol {
                name: name.to_string(),
                addr: sym.address(),
                size: sym.size(),
                global: sym.is_global(),
            });
        }
        Ok(out)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

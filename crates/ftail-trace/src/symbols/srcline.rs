//! Source lines from DWARF, through `addr2line`.

use std::fmt;
use std::sync::{Arc, Mutex};

use gimli::{EndianArcSlice, RunTimeEndian};
use object::{Object, ObjectSection};

use super::elf::ElfFile;
use super::Error;

/// A source position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLine {
    /// The source file, as the compiler named it (usually absolute).
    pub file: String,
    /// Its line, from 1.
    pub line: u32,
    /// Its column, where the compiler recorded one.
    pub column: Option<u32>,
}

impl fmt::Display for SourceLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

type Reader = EndianArcSlice<RunTimeEndian>;

/// One file's line tables, ready for look-ups.
pub(super) struct Lines {
    /// `addr2line` caches what it has parsed inside the context, through
    /// `&self` with cells: it is `Send` but not `Sync`, hence the lock.
    context: Mutex<addr2line::Context<Reader>>,
}

impl Lines {
    /// Reads the DWARF sections of `file` (decompressing them as needed).
    pub fn load(file: &ElfFile) -> Result<Lines, Error> {
        let err = |what: String| Error::new(&file.path, what);
        let obj =
            object::File::parse(&*file.data).map_err(|e| err(format!("not an ELF file: {e}")))?;
        let endian = if obj.is_little_endian() {
            RunTimeEndian::Little
        } else {
            RunTimeEndian::Big
        };
        let load = |id: gimli::SectionId| -> Result<Reader, Error> {
            let data: Arc<[u8]> = match obj.section_by_name(id.name()) {
                Some(s) => s
                    .uncompressed_data()
                    .map_err(|e| err(format!("section {}: {e}", id.name())))?
                    .into(),
                None => Arc::from(&[][..]),
            };
            Ok(EndianArcSlice::new(data, endian))
        };
        let dwarf = gimli::Dwarf::load(load)?;
        let context = addr2line::Context::from_dwarf(dwarf)
            .map_err(|e| err(format!("damaged DWARF: {e}")))?;
        Ok(Lines {
            context: Mutex::new(context),
        })
    }

    /// The source position of link-time address `addr`.
    pub fn find(&self, addr: u64) -> Option<SourceLine> {
        let ctx = self.context.lock().unwrap_or_else(|p| p.into_inner());
        let loc = ctx.find_location(addr).ok()??;
        Some(SourceLine {
            file: loc.file?.to_string(),
            line: loc.line?,
            column: loc.column,
        })
    }
}

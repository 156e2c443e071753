//! Symbolization: function names and source lines for the addresses of a
//! trace, the way a uftrace or perf user expects them; [`names`] resolves
//! the entry addresses of a process image's events to its functions.
//!
//! A trace records, per process image, its modules (path, load bias, GNU
//! build id, load and unload times) and events whose addresses are those
//! of sites plus 5. This module turns such an address into a [`Symbol`]
//! and, on request, a [`SourceLine`]:
//!
//! * names come from the module's site tables (exact, and present even in
//!   a stripped binary) and from its ELF `.symtab` and `.dynsym`, merged
//!   into one table sorted by address and searched by binary search; site
//!   tables win where both name a function (a cold part is its function's
//!   own, not `foo.cold`);
//! * names are demangled lazily, once, in two forms ([`demangle`]);
//! * source lines come from DWARF through `addr2line`, read only when
//!   first asked for ([`ModuleSymbols::srcline`]);
//! * the file must be the one recorded: its build id is compared with the
//!   trace's; a changed file is never read silently. A copy with the
//!   recorded id is looked for (`--symbols-dir` directories, the system's
//!   debug directory, the debuginfod client's cache; see
//!   [`SymbolOptions`]) and otherwise the module has no names, only
//!   addresses, and a [`Diagnostic`] says why. A separate debug file is
//!   found by build id or `.gnu_debuglink` (with its CRC checked): names
//!   and lines come from it, addresses from the binary.
//!
//! **Design choice:** a module's tables are read once per reader process
//! and shared: [`SymbolCache`] keeps one `Arc<ModuleSymbols>` per (path,
//! build id), and [`ModuleSymbols`] is `Send + Sync`, so threads can be
//! symbolized in parallel. Addresses inside a [`ModuleSymbols`] are
//! link-time addresses; [`Mapped`] adds a load bias, so one table serves
//! every process that mapped the module, wherever it was mapped.
//!
//! **Architecture Invariant:** nothing here fails: bad input (a missing,
//! changed, truncated or corrupt file, damaged DWARF) becomes a
//! [`Diagnostic`] naming the file and what is wrong, and addresses stay
//! unnamed. No name is ever taken from a file whose build id differs from
//! the recorded one.

mod cxxabi;
pub mod demangle;
mod elf;
mod glob;
mod locate;
pub mod names;
mod srcline;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

pub use demangle::{demangle, demangle_both, Demangled};
pub use glob::{matches, Glob};
pub use srcline::SourceLine;

/// The library functions module `m`'s thunks call, by their entry
/// address: the symbols of its `libcall` lines, and the targets of its
/// indirect calls the runtime could not name, named from their module
/// file's symbols (`name+0xN` inside one), else `FILE+0xOFFSET`. Each
/// file is read once.
pub fn library_calls(m: &crate::reader::dir::Module) -> Vec<(u64, String)> {
    let mut out = m.libcalls.clone();
    let mut files = std::collections::BTreeMap::new();
    for (entry, path, offset) in &m.indirect {
        let symbols = files
            .entry(path.clone())
            .or_insert_with(|| ModuleSymbols::load(path, None, &SymbolOptions::default()));
        let name = match symbols.lookup(*offset) {
            Some(s) if s.offset == 0 => s.mangled.to_string(),
            Some(s) => format!("{}+{:#x}", s.mangled, s.offset),
            None => {
                let file = path.file_name().unwrap_or(path.as_os_str());
                format!("{}+{offset:#x}", file.to_string_lossy())
            }
        };
        out.push((*entry, name));
    }
    out
}

/// Where to look for files by build id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolOptions {
    /// `--symbols-dir` directories, searched first: `DIR/.build-id/ab/cdef….debug`
    /// (and without `.debug`), and `DIR/<file name>` when its build id is
    /// the recorded one; also where `.gnu_debuglink` names are looked up last.
    pub symbols_dirs: Vec<PathBuf>,
    /// The system's debug directory (`/usr/lib/debug`): its `.build-id`
    /// tree, and `<dir>/<binary's directory>/<debuglink>`.
    pub debug_dir: Option<PathBuf>,
    /// The debuginfod client's cache, read only (nothing is fetched):
    /// `<cache>/<build id>/debuginfo` and `…/executable`.
    pub debuginfod_cache: Option<PathBuf>,
}

impl Default for SymbolOptions {
    /// `/usr/lib/debug`, and the cache the debuginfod client uses:
    /// `$DEBUGINFOD_CACHE_PATH`, else `$XDG_CACHE_HOME/debuginfod_client`,
    /// else `~/.cache/debuginfod_client`.
    fn default() -> Self {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let cache = env("DEBUGINFOD_CACHE_PATH")
            .or_else(|| env("XDG_CACHE_HOME").map(|c| c.join("debuginfod_client")))
            .or_else(|| env("HOME").map(|h| h.join(".cache/debuginfod_client")));
        SymbolOptions {
            symbols_dirs: Vec::new(),
            debug_dir: Some(PathBuf::from("/usr/lib/debug")),
            debuginfod_cache: cache,
        }
    }
}

/// A file that could not be used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub what: String,
}

impl Error {
    fn new(path: &Path, what: impl Into<String>) -> Error {
        Error {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.what)
    }
}

impl std::error::Error for Error {}

/// Something a user should hear once about a module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Diagnostic {
    /// The module's file now has another build id (or none), and no copy
    /// with the recorded one was found: the module is shown as addresses.
    BuildIdMismatch {
        /// The module's path.
        path: PathBuf,
        /// Its build id now.
        found: Option<String>,
        /// The recorded one.
        recorded: String,
        /// Where a copy was looked for.
        searched: Vec<PathBuf>,
    },
    /// The module's file could not be read or parsed, and no copy with its
    /// build id was found (`searched` is empty when none was recorded).
    Unreadable {
        /// The file and what is wrong.
        error: Error,
        /// Where a copy was looked for.
        searched: Vec<PathBuf>,
    },
    /// The module's file had changed or was missing; a copy with the
    /// recorded build id was used instead.
    Substituted {
        /// The module's path.
        path: PathBuf,
        /// The copy.
        by: PathBuf,
    },
    /// A debug file was found and not used.
    DebugFileRejected {
        /// The debug file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The site tables or the symbol table of a file are damaged.
    Symbols(Error),
    /// The DWARF of a file is damaged: no source lines.
    Dwarf(Error),
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let places = |f: &mut fmt::Formatter<'_>, searched: &[PathBuf]| {
            if searched.is_empty() {
                return write!(
                    f,
                    "; no place to look for a copy with the recorded id (--symbols-dir)"
                );
            }
            let list: Vec<String> = searched.iter().map(|p| p.display().to_string()).collect();
            write!(f, "; no copy with the recorded id in {}", list.join(", "))
        };
        match self {
            Diagnostic::BuildIdMismatch {
                path,
                found,
                recorded,
                searched,
            } => {
                write!(
                    f,
                    "build id mismatch: {} is now {}, the trace recorded {recorded}",
                    path.display(),
                    found.as_deref().unwrap_or("without build id"),
                )?;
                places(f, searched)?;
                write!(f, "; its addresses are shown unnamed")
            }
            Diagnostic::Unreadable { error, searched } => {
                write!(f, "{error}")?;
                places(f, searched)?;
                write!(f, "; its addresses are shown unnamed")
            }
            Diagnostic::Substituted { path, by } => write!(
                f,
                "{} is not the file the trace recorded (changed or gone); using {}, which has its build id",
                path.display(),
                by.display()
            ),
            Diagnostic::DebugFileRejected { path, why } => {
                write!(f, "ignoring debug file {}: {why}", path.display())
            }
            Diagnostic::Symbols(e) => write!(f, "{e}"),
            Diagnostic::Dwarf(e) => write!(f, "{e}; no source lines from it"),
        }
    }
}

/// Where a symbol's name came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// ftail's site tables.
    Sites,
    /// The ELF symbol tables (of the binary or its debug file).
    Elf,
}

/// A function an address lies in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    /// Demangled, without parameters: `ns::Klass::method`.
    pub name: Arc<str>,
    /// Demangled, with parameters: `ns::Klass::method(int) const`.
    pub signature: Arc<str>,
    /// As in the symbol table.
    pub mangled: Arc<str>,
    /// Address of its first byte (run-time from [`Mapped`], link-time
    /// from [`ModuleSymbols`]).
    pub start: u64,
    /// Its size (0: unknown).
    pub size: u64,
    /// The address looked up, minus `start`.
    pub offset: u64,
    /// Where the name came from.
    pub source: Source,
}

impl Symbol {
    /// The name as shown: with or without parameters.
    pub fn display(&self, with_params: bool) -> &str {
        if with_params {
            &self.signature
        } else {
            &self.name
        }
    }
}

/// A name, demangled on first use.
struct Name {
    mangled: Arc<str>,
    demangled: OnceLock<(Arc<str>, Arc<str>)>,
    source: Source,
}

impl Name {
    fn forms(&self) -> &(Arc<str>, Arc<str>) {
        self.demangled
            .get_or_init(|| match demangle::demangle_both(&self.mangled) {
                // A demangler spells out what the mangling encodes, which
                // may be any character.
                Some(d) => (
                    crate::untrusted::printable::printable(&d.name).into(),
                    crate::untrusted::printable::printable(&d.signature).into(),
                ),
                None => (self.mangled.clone(), self.mangled.clone()),
            })
    }
}

/// An address range named by `names[name]`.
#[derive(Clone, Copy)]
struct Entry {
    start: u64,
    size: u64,
    name: u32,
}

/// How many ranges before the nearest one a look-up examines for one that
/// contains the address (symbols nested in or overlapping others).
const LOOK_BACK: usize = 16;

/// The symbols and lines of one module's file, at link-time addresses.
pub struct ModuleSymbols {
    path: PathBuf,
    fixed: bool,
    names: Vec<Name>,
    /// Sorted by start; one entry per start.
    entries: Vec<Entry>,
    /// Link-time entry addresses of the instrumented functions (entry
    /// site + 5: what an entry event records), from the site tables.
    site_entries: Vec<u64>,
    /// The file with DWARF, if any: the debug file or the binary.
    dwarf_file: Option<elf::ElfFile>,
    lines: OnceLock<Option<srcline::Lines>>,
    diagnostics: Vec<Diagnostic>,
    late_diagnostics: Mutex<Vec<Diagnostic>>,
}

impl fmt::Debug for ModuleSymbols {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModuleSymbols")
            .field("path", &self.path)
            .field("symbols", &self.entries.len())
            .field("diagnostics", &self.diagnostics)
            .finish_non_exhaustive()
    }
}

impl ModuleSymbols {
    /// No symbols: what code outside every file has (the runtime's
    /// library thunks).
    pub fn empty() -> ModuleSymbols {
        ModuleSymbols {
            path: PathBuf::new(),
            fixed: true,
            names: Vec::new(),
            entries: Vec::new(),
            site_entries: Vec::new(),
            dwarf_file: None,
            lines: OnceLock::new(),
            diagnostics: Vec::new(),
            late_diagnostics: Mutex::new(Vec::new()),
        }
    }

    /// Reads the symbols of the module recorded at `path` with GNU build id
    /// `build_id` (hex, as in `KEY.modules`; `None` when none was recorded:
    /// the file is then taken as it is). Never fails: see
    /// [`ModuleSymbols::diagnostics`].
    pub fn load(path: &Path, build_id: Option<&str>, opts: &SymbolOptions) -> ModuleSymbols {
        let build_id = build_id.map(str::to_ascii_lowercase);
        let found = locate::locate(path, build_id.as_deref(), opts);
        let mut diagnostics = found.diagnostics;
        let mut table = TableBuilder::default();
        let mut site_entries = Vec::new();
        if let Some(bin) = &found.binary {
            // The tables are read only from a file with the recorded id
            // (`locate` returns no other).
            match crate::sites::read(&bin.data) {
                Ok(funcs) => {
                    for f in funcs {
                        site_entries.extend(
                            f.sites
                                .iter()
                                .filter(|s| s.kind == ftail_abi::SiteKind::Entry)
                                .map(|s| s.addr + 5),
                        );
                        let name = table.name(f.name, Source::Sites);
                        table.push(f.start, u64::from(f.size), name, 0);
                        if let Some((start, size)) = f.cold {
                            table.push(start, u64::from(size), name, 0);
                        }
                    }
                }
                Err(crate::sites::Error::NoTables) => {}
                // A debug file standing in for a missing binary keeps the
                // notes but not the tables they point to.
                Err(_) if is_debug_only(bin) => {}
                Err(e) => diagnostics.push(Diagnostic::Symbols(Error::new(
                    &bin.path,
                    format!("site tables: {e}"),
                ))),
            }
        }
        for (file, rank) in [(&found.debug, 1), (&found.binary, 2)] {
            let Some(file) = file else { continue };
            match file.symbols() {
                Ok(syms) => {
                    for s in syms {
                        let name = table.name(s.name, Source::Elf);
                        table.push(s.addr, s.size, name, rank * 2 + u8::from(!s.global));
                    }
                }
                Err(e) => diagnostics.push(Diagnostic::Symbols(e)),
            }
        }
        let fixed = found
            .binary
            .as_ref()
            .or(found.debug.as_ref())
            .is_some_and(|f| f.fixed);
        let dwarf_file = [found.debug, found.binary]
            .into_iter()
            .flatten()
            .find(|f| f.has_dwarf);
        let (names, entries) = table.finish();
        ModuleSymbols {
            path: path.to_path_buf(),
            fixed,
            names,
            entries,
            site_entries,
            dwarf_file,
            lines: OnceLock::new(),
            diagnostics,
            late_diagnostics: Mutex::new(Vec::new()),
        }
    }

    /// Link-time entry addresses of the instrumented functions, as entry
    /// events record them (entry site + 5); empty when the tables could not
    /// be read from a file with the recorded build id.
    pub fn site_entries(&self) -> &[u64] {
        &self.site_entries
    }

    /// The recorded path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file is linked at its run-time addresses (`ET_EXEC`):
    /// its load bias is then 0 whatever was recorded.
    pub fn is_fixed_position(&self) -> bool {
        self.fixed
    }

    /// How many address ranges have a name.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no address has a name.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The function at link-time address `addr`: the symbol whose range
    /// contains it, or the nearest one before it when that one's size is
    /// unknown.
    pub fn lookup(&self, addr: u64) -> Option<Symbol> {
        let end = self.entries.partition_point(|e| e.start <= addr);
        let nearest = end.checked_sub(1)?;
        let hit = self.entries[end.saturating_sub(LOOK_BACK)..end]
            .iter()
            .rev()
            .find(|e| addr - e.start < e.size)
            .or_else(|| Some(&self.entries[nearest]).filter(|e| e.size == 0))?;
        let name = &self.names[hit.name as usize];
        let (short, full) = name.forms();
        Some(Symbol {
            name: short.clone(),
            signature: full.clone(),
            mangled: name.mangled.clone(),
            start: hit.start,
            size: hit.size,
            offset: addr - hit.start,
            source: name.source,
        })
    }

    /// The source line of link-time address `addr`, from DWARF read on
    /// first use.
    pub fn srcline(&self, addr: u64) -> Option<SourceLine> {
        self.lines
            .get_or_init(|| {
                let file = self.dwarf_file.as_ref()?;
                match srcline::Lines::load(file) {
                    Ok(lines) => Some(lines),
                    Err(e) => {
                        self.late_diagnostics
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(Diagnostic::Dwarf(e));
                        None
                    }
                }
            })
            .as_ref()?
            .find(addr)
    }

    /// What went wrong or was done instead, to be told once per module.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        let late = self
            .late_diagnostics
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.diagnostics
            .iter()
            .chain(late.iter())
            .cloned()
            .collect()
    }
}

/// Whether a file is a debug file only (`objcopy --only-keep-debug`): its
/// code sections hold no bytes.
fn is_debug_only(f: &elf::ElfFile) -> bool {
    use object::{Object, ObjectSection};
    object::File::parse(&*f.data).is_ok_and(|o| {
        o.section_by_name(".text")
            .is_some_and(|s| s.kind() == object::SectionKind::UninitializedData)
    })
}

/// Collects names and ranges, then sorts them into a table.
#[derive(Default)]
struct TableBuilder {
    names: Vec<Name>,
    by_name: HashMap<(Arc<str>, bool), u32>,
    /// (start, size, name, rank: lower wins at the same start).
    ranges: Vec<(u64, u64, u32, u8)>,
}

impl TableBuilder {
    fn name(&mut self, mangled: String, source: Source) -> u32 {
        // Made printable once, here, so that no output can show a name's
        // control characters raw (a newline would forge a line of output).
        let mangled = match crate::untrusted::printable::printable(&mangled) {
            std::borrow::Cow::Borrowed(_) => mangled,
            std::borrow::Cow::Owned(escaped) => escaped,
        };
        let key: (Arc<str>, bool) = (mangled.into(), source == Source::Sites);
        if let Some(&i) = self.by_name.get(&key) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(Name {
            mangled: key.0.clone(),
            demangled: OnceLock::new(),
            source,
        });
        self.by_name.insert(key, i);
        i
    }

    fn push(&mut self, start: u64, size: u64, name: u32, rank: u8) {
        self.ranges.push((start, size, name, rank));
    }

    fn finish(mut self) -> (Vec<Name>, Vec<Entry>) {
        // At one start, the best rank wins; among equals, the one with a
        // size, then the shorter name (`memcpy` over `__memcpy_avx_unaligned`
        // is a matter of taste; shorter is the usual alias).
        self.ranges.sort_by(|a, b| {
            let len = |r: &(u64, u64, u32, u8)| self.names[r.2 as usize].mangled.len();
            (a.0, a.3, a.1 == 0, len(a)).cmp(&(b.0, b.3, b.1 == 0, len(b)))
        });
        let mut entries: Vec<Entry> = Vec::with_capacity(self.ranges.len());
        for &(start, size, name, _) in &self.ranges {
            match entries.last_mut() {
                // The winner keeps its name; a size only another knows is
                // taken over.
                Some(e) if e.start == start => {
                    if e.size == 0 {
                        e.size = size;
                    }
                }
                _ => entries.push(Entry { start, size, name }),
            }
        }
        (self.names, entries)
    }
}

/// A module's symbols at the load bias of one mapping: the view a trace's
/// run-time addresses need.
#[derive(Clone, Debug)]
pub struct Mapped {
    /// The module's symbols.
    pub symbols: Arc<ModuleSymbols>,
    /// Added to link-time addresses (0 for a fixed-position executable).
    pub bias: u64,
}

impl Mapped {
    /// The function at run-time address `addr` ([`ModuleSymbols::lookup`]),
    /// with run-time `start`.
    pub fn lookup(&self, addr: u64) -> Option<Symbol> {
        let mut s = self.symbols.lookup(addr.checked_sub(self.bias)?)?;
        s.start += self.bias;
        Some(s)
    }

    /// The source line of run-time address `addr`.
    pub fn srcline(&self, addr: u64) -> Option<SourceLine> {
        self.symbols.srcline(addr.checked_sub(self.bias)?)
    }

    /// The module's diagnostics.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        self.symbols.diagnostics()
    }
}

/// Every module's symbols, each read once, shared between threads.
#[derive(Debug, Default)]
pub struct SymbolCache {
    opts: SymbolOptions,
    #[allow(clippy::type_complexity)]
    modules: Mutex<HashMap<(PathBuf, Option<String>), Arc<OnceLock<Arc<ModuleSymbols>>>>>,
}

impl SymbolCache {
    /// An empty cache looking for files as `opts` says.
    pub fn new(opts: SymbolOptions) -> SymbolCache {
        SymbolCache {
            opts,
            modules: Mutex::new(HashMap::new()),
        }
    }

    /// The symbols of the module recorded at `path` with `build_id` (hex,
    /// as in `KEY.modules`) and load bias `base`: read on first request,
    /// shared afterwards. Two threads asking at once for a module read it
    /// once; asking for different modules does not wait.
    pub fn module(&self, path: &Path, build_id: Option<&str>, base: u64) -> Mapped {
        let key = (path.to_path_buf(), build_id.map(str::to_ascii_lowercase));
        let cell = self
            .modules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .clone();
        let symbols = cell
            .get_or_init(|| Arc::new(ModuleSymbols::load(path, build_id, &self.opts)))
            .clone();
        let bias = if symbols.is_fixed_position() { 0 } else { base };
        Mapped { symbols, bias }
    }
}

#[cfg(test)]
mod corpus_tests;
#[cfg(test)]
mod tests;

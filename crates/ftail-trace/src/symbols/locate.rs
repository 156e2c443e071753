//! Finding the files to symbolize a recorded module from: the module's
//! own file if its build id is the recorded one, else a copy with that id;
//! and a separate debug file, by build id or `.gnu_debuglink`.

use std::path::{Path, PathBuf};

use super::elf::ElfFile;
use super::{Diagnostic, SymbolOptions};

/// The files found for one module.
pub(super) struct Located {
    /// The module's file, or a file with its build id (possibly a debug
    /// file: then `debug` is `None`, and its site tables are unreadable).
    pub binary: Option<ElfFile>,
    /// A separate debug file with symbols and DWARF.
    pub debug: Option<ElfFile>,
    /// What went wrong, or was done instead.
    pub diagnostics: Vec<Diagnostic>,
}

/// `.build-id/ab/cdef….debug`, relative to a debug directory.
fn build_id_path(id: &str, suffix: &str) -> Option<PathBuf> {
    (id.len() > 2 && id.bytes().all(|c| c.is_ascii_hexdigit()))
        .then(|| PathBuf::from(format!(".build-id/{}/{}{suffix}", &id[..2], &id[2..])))
}

/// Every place, in order, where a file with build id `id` may be: first
/// debug files, then copies of the module itself.
fn by_build_id(id: &str, basename: Option<&str>, opts: &SymbolOptions) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in &opts.symbols_dirs {
        if let Some(p) = build_id_path(id, ".debug") {
            out.push(dir.join(p));
        }
        if let Some(p) = build_id_path(id, "") {
            out.push(dir.join(p));
        }
        if let Some(b) = basename {
            out.push(dir.join(b));
        }
    }
    if let (Some(dir), Some(p)) = (&opts.debug_dir, build_id_path(id, ".debug")) {
        out.push(dir.join(p));
    }
    if let Some(cache) = &opts.debuginfod_cache {
        if build_id_path(id, "").is_some() {
            out.push(cache.join(id).join("debuginfo"));
            out.push(cache.join(id).join("executable"));
        }
    }
    out
}

/// The first file of `candidates` whose build id is `id`.
fn first_with_id(candidates: &[PathBuf], id: &str, skip: Option<&Path>) -> Option<ElfFile> {
    candidates
        .iter()
        .filter(|p| Some(p.as_path()) != skip && p.is_file())
        .filter_map(|p| ElfFile::open(p).ok())
        .find(|f| f.build_id.as_deref() == Some(id))
}

/// Finds the files for the module recorded at `path` with build id
/// `recorded`.
pub(super) fn locate(path: &Path, recorded: Option<&str>, opts: &SymbolOptions) -> Located {
    let mut diagnostics = Vec::new();
    let basename = path.file_name().and_then(|n| n.to_str());
    let binary = match (ElfFile::open(path), recorded) {
        (Ok(f), None) => Some(f),
        (Ok(f), Some(id)) if f.build_id.as_deref() == Some(id) => Some(f),
        (found, Some(id)) => {
            let searched = by_build_id(id, basename, opts);
            let copy = first_with_id(&searched, id, Some(path));
            match (&copy, found) {
                (Some(c), _) => diagnostics.push(Diagnostic::Substituted {
                    path: path.to_path_buf(),
                    by: c.path.clone(),
                }),
                (None, Ok(f)) => diagnostics.push(Diagnostic::BuildIdMismatch {
                    path: path.to_path_buf(),
                    found: f.build_id,
                    recorded: id.to_string(),
                    searched,
                }),
                (None, Err(error)) => diagnostics.push(Diagnostic::Unreadable { error, searched }),
            }
            copy
        }
        (Err(error), None) => {
            diagnostics.push(Diagnostic::Unreadable {
                error,
                searched: Vec::new(),
            });
            None
        }
    };
    let debug = match &binary {
        Some(b) if !(b.has_symtab && b.has_dwarf) => debug_file(b, opts, &mut diagnostics),
        _ => None,
    };
    Located {
        binary,
        debug,
        diagnostics,
    }
}

/// A separate debug file for `binary`: by build id, then by
/// `.gnu_debuglink` (same directory, its `.debug/`, the debug directory
/// under the binary's own directory, the symbols directories), whose
/// CRC-32 must match.
fn debug_file(
    binary: &ElfFile,
    opts: &SymbolOptions,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<ElfFile> {
    if let Some(id) = &binary.build_id {
        let candidates: Vec<PathBuf> = by_build_id(id, None, opts);
        if let Some(f) = first_with_id(&candidates, id, Some(&binary.path)) {
            return Some(f);
        }
    }
    let (name, crc) = binary.debuglink.as_ref()?;
    // A link names a file, never a path.
    if name.contains('/') || name.is_empty() {
        return None;
    }
    let dir = binary.path.parent().unwrap_or(Path::new("/"));
    let mut candidates = vec![dir.join(name), dir.join(".debug").join(name)];
    if let Some(debug_dir) = &opts.debug_dir {
        let rel = dir.strip_prefix("/").unwrap_or(dir);
        candidates.push(debug_dir.join(rel).join(name));
    }
    candidates.extend(opts.symbols_dirs.iter().map(|d| d.join(name)));
    for p in candidates {
        if p == binary.path || !p.is_file() {
            continue;
        }
        let Ok(f) = ElfFile::open(&p) else {
            continue;
        };
        let actual = crc32fast::hash(&f.data);
        if actual != *crc {
            diagnostics.push(Diagnostic::DebugFileRejected {
                path: p,
                why: format!(
                    "its CRC-32 is {actual:08x}, {} links to one with {crc:08x}",
                    binary.path.display()
                ),
            });
            continue;
        }
        if f.build_id.is_some() && f.build_id != binary.build_id {
            diagnostics.push(Diagnostic::DebugFileRejected {
                path: p,
                why: "its build id is not the binary's".into(),
            });
            continue;
        }
        return Some(f);
    }
    None
}

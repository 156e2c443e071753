//! The functions of one process image, as its events name them: an entry
//! event's address (entry site + 5) resolved to a function, against the
//! module mapped at the event's time (a library loaded where another was
//! unloaded is another module).
//!
//! Built once per image from the symbols of its modules
//! ([`crate::symbols`]: site tables, ELF symbols and debug files, found by
//! build id, demangled), with one entry per instrumented function, so
//! that the analyses resolve every event with one hash probe. A module
//! whose right file cannot be found is reported, never named from the
//! wrong one.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::printable::printable;
use crate::reader::dir::Image;
use crate::symbols::{Mapped, SourceLine, SymbolCache, SymbolOptions};

/// A function's index in [`Names`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FuncId(pub u32);

/// A function of the image.
#[derive(Debug, Clone)]
pub struct Function {
    /// Demangled, without parameters (`ns::Klass::method`), as uftrace
    /// shows it; the symbol as compiled for C.
    pub name: Arc<str>,
    /// Demangled with parameters (the name again for C).
    pub signature: Arc<str>,
    /// The symbol as compiled (mangled for C++).
    pub mangled: Arc<str>,
    /// Index of its module in [`Image::modules`].
    pub module: usize,
    /// Its entry address as events record it (entry site + 5).
    pub entry: u64,
    /// Its first byte.
    pub start: u64,
}

/// Candidates for one entry address: the functions entered there, each
/// with the time span its module was mapped (usually one).
#[derive(Debug, Clone)]
enum Candidates {
    One(FuncId),
    Many(Vec<(u64, u64, FuncId)>),
}

/// The functions of a process image and how to find them.
#[derive(Debug, Default)]
pub struct Names {
    funcs: Vec<Function>,
    by_entry: FxHashMap<u64, Candidates>,
    /// Per module of the image: its symbols at its bias, and when mapped.
    modules: Vec<(Mapped, u64, u64)>,
    /// What could not be read, one line per problem.
    diagnostics: Vec<String>,
}

impl Names {
    /// Loads the symbols of `image`'s modules through `cache`.
    pub fn load(image: &Image, cache: &SymbolCache) -> Names {
        let mut names = Names::default();
        let mut spans: FxHashMap<u64, Vec<(u64, u64, FuncId)>> = FxHashMap::default();
        for (mi, m) in image.modules.iter().enumerate() {
            let mapped = cache.module(&m.path, m.build_id.as_deref(), m.base);
            let until = m.unloaded.unwrap_or(u64::MAX);
            for &link in mapped.symbols.site_entries() {
                let entry = link + mapped.bias;
                let Some(sym) = mapped.lookup(entry) else {
                    continue;
                };
                let id = FuncId(names.funcs.len() as u32);
                names.funcs.push(Function {
                    name: sym.name.clone(),
                    signature: sym.signature.clone(),
                    mangled: sym.mangled.clone(),
                    module: mi,
                    entry,
                    start: sym.start,
                });
                spans.entry(entry).or_default().push((m.loaded, until, id));
            }
            names.diagnostics.extend(
                mapped
                    .diagnostics()
                    .iter()
                    .map(|d| printable(&d.to_string()).into_owned()),
            );
            names.modules.push((mapped, m.loaded, until));
        }
        names.diagnostics.dedup();
        names.by_entry = spans
            .into_iter()
            .map(|(addr, mut c)| {
                let cands = if c.len() == 1 {
                    Candidates::One(c[0].2)
                } else {
                    c.sort_by_key(|x| x.0);
                    Candidates::Many(c)
                };
                (addr, cands)
            })
            .collect();
        names
    }

    /// The function entered at `addr` by an event at time `tsc`.
    #[inline]
    pub fn resolve(&self, addr: u64, tsc: u64) -> Option<FuncId> {
        match self.by_entry.get(&addr)? {
            Candidates::One(id) => Some(*id),
            Candidates::Many(c) => c
                .iter()
                .find(|(from, until, _)| *from <= tsc && tsc < *until)
                .map(|c| c.2),
        }
    }

    /// A function by id.
    pub fn function(&self, id: FuncId) -> &Function {
        &self.funcs[id.0 as usize]
    }

    /// Every function, by id.
    pub fn functions(&self) -> &[Function] {
        &self.funcs
    }

    /// The name of the function entered at `addr` at `tsc`, or the site's
    /// address when none is known.
    pub fn name(&self, addr: u64, tsc: u64) -> Arc<str> {
        match self.resolve(addr, tsc) {
            Some(id) => self.function(id).name.clone(),
            None => format!("{:#x}", addr.saturating_sub(5)).into(),
        }
    }

    /// The symbol any address at time `tsc` falls in (an exit site, a
    /// function without tables), as `name+offset`.
    pub fn symbolize(&self, addr: u64, tsc: u64) -> Option<String> {
        self.modules
            .iter()
            .filter(|(_, from, until)| *from <= tsc && tsc < *until)
            .find_map(|(m, ..)| m.lookup(addr))
            .map(|s| {
                if s.offset == 0 {
                    s.name.to_string()
                } else {
                    format!("{}+{:#x}", s.name, s.offset)
                }
            })
    }

    /// The source line where a function begins, from its module's DWARF
    /// (its first byte's line: the line of its opening brace).
    pub fn srcline(&self, id: FuncId) -> Option<SourceLine> {
        let f = self.function(id);
        self.modules.get(f.module)?.0.srcline(f.start)
    }

    /// Lines naming the modules that could not be used as recorded, and
    /// why.
    pub fn diagnostics(&self) -> &[String] {
        &self.diagnostics
    }
}

/// The names of every image of a trace, each module read once.
pub fn for_images(images: &[Image]) -> Vec<Names> {
    for_images_with(images, SymbolOptions::default())
}

/// [`for_images`] with where to look for moved or stripped files.
pub fn for_images_with(images: &[Image], opts: SymbolOptions) -> Vec<Names> {
    let cache = SymbolCache::new(opts);
    images.iter().map(|i| Names::load(i, &cache)).collect()
}

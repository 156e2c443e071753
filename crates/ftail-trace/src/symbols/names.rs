//! The functions of one process image, as its events name them: an entry
//! event's address (entry site + 5) resolved to a function, against the
//! module mapped at the event's time (a library loaded where another was
//! unloaded is another module).
//!
//! Built from the symbols of the image's modules ([`crate::symbols`]: site
//! tables, ELF symbols and debug files, found by build id, demangled). A
//! module's functions are tabled once, at link-time addresses, and
//! shared by every image that mapped it, wherever it was mapped: a trace
//! of many processes of one build costs one table, plus a few words per
//! module and image. A module whose right file cannot be found is
//! reported, never named from the wrong one.

use std::ops::Index;
use std::sync::{Arc, Mutex};

use rustc_hash::FxHashMap;

use crate::reader::dir::Image;
use crate::symbols::demangle::demangle;
use crate::symbols::{Mapped, ModuleSymbols, SourceLine, SymbolCache, SymbolOptions};
use crate::untrusted::printable::printable;

/// A function's index in [`Names`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FuncId(pub u32);

/// A function, as every image that mapped its module names it (its
/// addresses, which depend on the image, are [`Names::start`]'s).
#[derive(Debug, Clone)]
pub struct Function {
    /// Demangled, without parameters (`ns::Klass::method`), as uftrace
    /// shows it; the symbol as compiled for C.
    pub name: Arc<str>,
    /// Demangled with parameters (the name again for C).
    pub signature: Arc<str>,
    /// The symbol as compiled (mangled for C++).
    pub mangled: Arc<str>,
}

/// The instrumented functions of one module's file, at link-time
/// addresses: what every image that mapped it shares.
#[derive(Debug, Default)]
struct ModuleFuncs {
    funcs: Vec<Function>,
    /// Per question asked (patterns and how they are read): whether each
    /// function matches ([`Names::matching`]), worked out once for every
    /// image.
    matching: Mutex<FxHashMap<String, Arc<[bool]>>>,
    /// Per function: its first byte.
    starts: Vec<u64>,
    /// Per function: its entry address (entry site + 5).
    entries: Vec<u64>,
    /// Entry address (entry site + 5) to index in `funcs`.
    by_entry: FxHashMap<u64, u32>,
    /// The lowest and highest entry address (empty: `lo > hi`).
    lo: u64,
    hi: u64,
}

impl ModuleFuncs {
    fn build(symbols: &ModuleSymbols) -> ModuleFuncs {
        let mut m = ModuleFuncs {
            lo: u64::MAX,
            ..ModuleFuncs::default()
        };
        for &entry in symbols.site_entries() {
            let Some(sym) = symbols.lookup(entry) else {
                continue;
            };
            if m.by_entry.contains_key(&entry) {
                continue;
            }
            m.by_entry.insert(entry, m.funcs.len() as u32);
            m.funcs.push(Function {
                name: sym.name.clone(),
                signature: sym.signature.clone(),
                mangled: sym.mangled.clone(),
            });
            m.starts.push(sym.start);
            m.entries.push(entry);
            m.lo = m.lo.min(entry);
            m.hi = m.hi.max(entry);
        }
        m.funcs.shrink_to_fit();
        m.starts.shrink_to_fit();
        m.entries.shrink_to_fit();
        m.by_entry.shrink_to_fit();
        m
    }

    /// The library functions a module calls, at the run-time entry
    /// addresses of their thunks (each thunk's entry site is its first
    /// byte), named by their symbols, demangled.
    fn libcalls(libs: &[(u64, String)]) -> ModuleFuncs {
        let mut m = ModuleFuncs {
            lo: u64::MAX,
            ..ModuleFuncs::default()
        };
        for (entry, symbol) in libs {
            if m.by_entry.contains_key(entry) {
                continue;
            }
            let name: Arc<str> = printable(&demangle(symbol, false)).into();
            m.by_entry.insert(*entry, m.funcs.len() as u32);
            m.funcs.push(Function {
                name,
                signature: printable(&demangle(symbol, true)).into(),
                mangled: printable(symbol).into(),
            });
            m.starts.push(entry.saturating_sub(5));
            m.entries.push(*entry);
            m.lo = m.lo.min(*entry);
            m.hi = m.hi.max(*entry);
        }
        m
    }

    /// Whether each function matches, as `matches` says; asked once per
    /// `key`.
    fn matching(&self, key: &str, matches: &dyn Fn(&Function) -> bool) -> Arc<[bool]> {
        let mut cache = self.matching.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .entry(key.to_string())
            .or_insert_with(|| self.funcs.iter().map(matches).collect())
            .clone()
    }
}

/// One module of an image: its symbols at its bias, its functions, when
/// it was mapped, and the id of its first function.
#[derive(Debug)]
struct Slot {
    mapped: Mapped,
    /// Its module's index in [`Image::modules`].
    module: usize,
    funcs: Arc<ModuleFuncs>,
    first: u32,
    loaded: u64,
    until: u64,
}

impl Slot {
    fn mapped_at(&self, tsc: u64) -> bool {
        self.loaded <= tsc && tsc < self.until
    }
}

/// The run-time entry addresses of a module with functions, sorted by
/// `lo`; `reach` is the highest `hi` of this range and those before it,
/// so a look-up stops as soon as nothing further back can hold the
/// address. What a look-up needs of the module is here, one load away.
#[derive(Debug, Clone)]
struct Range {
    lo: u64,
    hi: u64,
    reach: u64,
    bias: u64,
    first: u32,
    slot: u32,
    funcs: Arc<ModuleFuncs>,
}

impl Range {
    /// The function entered at run-time address `addr`, if this module
    /// has one there.
    #[inline]
    fn find(&self, addr: u64) -> Option<FuncId> {
        let i = *self.funcs.by_entry.get(&addr.wrapping_sub(self.bias))?;
        Some(FuncId(self.first + i))
    }
}

/// [`Names::resolve`] remembered for the entry addresses a reader met
/// last: a thread enters the same few functions again and again.
/// Addresses whose function depends on the time are never kept.
pub struct ResolveCache {
    /// Entry address (0: empty, no entry is at 0) and its function.
    slots: Box<[(u64, Option<FuncId>); RESOLVE_SLOTS]>,
}

/// Slots of a [`ResolveCache`]: a power of two, a fixed size so that
/// the lookup needs no bounds check.
const RESOLVE_SLOTS: usize = 1024;

impl Default for ResolveCache {
    fn default() -> Self {
        ResolveCache {
            slots: Box::new([(0, None); RESOLVE_SLOTS]),
        }
    }
}

impl ResolveCache {
    /// [`Names::resolve`] of `names` (always the same `names` for one
    /// cache).
    #[inline(always)]
    pub fn resolve(&mut self, names: &Names, addr: u64, tsc: u64) -> Option<FuncId> {
        let i = ((addr >> 4) ^ (addr >> 14)) as usize % RESOLVE_SLOTS;
        let slot = self.slots[i];
        if slot.0 == addr && addr != 0 {
            return slot.1;
        }
        self.miss(names, addr, tsc, i)
    }

    /// Looks `addr` up in `names`, kept in slot `i` when its function
    /// does not depend on the time.
    #[cold]
    #[inline(never)]
    fn miss(&mut self, names: &Names, addr: u64, tsc: u64, i: usize) -> Option<FuncId> {
        match names.resolve_timeless(addr) {
            Some(found) => {
                self.slots[i] = (addr, found);
                found
            }
            None => names.resolve_at(addr, tsc),
        }
    }
}

/// The functions of a process image and how to find them.
#[derive(Debug, Default)]
pub struct Names {
    /// One per module of the image, in [`Image::modules`]' order.
    slots: Vec<Slot>,
    ranges: Vec<Range>,
    count: u32,
    /// What could not be read, one line per problem.
    diagnostics: Vec<String>,
}

/// Every module's symbols and functions, each read and tabled once.
#[derive(Debug)]
pub struct NameCache {
    symbols: SymbolCache,
    /// By the address of the module's shared symbols, which the value
    /// holds too, so the key is never reused.
    #[allow(clippy::type_complexity)]
    funcs: Mutex<FxHashMap<usize, (Arc<ModuleSymbols>, Arc<ModuleFuncs>)>>,
}

impl NameCache {
    /// An empty cache looking for files as `opts` says.
    pub fn new(opts: SymbolOptions) -> NameCache {
        NameCache {
            symbols: SymbolCache::new(opts),
            funcs: Mutex::new(FxHashMap::default()),
        }
    }

    fn funcs(&self, symbols: &Arc<ModuleSymbols>) -> Arc<ModuleFuncs> {
        let key = Arc::as_ptr(symbols) as usize;
        let mut cache = self.funcs.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .entry(key)
            .or_insert_with(|| (symbols.clone(), Arc::new(ModuleFuncs::build(symbols))))
            .1
            .clone()
    }
}

impl Names {
    /// Loads the symbols of `image`'s modules through `cache`.
    pub fn load(image: &Image, cache: &NameCache) -> Names {
        let mut names = Names::default();
        for (mi, m) in image.modules.iter().enumerate() {
            let mapped = cache.symbols.module(&m.path, m.build_id.as_deref(), m.base);
            let funcs = cache.funcs(&mapped.symbols);
            names.diagnostics.extend(
                mapped
                    .diagnostics()
                    .iter()
                    .map(|d| printable(&d.to_string()).into_owned()),
            );
            names.add_slot(mi, m, mapped, funcs);
            let libcalls = super::library_calls(m);
            if !libcalls.is_empty() {
                let none = Mapped {
                    symbols: Arc::new(ModuleSymbols::empty()),
                    bias: 0,
                };
                let libs = Arc::new(ModuleFuncs::libcalls(&libcalls));
                names.add_slot(mi, m, none, libs);
            }
        }
        names.diagnostics.dedup();
        names.ranges.sort_by_key(|r| (r.lo, r.slot));
        let mut reach = 0;
        for r in &mut names.ranges {
            reach = reach.max(r.hi);
            r.reach = reach;
        }
        names
    }

    /// Adds the functions `funcs` of module `m` (index `mi`) as mapped.
    fn add_slot(
        &mut self,
        mi: usize,
        m: &crate::reader::dir::Module,
        mapped: Mapped,
        funcs: Arc<ModuleFuncs>,
    ) {
        let names = self;
        {
            if !funcs.funcs.is_empty() {
                names.ranges.push(Range {
                    lo: funcs.lo.wrapping_add(mapped.bias),
                    hi: funcs.hi.wrapping_add(mapped.bias),
                    reach: 0,
                    bias: mapped.bias,
                    first: names.count,
                    slot: names.slots.len() as u32,
                    funcs: funcs.clone(),
                });
            }
            let first = names.count;
            names.count += funcs.funcs.len() as u32;
            names.slots.push(Slot {
                mapped,
                module: mi,
                funcs,
                first,
                loaded: m.loaded,
                until: m.unloaded.unwrap_or(u64::MAX),
            });
        }
    }

    /// The function entered at `addr` by an event at time `tsc`: the one
    /// entered there, whatever the time, when only one module ever had a
    /// function there; else the one whose module was mapped at `tsc`.
    #[inline]
    pub fn resolve(&self, addr: u64, tsc: u64) -> Option<FuncId> {
        // Most images have one instrumented module.
        if let [only] = self.ranges.as_slice() {
            return (only.lo..=only.hi)
                .contains(&addr)
                .then(|| only.find(addr))
                .flatten();
        }
        let mut found = None;
        for (id, _) in self.candidates(addr) {
            if found.is_some() {
                return self.resolve_at(addr, tsc);
            }
            found = Some(id);
        }
        found
    }

    /// The function entered at `addr` at any time, when the answer does
    /// not depend on the time (`None` when it does: several modules had a
    /// function there).
    #[inline]
    fn resolve_timeless(&self, addr: u64) -> Option<Option<FuncId>> {
        if let [only] = self.ranges.as_slice() {
            return Some(
                (only.lo..=only.hi)
                    .contains(&addr)
                    .then(|| only.find(addr))
                    .flatten(),
            );
        }
        let mut found = None;
        for (id, _) in self.candidates(addr) {
            if found.is_some() {
                return None;
            }
            found = Some(id);
        }
        Some(found)
    }

    /// Among several modules with a function at `addr`, the first loaded
    /// of those mapped at `tsc`.
    #[cold]
    fn resolve_at(&self, addr: u64, tsc: u64) -> Option<FuncId> {
        self.candidates(addr)
            .filter(|(_, s)| s.mapped_at(tsc))
            .min_by_key(|(id, s)| (s.loaded, id.0))
            .map(|c| c.0)
    }

    /// Every function entered at `addr`, with its module.
    #[inline]
    fn candidates(&self, addr: u64) -> impl Iterator<Item = (FuncId, &Slot)> {
        let end = self.ranges.partition_point(|r| r.lo <= addr);
        self.ranges[..end]
            .iter()
            .rev()
            .take_while(move |r| r.reach >= addr)
            .filter(move |r| addr <= r.hi)
            .filter_map(move |r| Some((r.find(addr)?, &self.slots[r.slot as usize])))
    }

    /// The module of function `id`, and its index there.
    #[inline]
    fn slot(&self, id: FuncId) -> (usize, usize) {
        if self.slots.len() == 1 {
            return (0, id.0 as usize);
        }
        let k = self
            .slots
            .partition_point(|s| s.first <= id.0)
            .saturating_sub(1);
        (k, id.0.saturating_sub(self.slots[k].first) as usize)
    }

    /// A function by id.
    #[inline]
    pub fn function(&self, id: FuncId) -> &Function {
        let (k, i) = self.slot(id);
        &self.slots[k].funcs.funcs[i]
    }

    /// Every function, by id.
    pub fn functions(&self) -> Functions<'_> {
        Functions { names: self }
    }

    /// The index in [`Image::modules`] of function `id`'s module.
    pub fn module_of(&self, id: FuncId) -> usize {
        self.slots.get(self.slot(id).0).map_or(0, |s| s.module)
    }

    /// The address of function `id`'s first byte in this image.
    pub fn start(&self, id: FuncId) -> u64 {
        let (k, i) = self.slot(id);
        let s = &self.slots[k];
        s.funcs.starts[i].wrapping_add(s.mapped.bias)
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
        self.slots
            .iter()
            .filter(|s| s.mapped_at(tsc))
            .find_map(|s| s.mapped.lookup(addr))
            .map(|s| {
                if s.offset == 0 {
                    s.name.to_string()
                } else {
                    format!("{}+{:#x}", s.name, s.offset)
                }
            })
    }

    /// The source line where a function begins, from its module's DWARF
    /// (the line of its opening brace).
    pub fn srcline(&self, id: FuncId) -> Option<SourceLine> {
        let (k, i) = self.slot(id);
        let s = self.slots.get(k)?;
        // The first instruction past the entry site: the site is placed
        // before the function's first line-table row, so its own bytes
        // belong to the row before (the previous function's closing
        // brace), or to none in a file's first function.
        s.mapped.symbols.srcline(*s.funcs.entries.get(i)?)
    }

    /// Per function, by id: whether `matches` says it matches, worked
    /// out once per module whatever the number of images that mapped it;
    /// `key` names the question (the patterns and how they are read).
    pub fn matching(&self, key: &str, matches: &dyn Fn(&Function) -> bool) -> Vec<bool> {
        let mut out = Vec::with_capacity(self.count as usize);
        for s in &self.slots {
            out.extend_from_slice(&s.funcs.matching(key, matches));
        }
        out
    }

    /// Lines naming the modules that could not be used as recorded, and
    /// why.
    pub fn diagnostics(&self) -> &[String] {
        &self.diagnostics
    }
}

/// The functions of an image, by id ([`Names::functions`]).
#[derive(Clone, Copy)]
pub struct Functions<'a> {
    names: &'a Names,
}

impl<'a> Functions<'a> {
    /// How many.
    pub fn len(&self) -> usize {
        self.names.count as usize
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.names.count == 0
    }

    /// Each, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &'a Function> + 'a {
        self.names.slots.iter().flat_map(|s| s.funcs.funcs.iter())
    }
}

impl Index<usize> for Functions<'_> {
    type Output = Function;

    fn index(&self, i: usize) -> &Function {
        self.names.function(FuncId(i as u32))
    }
}

/// The names of every image of a trace, each module read once.
pub fn for_images(images: &[Image]) -> Vec<Names> {
    for_images_with(images, SymbolOptions::default())
}

/// [`for_images`] with where to look for moved or stripped files.
pub fn for_images_with(images: &[Image], opts: SymbolOptions) -> Vec<Names> {
    for_images_where(images, opts, |_| true)
}

/// [`for_images_with`] for the images `wanted` selects; the others get
/// no names (nothing of theirs is read).
pub fn for_images_where(
    images: &[Image],
    opts: SymbolOptions,
    wanted: impl Fn(&Image) -> bool,
) -> Vec<Names> {
    let cache = NameCache::new(opts);
    images
        .iter()
        .map(|i| {
            if wanted(i) {
                Names::load(i, &cache)
            } else {
                Names::default()
            }
        })
        .collect()
}

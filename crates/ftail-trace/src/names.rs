//! The functions of one process image, as its events name them: an entry
//! event's address (entry site + 5) resolved to a function, against the
//! module mapped at the event's time (a library loaded where another was
//! unloaded is another module).
//!
//! Built once per image from its modules' site tables (exact for every
//! instrumented function); lookups are one hash probe, so the analyses
//! can resolve every event.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::reader::dir::{Image, Module};

/// A function's index in [`Names`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FuncId(pub u32);

/// A function of the image.
#[derive(Debug, Clone)]
pub struct Function {
    /// Demangled, without parameters (`ns::Klass::method`), as uftrace
    /// shows it; the symbol as compiled for C.
    pub name: Arc<str>,
    /// The symbol as compiled (mangled for C++).
    pub mangled: Arc<str>,
    /// Index of its module in [`Image::modules`].
    pub module: usize,
    /// Its entry address as events record it (entry site + 5).
    pub entry: u64,
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
    /// What could not be read, one line per module.
    diagnostics: Vec<String>,
}

fn is_fixed_position(data: &[u8]) -> bool {
    // e_type at offset 16: ET_EXEC (2) is linked at its run-time address.
    data.len() > 18 && u16::from_le_bytes([data[16], data[17]]) == 2
}

impl Names {
    /// Reads the site tables of `image`'s modules. A module whose file
    /// cannot be read, or whose build id is no longer the recorded one, is
    /// named in [`Names::diagnostics`] and left unnamed (its functions show
    /// as addresses), never named from the wrong file.
    pub fn load(image: &Image) -> Names {
        let mut names = Names::default();
        let mut spans: FxHashMap<u64, Vec<(u64, u64, FuncId)>> = FxHashMap::default();
        for (mi, m) in image.modules.iter().enumerate() {
            if let Err(why) = names.load_module(mi, m, &mut spans) {
                names.diagnostics.push(format!(
                    "{}: {why}; its functions show as addresses",
                    m.path.display()
                ));
            }
        }
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

    fn load_module(
        &mut self,
        mi: usize,
        m: &Module,
        spans: &mut FxHashMap<u64, Vec<(u64, u64, FuncId)>>,
    ) -> Result<(), String> {
        let data = std::fs::read(&m.path).map_err(|e| format!("cannot be read: {e}"))?;
        if let (Some(recorded), Some(now)) = (&m.build_id, crate::sites::build_id(&data)) {
            if *recorded != now {
                return Err(format!(
                    "build id is now {now}, the trace recorded {recorded} (the file changed \
                     since)"
                ));
            }
        }
        let funcs = crate::sites::read(&data).map_err(|e| e.to_string())?;
        let bias = if is_fixed_position(&data) { 0 } else { m.base };
        let until = m.unloaded.unwrap_or(u64::MAX);
        for f in funcs {
            let Some(entry) = f
                .sites
                .iter()
                .find(|s| s.kind == ftail_abi::SiteKind::Entry)
                .map(|s| bias + s.addr + 5)
            else {
                continue;
            };
            let id = FuncId(self.funcs.len() as u32);
            self.funcs.push(Function {
                name: crate::trace::demangle(&f.name).into(),
                mangled: f.name.into(),
                module: mi,
                entry,
            });
            spans.entry(entry).or_default().push((m.loaded, until, id));
        }
        Ok(())
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

    /// Lines naming the modules that could not be used, and why.
    pub fn diagnostics(&self) -> &[String] {
        &self.diagnostics
    }
}

/// The names of every image of a trace, loaded once each.
pub fn for_images(images: &[Image]) -> Vec<Names> {
    images.iter().map(Names::load).collect()
}

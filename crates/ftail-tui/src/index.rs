//! A thread's timeline as fixed-size lines, built once per thread and
//! filter set by a background thread, read a screenful at a time.
//!
//! Each line is what `replay` would print for one shown item (an entry, an
//! exit, or a call without shown callees on one line), in 32 bytes: the
//! first `memory_lines` lines stay in memory, the rest go to an unlinked
//! file (created `O_EXCL`, 0600, by `tempfile`) read back a chunk at a
//! time through a small cache, so memory stays bounded whatever the
//! trace's size. An entry knows the line of its exit and the exit its
//! entry's, so folding a call or jumping to its caller skips a whole
//! subtree in one step.
//!
//! Searching by function does not read every line: each block of
//! `block_lines` lines keeps the set of functions its lines call, as a
//! bitmap of [`SET_BITS`] bits (a function sets bit `id % SET_BITS`, so
//! the set is exact up to that many functions and a superset beyond).
//! A search tests the blocks' sets and reads only the blocks that may
//! hold a match: 1 KiB per block, 1.5 MiB for 100 M lines in blocks of
//! 64 Ki.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ftail_abi::trace::EventKind;
use ftail_trace::names::Names;
use ftail_trace::reader::calls::Calls;
use ftail_trace::reader::events::Events;
use ftail_trace::values::{Enums, Values};
use ftail_trace::view::{Filters, Leaves, Matches, Shown, Threshold, Visible};
use rustc_hash::FxHashMap;

/// No line (an entry whose exit was never recorded).
pub const NONE: u64 = u64::MAX;

/// What a line shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `f() {`
    Enter,
    /// `} /* f */`
    Leave,
    /// `f();`
    Leaf,
}

/// One line of a thread's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    /// Entry time (an exit: its end).
    pub tsc: u64,
    /// An entry: its exit's line ([`NONE`] while open); an exit: its
    /// entry's line; a leaf: its end time.
    pub other: u64,
    /// The entry line of the call around it ([`NONE`] for an outermost
    /// call): its caller, as shown, in one step.
    pub parent: u64,
    /// The function's id plus one; 0 when not known.
    pub func: u32,
    /// Shown frames around it.
    pub depth: u16,
    /// What it shows.
    pub kind: Kind,
    /// A resumed slice (`/* resumed */`).
    pub resumed: bool,
    /// Began before a ring's window.
    pub earlier: bool,
    /// How the call ended (exits and leaves).
    pub how: EventKind,
}

const LINE_BYTES: usize = 32;
/// Lines per chunk of the file part (and of the read cache).
const CHUNK: u64 = 4096;
/// Chunks the read cache keeps.
const CACHED_CHUNKS: usize = 32;
/// Bits of a block's set of functions.
pub const SET_BITS: usize = 8192;
const SET_WORDS: usize = SET_BITS / 64;
/// Lines per block of the search's summaries, unless told otherwise.
pub const BLOCK_LINES: u64 = 1 << 16;
/// Most recorded values kept as text (beyond that, a value shows as `…`).
const MAX_VALUES: usize = 1 << 20;

fn kind_code(l: &Line) -> u8 {
    let k = match l.kind {
        Kind::Enter => 0,
        Kind::Leave => 1,
        Kind::Leaf => 2,
    };
    k | (u8::from(l.resumed) << 2) | (u8::from(l.earlier) << 3)
}

fn encode(l: &Line, out: &mut [u8]) {
    out[..8].copy_from_slice(&l.tsc.to_le_bytes());
    out[8..16].copy_from_slice(&l.other.to_le_bytes());
    out[16..24].copy_from_slice(&l.parent.to_le_bytes());
    out[24..28].copy_from_slice(&l.func.to_le_bytes());
    out[28..30].copy_from_slice(&l.depth.to_le_bytes());
    out[30] = kind_code(l);
    out[31] = l.how as u8;
}

fn decode(b: &[u8]) -> Line {
    let word = |r: std::ops::Range<usize>| {
        let mut a = [0u8; 8];
        a[..r.len()].copy_from_slice(&b[r]);
        u64::from_le_bytes(a)
    };
    let code = b[30];
    Line {
        tsc: word(0..8),
        other: word(8..16),
        parent: word(16..24),
        func: word(24..28) as u32,
        depth: word(28..30) as u16,
        kind: match code & 3 {
            0 => Kind::Enter,
            1 => Kind::Leave,
            _ => Kind::Leaf,
        },
        resumed: code & 4 != 0,
        earlier: code & 8 != 0,
        how: EventKind::from_u8(b[31]).unwrap_or(EventKind::Exit),
    }
}

/// The lines: a memory part, then a file part written a chunk at a time
/// (the chunk being filled is `tail`).
struct Store {
    memory: Vec<Line>,
    memory_lines: u64,
    spill_dir: PathBuf,
    file: Option<File>,
    /// Lines in the file.
    filed: u64,
    tail: Vec<Line>,
    cache: Vec<(u64, Arc<[Line]>)>,
    error: Option<String>,
    /// Which functions each block's lines call.
    blocks: Blocks,
}

/// The search's summaries: per complete block of `lines` lines, the
/// functions its entries and one-line calls call (exits repeat their
/// entry's function and are not searched).
struct Blocks {
    lines: u64,
    done: Vec<[u64; SET_WORDS]>,
    filling: Box<[u64; SET_WORDS]>,
}

impl Blocks {
    fn new(lines: u64) -> Blocks {
        Blocks {
            lines: lines.max(1),
            done: Vec::new(),
            filling: Box::new([0; SET_WORDS]),
        }
    }

    /// Counts line number `at`, `l`.
    fn add(&mut self, at: u64, l: &Line) {
        if l.kind != Kind::Leave && l.func != 0 {
            let bit = l.func as usize % SET_BITS;
            self.filling[bit / 64] |= 1 << (bit % 64);
        }
        if (at + 1).is_multiple_of(self.lines) {
            self.done.push(*self.filling);
            *self.filling = [0; SET_WORDS];
        }
    }

    /// Whether block `b` may hold a line of `set` (a block being filled
    /// may).
    fn may_hold(&self, b: u64, set: &FuncSet) -> bool {
        self.done.get(b as usize).is_none_or(|bits| {
            bits.iter()
                .zip(set.mask.iter())
                .any(|(have, want)| have & want != 0)
        })
    }
}

/// Functions searched for, by id plus one.
pub struct FuncSet {
    wanted: Vec<bool>,
    mask: Box<[u64; SET_WORDS]>,
}

impl FuncSet {
    /// The set of `funcs` (ids plus one; 0, an unknown function, is
    /// never found).
    pub fn new(funcs: impl IntoIterator<Item = u32>) -> FuncSet {
        let mut set = FuncSet {
            wanted: Vec::new(),
            mask: Box::new([0; SET_WORDS]),
        };
        for f in funcs.into_iter().filter(|&f| f != 0) {
            let i = f as usize;
            if set.wanted.len() <= i {
                set.wanted.resize(i + 1, false);
            }
            set.wanted[i] = true;
            let bit = i % SET_BITS;
            set.mask[bit / 64] |= 1 << (bit % 64);
        }
        set
    }

    /// Whether line `l` is a call of one of the functions (an entry or
    /// a one-line call, not an exit).
    pub fn takes(&self, l: &Line) -> bool {
        l.kind != Kind::Leave && self.wanted.get(l.func as usize).copied().unwrap_or(false)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        !self.wanted.contains(&true)
    }
}

impl Store {
    fn new(memory_lines: u64, spill_dir: &Path, block_lines: u64) -> Store {
        Store {
            memory: Vec::new(),
            memory_lines,
            spill_dir: spill_dir.to_path_buf(),
            file: None,
            filed: 0,
            tail: Vec::new(),
            cache: Vec::new(),
            error: None,
            blocks: Blocks::new(block_lines),
        }
    }

    fn len(&self) -> u64 {
        self.memory.len() as u64 + self.filed + self.tail.len() as u64
    }

    fn push(&mut self, l: Line) {
        self.blocks.add(self.len(), &l);
        if (self.memory.len() as u64) < self.memory_lines {
            self.memory.push(l);
            return;
        }
        self.tail.push(l);
        if self.tail.len() as u64 == CHUNK {
            self.flush_tail();
        }
    }

    fn flush_tail(&mut self) {
        if self.tail.is_empty() || self.error.is_some() {
            return;
        }
        if self.file.is_none() {
            match tempfile::tempfile_in(&self.spill_dir) {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    self.error = Some(format!(
                        "cannot spill the index to {}: {e}",
                        self.spill_dir.display()
                    ));
                    return;
                }
            }
        }
        let mut bytes = vec![0u8; self.tail.len() * LINE_BYTES];
        for (l, b) in self.tail.iter().zip(bytes.chunks_mut(LINE_BYTES)) {
            encode(l, b);
        }
        let at = self.filed * LINE_BYTES as u64;
        if let Some(Err(e)) = self.file.as_ref().map(|f| f.write_all_at(&bytes, at)) {
            self.error = Some(format!("writing the index: {e}"));
            return;
        }
        self.filed += self.tail.len() as u64;
        self.tail.clear();
    }

    /// Sets line `i`'s `other`.
    fn patch(&mut self, i: u64, other: u64) {
        let mem = self.memory.len() as u64;
        if i < mem {
            self.memory[i as usize].other = other;
        } else if i >= mem + self.filed {
            if let Some(l) = self.tail.get_mut((i - mem - self.filed) as usize) {
                l.other = other;
            }
        } else {
            let at = (i - mem) * LINE_BYTES as u64 + 8;
            if let Some(f) = &self.file {
                let _ = f.write_all_at(&other.to_le_bytes(), at);
            }
            let chunk = (i - mem) / CHUNK;
            self.cache.retain(|(c, _)| *c != chunk);
        }
    }

    fn get(&mut self, i: u64) -> Option<Line> {
        let mem = self.memory.len() as u64;
        if i < mem {
            return Some(self.memory[i as usize]);
        }
        let j = i - mem;
        if j >= self.filed {
            return self.tail.get((j - self.filed) as usize).copied();
        }
        let chunk = j / CHUNK;
        if let Some(pos) = self.cache.iter().position(|(c, _)| *c == chunk) {
            let hit = self.cache.remove(pos);
            let line = hit.1.get((j % CHUNK) as usize).copied();
            self.cache.push(hit);
            return line;
        }
        let lines = self.read_chunk(chunk)?;
        let line = lines.get((j % CHUNK) as usize).copied();
        if self.cache.len() == CACHED_CHUNKS {
            self.cache.remove(0);
        }
        self.cache.push((chunk, lines));
        line
    }

    fn read_chunk(&self, chunk: u64) -> Option<Arc<[Line]>> {
        let first = chunk * CHUNK;
        let n = CHUNK.min(self.filed - first) as usize;
        let mut bytes = vec![0u8; n * LINE_BYTES];
        self.file
            .as_ref()?
            .read_exact_at(&mut bytes, first * LINE_BYTES as u64)
            .ok()?;
        Some(bytes.chunks(LINE_BYTES).map(decode).collect())
    }
}

/// What the builder found beside the lines.
#[derive(Default)]
struct Extras {
    /// Recorded arguments and return values, as text, by line.
    args: FxHashMap<u64, Box<str>>,
    rets: FxHashMap<u64, Box<str>>,
    /// Addresses of functions not known, by line.
    unknown: FxHashMap<u64, u64>,
    /// Per function id: its longest call's ticks and line.
    slowest: FxHashMap<u32, (u64, u64)>,
    values_dropped: bool,
}

/// How far the builder got.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// It has read everything.
    pub done: bool,
    /// Event bytes read so far, of `total`.
    pub read: u64,
    /// The thread file's size.
    pub total: u64,
    /// Damage or an error, when reading stopped early.
    pub note: Option<String>,
}

struct Shared {
    store: Mutex<Store>,
    extras: Mutex<Extras>,
    progress: Mutex<Progress>,
    stop: AtomicBool,
}

/// A thread's timeline, being built or built.
pub struct Index {
    shared: Arc<Shared>,
    worker: Option<std::thread::JoinHandle<()>>,
    /// The image's clock, in ticks per second.
    pub hz: f64,
}

/// What a timeline is built from.
pub struct Source {
    /// The thread's event file.
    pub path: PathBuf,
    /// Every image's names.
    pub names: Arc<Vec<Names>>,
    /// The thread's image.
    pub image: usize,
    /// The filters, as replay applies them.
    pub filters: Filters,
    /// The trace directory (for enumerations).
    pub dir: PathBuf,
    /// The image's clock.
    pub hz: f64,
}

impl Index {
    /// Starts building `src`'s timeline: at most `memory_lines` lines in
    /// memory, the rest in a file in `spill_dir`.
    /// Searches summarise blocks of `block_lines` lines.
    pub fn build(src: Source, memory_lines: u64, spill_dir: &Path, block_lines: u64) -> Index {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(memory_lines, spill_dir, block_lines)),
            extras: Mutex::new(Extras::default()),
            progress: Mutex::new(Progress::default()),
            stop: AtomicBool::new(false),
        });
        let hz = src.hz;
        let worker = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("ftail-index".into())
                .spawn(move || run(&shared, &src))
                .ok()
        };
        Index { shared, worker, hz }
    }

    /// Lines indexed so far.
    pub fn len(&self) -> u64 {
        self.shared.store.lock().map_or(0, |s| s.len())
    }

    /// Whether no line was indexed yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Line `i`, if indexed.
    pub fn get(&self, i: u64) -> Option<Line> {
        self.shared.store.lock().ok()?.get(i)
    }

    /// Lines `from..from+n` (fewer at the end).
    pub fn range(&self, from: u64, n: u64) -> Vec<Line> {
        let Ok(mut s) = self.shared.store.lock() else {
            return Vec::new();
        };
        (from..from.saturating_add(n))
            .map_while(|i| s.get(i))
            .collect()
    }

    /// The first (`forward`) or last line of `range` that calls a
    /// function of `set`, among the lines indexed. Reads only the blocks
    /// whose summary may hold one.
    pub fn find(&self, range: std::ops::Range<u64>, forward: bool, set: &FuncSet) -> Option<u64> {
        let k = self.shared.store.lock().ok()?.blocks.lines;
        let mut at = range.start;
        let mut end = range.end;
        while at < end {
            // The part of the range in one block: its first or its last.
            let (from, to) = if forward {
                (at, ((at / k + 1) * k).min(end))
            } else {
                (((end - 1) / k * k).max(at), end)
            };
            let mut s = self.shared.store.lock().ok()?;
            if s.blocks.may_hold(from / k, set) {
                let mut lines = (from..to).map(|i| (i, s.get(i)));
                let hit = if forward {
                    lines.find(|(_, l)| l.as_ref().is_none_or(|l| set.takes(l)))
                } else {
                    lines.rfind(|(_, l)| l.as_ref().is_none_or(|l| set.takes(l)))
                };
                match hit {
                    Some((i, Some(_))) => return Some(i),
                    // Past the lines indexed.
                    Some((_, None)) => return None,
                    None => {}
                }
            }
            drop(s);
            if forward {
                at = to;
            } else {
                end = from;
            }
        }
        None
    }

    /// How far building got.
    pub fn progress(&self) -> Progress {
        let mut p = self
            .shared
            .progress
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default();
        if let Ok(s) = self.shared.store.lock() {
            if let Some(e) = &s.error {
                p.note = Some(e.clone());
            }
        }
        p
    }

    /// The recorded arguments of line `i`, as replay shows them.
    pub fn args(&self, i: u64) -> Option<Box<str>> {
        self.shared.extras.lock().ok()?.args.get(&i).cloned()
    }

    /// The recorded return value of line `i`.
    pub fn ret(&self, i: u64) -> Option<Box<str>> {
        self.shared.extras.lock().ok()?.rets.get(&i).cloned()
    }

    /// The entry address of line `i`'s function when it has no name.
    pub fn unknown_addr(&self, i: u64) -> Option<u64> {
        self.shared.extras.lock().ok()?.unknown.get(&i).copied()
    }

    /// The line of the longest call of function `func` (id plus one).
    pub fn slowest(&self, func: u32) -> Option<u64> {
        self.shared
            .extras
            .lock()
            .ok()?
            .slowest
            .get(&func)
            .map(|&(_, l)| l)
    }

    /// Whether some recorded values were not kept.
    pub fn values_dropped(&self) -> bool {
        self.shared.extras.lock().is_ok_and(|e| e.values_dropped)
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// Lines built before they are handed to the store, so the viewer's
/// reads wait for the lock only briefly.
const BATCH: usize = 8192;

fn run(shared: &Shared, src: &Source) {
    let total = ftail_trace::reader::events::record_bytes(&src.path).unwrap_or(0);
    let set_progress = |read: u64, done: bool, note: Option<String>| {
        if let Ok(mut p) = shared.progress.lock() {
            *p = Progress {
                done,
                read,
                total,
                note,
            };
        }
    };
    let (header, events) = match Events::open(&src.path) {
        Ok(x) => x,
        Err(e) => return set_progress(0, true, Some(e)),
    };
    let Some(names) = src.names.get(src.image) else {
        return set_progress(0, true, Some("no names for the image".into()));
    };
    let feed = events.values();
    let enums = Enums::load(&src.dir);
    let matches = Matches::new(&src.filters, names);
    let mut b = Builder {
        shared,
        names,
        enums: &enums,
        batch: Vec::with_capacity(BATCH),
        base: 0,
        open: Vec::new(),
        extras: Extras::default(),
        patches: Vec::new(),
    };
    let damage = std::rc::Rc::new(std::cell::RefCell::new(None));
    let counted = CountBytes {
        events,
        damage: damage.clone(),
        read: std::rc::Rc::new(std::cell::Cell::new(0)),
    };
    let read = counted.read.clone();
    let calls = Calls::new(counted, header.stopped).values(feed);
    let visible = Visible::new(calls, names, &matches, &src.filters);
    let thresholded = Threshold::new(visible, src.filters.min_ticks);
    for (n, item) in Leaves::new(thresholded).enumerate() {
        b.add(item);
        if n % BATCH == BATCH - 1 {
            b.hand_over();
            set_progress(read.get(), false, None);
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
        }
    }
    b.hand_over();
    let note = damage.borrow().clone();
    set_progress(total, true, note.map(|d| format!("read up to damage: {d}")));
}

/// Events that count the bytes read and keep their damage.
struct CountBytes {
    events: Events,
    damage: std::rc::Rc<std::cell::RefCell<Option<String>>>,
    read: std::rc::Rc<std::cell::Cell<u64>>,
}

impl Iterator for CountBytes {
    type Item = ftail_abi::trace::Event;

    fn next(&mut self) -> Option<Self::Item> {
        let e = self.events.next();
        if e.is_none() {
            *self.damage.borrow_mut() = self.events.damage().map(str::to_string);
        } else if Events::count(&self.events).is_multiple_of(4096) {
            self.read.set(self.events.consumed());
        }
        e
    }
}

struct Builder<'a> {
    shared: &'a Shared,
    names: &'a Names,
    enums: &'a Enums,
    /// Lines not yet handed over; `base` is the first one's number.
    batch: Vec<Line>,
    base: u64,
    /// Open entries' lines, outermost first.
    open: Vec<u64>,
    extras: Extras,
    /// Exits of entries already handed over: (entry line, exit line).
    patches: Vec<(u64, u64)>,
}

impl Builder<'_> {
    fn next_line(&self) -> u64 {
        self.base + self.batch.len() as u64
    }

    fn func(&mut self, func: Option<ftail_trace::names::FuncId>, addr: u64) -> u32 {
        match func {
            Some(f) => f.0 + 1,
            None => {
                let at = self.next_line();
                self.extras.unknown.insert(at, addr.saturating_sub(5));
                0
            }
        }
    }

    fn values(&mut self, args: Option<&Values>, ret: Option<&Values>, func: u32) {
        let at = self.next_line();
        if self.extras.args.len() + self.extras.rets.len() >= MAX_VALUES {
            self.extras.values_dropped |= args.is_some() || ret.is_some();
            return;
        }
        if let Some(v) = args {
            let text = ftail_trace::values::args_text(v, self.enums);
            self.extras.args.insert(at, text.into_boxed_str());
        }
        if let Some(v) = ret {
            let mangled = (func != 0).then(|| {
                &*self
                    .names
                    .function(ftail_trace::names::FuncId(func - 1))
                    .mangled
            });
            if let Some(text) = ftail_trace::values::ret_text(v, mangled, self.enums) {
                self.extras.rets.insert(at, text.into_boxed_str());
            }
        }
    }

    fn slow(&mut self, func: u32, ticks: u64, line: u64) {
        let e = self.extras.slowest.entry(func).or_insert((0, line));
        if ticks > e.0 {
            *e = (ticks, line);
        }
    }

    fn add(&mut self, item: Shown) {
        let line = match item {
            Shown::Enter {
                addr,
                func,
                tsc,
                depth,
                resumed,
                earlier,
                args,
            } => {
                let func = self.func(func, addr);
                self.values(args.as_ref(), None, func);
                let parent = self.open.last().copied().unwrap_or(NONE);
                self.open.push(self.next_line());
                Line {
                    tsc,
                    other: NONE,
                    parent,
                    func,
                    depth: depth.min(u32::from(u16::MAX)) as u16,
                    kind: Kind::Enter,
                    resumed,
                    earlier,
                    how: EventKind::Entry,
                }
            }
            Shown::Leave {
                addr,
                func,
                start,
                end,
                depth,
                how,
                ret,
                ..
            } => {
                let func = self.func(func, addr);
                self.values(None, ret.as_ref(), func);
                let here = self.next_line();
                let entry = self.open.pop().unwrap_or(NONE);
                if entry != NONE {
                    if entry >= self.base {
                        self.batch[(entry - self.base) as usize].other = here;
                    } else {
                        self.patches.push((entry, here));
                    }
                    self.slow(func, end.saturating_sub(start), entry);
                }
                Line {
                    tsc: end,
                    other: entry,
                    parent: self.open.last().copied().unwrap_or(NONE),
                    func,
                    depth: depth.min(u32::from(u16::MAX)) as u16,
                    kind: Kind::Leave,
                    resumed: false,
                    earlier: false,
                    how,
                }
            }
            Shown::Leaf {
                addr,
                func,
                start,
                end,
                depth,
                how,
                args,
                ret,
            } => {
                let func = self.func(func, addr);
                self.values(args.as_ref(), ret.as_ref(), func);
                let here = self.next_line();
                self.slow(func, end.saturating_sub(start), here);
                Line {
                    tsc: start,
                    other: end,
                    parent: self.open.last().copied().unwrap_or(NONE),
                    func,
                    depth: depth.min(u32::from(u16::MAX)) as u16,
                    kind: Kind::Leaf,
                    resumed: false,
                    earlier: false,
                    how,
                }
            }
        };
        self.batch.push(line);
    }

    fn hand_over(&mut self) {
        if let Ok(mut s) = self.shared.store.lock() {
            for (entry, exit) in self.patches.drain(..) {
                s.patch(entry, exit);
            }
            for l in self.batch.drain(..) {
                s.push(l);
            }
            // Everything handed over is readable: the chunk being filled
            // too (reads look at `tail`).
            self.base = s.len();
        }
        if let Ok(mut e) = self.shared.extras.lock() {
            let mine = std::mem::take(&mut self.extras);
            e.args.extend(mine.args);
            e.rets.extend(mine.rets);
            e.unknown.extend(mine.unknown);
            for (f, (t, l)) in mine.slowest {
                let slot = e.slowest.entry(f).or_insert((0, l));
                if t > slot.0 {
                    *slot = (t, l);
                }
            }
            e.values_dropped |= mine.values_dropped;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: u64) -> Line {
        Line {
            tsc: i * 10,
            other: NONE,
            parent: i / 2,
            func: i as u32,
            depth: (i % 7) as u16,
            kind: if i.is_multiple_of(2) {
                Kind::Enter
            } else {
                Kind::Leaf
            },
            resumed: i.is_multiple_of(3),
            earlier: false,
            how: EventKind::TailExit,
        }
    }

    #[test]
    fn lines_past_the_memory_bound_read_back_from_the_file_and_take_patches() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::new(100, dir.path(), BLOCK_LINES);
        let n = 100 + 3 * CHUNK + 17;
        for i in 0..n {
            s.push(line(i));
        }
        assert_eq!(s.len(), n);
        assert_eq!(s.memory.len(), 100);
        assert_eq!(s.filed, 3 * CHUNK);
        for i in [0, 99, 100, 101, 100 + CHUNK, n - 18, n - 17, n - 1] {
            assert_eq!(s.get(i), Some(line(i)), "line {i}");
        }
        assert_eq!(s.get(n), None);
        // A patch of a line already read (and cached) is seen.
        s.patch(105, 7);
        assert_eq!(s.get(105).unwrap().other, 7);
        s.patch(n - 1, 8);
        assert_eq!(s.get(n - 1).unwrap().other, 8);
        // The file is gone from the directory from the start.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_search_reads_only_the_blocks_whose_set_may_hold_a_match() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::new(10, dir.path(), 16);
        // Function 3 on lines 5 and 70; its id plus SET_BITS (same bit)
        // on line 40; every other line calls function 1.
        let far = 3 + SET_BITS as u32;
        for i in 0..100u64 {
            let func = match i {
                5 | 70 => 3,
                40 => far,
                _ => 1,
            };
            store.push(Line {
                func,
                kind: Kind::Leaf,
                ..line(i)
            });
        }
        assert_eq!(store.blocks.done.len(), 6);
        let three = FuncSet::new([3]);
        assert!(store.blocks.may_hold(0, &three) && store.blocks.may_hold(4, &three));
        assert!(store.blocks.may_hold(2, &three), "a superset past SET_BITS");
        assert!(!store.blocks.may_hold(1, &three) && !store.blocks.may_hold(5, &three));
        assert!(store.blocks.may_hold(6, &three), "the block being filled");
        let index = Index {
            shared: Arc::new(Shared {
                store: Mutex::new(store),
                extras: Mutex::new(Extras::default()),
                progress: Mutex::new(Progress::default()),
                stop: AtomicBool::new(false),
            }),
            worker: None,
            hz: 1.0,
        };
        assert_eq!(index.find(0..100, true, &three), Some(5));
        assert_eq!(index.find(6..100, true, &three), Some(70));
        assert_eq!(index.find(71..100, true, &three), None);
        assert_eq!(index.find(0..100, false, &three), Some(70));
        assert_eq!(index.find(0..70, false, &three), Some(5));
        assert_eq!(index.find(0..5, false, &three), None);
        assert_eq!(index.find(0..100, true, &FuncSet::new([far])), Some(40));
        assert_eq!(index.find(50..1000, true, &three), Some(70));
        assert_eq!(index.find(0..100, true, &FuncSet::new([0])), None);
    }
}

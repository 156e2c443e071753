//! Plain replay (no filter, no recorded value, no colour, no source
//! line, no snapshot mark): each thread's events go straight to lines.
//!
//! The general path stacks iterators (pairing, filters, `-t`, leaves,
//! scheduler events, the merge), each moving a [`Shown`] of about 80
//! bytes a step. Here one loop per thread does what they do when nothing
//! is filtered: it pairs events into calls, folds a call with nothing
//! inside into one line, places the times off the CPU, and leaves the
//! thread's next line in place for the merge to write. The common lines
//! (an entry, a leaf, a return) are a function's name rendered once,
//! after the columns; every other line is handed to the general writer,
//! so both paths give the same bytes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Write};

use ftail_abi::trace::{Event, EventKind, KIND_SHIFT};

use super::blocks::{self, Blocks};
use super::{Field, ImageReplay, Options, MAX_INDENT};
use crate::reader::events::Events;
use crate::reader::sched::{OffCpu, OffCpuCursor};
use crate::symbols::names::{FuncId, Names, ResolveCache};
use crate::views::view::Shown;

/// Whether the fused path writes what the general one would: nothing
/// filtered or decorated, and no values recorded (`values`: the trace
/// has a spec file, without which the runtime records none).
pub(super) fn applies(opts: &Options, values: bool, mark: bool) -> bool {
    !opts.filters.select()
        && !opts.color
        && !opts.srcline
        && !values
        && !mark
        && !opts.fields.contains(&Field::Addr)
        && !(opts.absolute && opts.fields.contains(&Field::Time))
}

/// A line of a thread, as [`Shown`] has it without values, or a time
/// off the CPU.
#[derive(Debug, Clone, Copy)]
pub(super) enum Line {
    Enter {
        addr: u64,
        func: Option<FuncId>,
        tsc: u64,
        depth: u32,
        resumed: bool,
        earlier: bool,
    },
    Leaf {
        addr: u64,
        func: Option<FuncId>,
        start: u64,
        end: u64,
        depth: u32,
        how: EventKind,
    },
    Leave {
        addr: u64,
        func: Option<FuncId>,
        start: u64,
        end: u64,
        depth: u32,
        how: EventKind,
        earlier: bool,
    },
    OffCpu {
        slice: OffCpu,
        depth: u32,
    },
}

impl Line {
    /// Where the line is placed in time (as [`Shown::tsc`]).
    fn at(&self) -> u64 {
        match *self {
            Line::Enter { tsc, .. } => tsc,
            Line::Leaf { start, .. } => start,
            Line::Leave { end, .. } => end,
            Line::OffCpu { slice, .. } => slice.start,
        }
    }

    /// The line as the general path's item (`None`: a time off the CPU).
    fn shown(self) -> Option<Shown> {
        Some(match self {
            Line::Enter {
                addr,
                func,
                tsc,
                depth,
                resumed,
                earlier,
            } => Shown::Enter {
                addr,
                func,
                tsc,
                depth,
                resumed,
                earlier,
                args: None,
            },
            Line::Leaf {
                addr,
                func,
                start,
                end,
                depth,
                how,
            } => Shown::Leaf {
                addr,
                func,
                start,
                end,
                depth,
                how,
                args: None,
                ret: None,
            },
            Line::Leave {
                addr,
                func,
                start,
                end,
                depth,
                how,
                earlier,
            } => Shown::Leave {
                addr,
                func,
                start,
                end,
                depth,
                how,
                earlier,
                ret: None,
            },
            Line::OffCpu { .. } => return None,
        })
    }
}

/// An open call.
#[derive(Clone, Copy)]
struct Frame {
    addr: u64,
    tsc: u64,
    func: Option<FuncId>,
    earlier: bool,
}

/// One thread's events turned into lines, one at a time.
pub(super) struct Thread<'a> {
    pub(super) tid: u32,
    /// The thread keeps a ring (a window of its events).
    pub(super) window: bool,
    /// Tracing was detached from it: its frames closed as `Truncated`
    /// were open then.
    pub(super) detached: bool,
    pub(super) events: Events,
    /// Events decoded and not yet read, from `next`.
    batch: Vec<Event>,
    next: usize,
    names: &'a Names,
    resolved: ResolveCache,
    /// Close what is open at the end (the thread stopped early).
    close_at_end: bool,
    /// Time of the last event read.
    last: u64,
    stack: Vec<Frame>,
    /// An event read past an entry to see whether it ends it.
    ahead: Option<Event>,
    merge_leaves: bool,
    /// Times off the CPU not yet placed.
    slices: OffCpuCursor<'a>,
    /// While `slices` is not empty: depth of what comes next.
    depth: u32,
    /// Lines made and not yet current (around times off the CPU).
    ready: VecDeque<Line>,
    /// The thread's next line, once [`Thread::advance`] said there is one.
    pub(super) line: Line,
}

impl<'a> Thread<'a> {
    pub(super) fn new(
        tid: u32,
        header: &crate::reader::events::Header,
        events: Events,
        names: &'a Names,
        merge_leaves: bool,
        slices: &'a [OffCpu],
    ) -> Self {
        Thread {
            tid,
            window: header.ring != 0,
            detached: super::detached(header),
            events,
            batch: Vec::with_capacity(BATCH),
            next: 0,
            names,
            resolved: ResolveCache::default(),
            close_at_end: header.stopped != 0,
            last: 0,
            stack: Vec::new(),
            ahead: None,
            merge_leaves,
            slices: OffCpuCursor::new(slices),
            depth: 0,
            ready: VecDeque::new(),
            line: Line::OffCpu {
                slice: OffCpu {
                    start: 0,
                    end: 0,
                    preempted: false,
                },
                depth: 0,
            },
        }
    }

    /// The next event of a known kind.
    #[inline]
    fn event(&mut self) -> Option<Event> {
        loop {
            let Some(&e) = self.batch.get(self.next) else {
                self.refill()?;
                continue;
            };
            self.next += 1;
            self.last = e.tsc;
            if EventKind::from_u8((e.word >> KIND_SHIFT) as u8).is_some() {
                return Some(e);
            }
        }
    }

    /// Decodes the next events into `batch`: most in one loop, not a
    /// call a piece.
    #[cold]
    #[inline(never)]
    fn refill(&mut self) -> Option<()> {
        self.batch.clear();
        self.next = 0;
        self.events
            .next_events(&mut self.batch, BATCH)
            .then_some(())
    }

    /// The next line of the thread's calls, as pairing and folding
    /// leaves give it.
    #[inline]
    fn step(&mut self) -> Option<Line> {
        loop {
            let Some(e) = self.ahead.take().or_else(|| self.event()) else {
                return self.close_at_end();
            };
            let Some(kind) = EventKind::from_u8((e.word >> KIND_SHIFT) as u8) else {
                continue;
            };
            if kind.opens() {
                return Some(self.open(e, kind));
            }
            // An exit with nothing open is left out.
            if let Some(f) = self.stack.pop() {
                return Some(Line::Leave {
                    addr: f.addr,
                    func: f.func,
                    start: f.tsc,
                    end: e.tsc,
                    depth: self.stack.len() as u32,
                    how: kind,
                    earlier: f.earlier,
                });
            }
        }
    }

    /// The line of a call that opens: a leaf when the next event ends it.
    #[inline]
    fn open(&mut self, e: Event, kind: EventKind) -> Line {
        let (addr, tsc) = (e.addr(), e.tsc);
        let depth = self.stack.len() as u32;
        let func = self.resolved.resolve(self.names, addr, tsc);
        let earlier = kind == EventKind::Earlier;
        let resumed = kind != EventKind::Entry;
        if self.merge_leaves && !resumed {
            if let Some(next) = self.event() {
                let how = EventKind::from_u8((next.word >> KIND_SHIFT) as u8);
                if let Some(how @ (EventKind::Exit | EventKind::TailExit)) = how {
                    return Line::Leaf {
                        addr,
                        func,
                        start: tsc,
                        end: next.tsc,
                        depth,
                        how,
                    };
                }
                self.ahead = Some(next);
            }
        }
        self.stack.push(Frame {
            addr,
            tsc,
            func,
            earlier,
        });
        Line::Enter {
            addr,
            func,
            tsc,
            depth,
            resumed,
            earlier,
        }
    }

    /// At the end of the events: the close of an open call, when the
    /// thread stopped early.
    fn close_at_end(&mut self) -> Option<Line> {
        if !self.close_at_end {
            return None;
        }
        let f = self.stack.pop()?;
        Some(Line::Leave {
            addr: f.addr,
            func: f.func,
            start: f.tsc,
            end: self.last,
            depth: self.stack.len() as u32,
            how: EventKind::Truncated,
            earlier: f.earlier,
        })
    }

    /// Makes the thread's next line current; false when there is none.
    #[inline(always)]
    pub(super) fn advance(&mut self) -> bool {
        if let Some(line) = self.ready.pop_front() {
            self.line = line;
            return true;
        }
        let Some(line) = self.step() else {
            return false;
        };
        if self.slices.is_empty() {
            self.line = line;
            return true;
        }
        self.place_off_cpu(line);
        true
    }

    /// Puts `line` and the times off the CPU before it in order, as the
    /// general path's `WithSched` does: inside the call running then,
    /// a leaf that held some opened and closed around them.
    fn place_off_cpu(&mut self, line: Line) {
        self.queue_until(line.at(), self.depth);
        match line {
            Line::Enter { depth, .. } => self.depth = depth + 1,
            Line::Leave { depth, .. } => self.depth = depth,
            Line::Leaf {
                addr,
                func,
                start,
                end,
                depth,
                how,
            } if self.slices.any_before(end) => {
                self.ready.push_back(Line::Enter {
                    addr,
                    func,
                    tsc: start,
                    depth,
                    resumed: false,
                    earlier: false,
                });
                self.queue_until(end, depth + 1);
                self.ready.push_back(Line::Leave {
                    addr,
                    func,
                    start,
                    end,
                    depth,
                    how,
                    earlier: false,
                });
                self.depth = depth;
                if let Some(first) = self.ready.pop_front() {
                    self.line = first;
                }
                return;
            }
            Line::Leaf { depth, .. } => self.depth = depth,
            Line::OffCpu { .. } => {}
        }
        self.ready.push_back(line);
        if let Some(first) = self.ready.pop_front() {
            self.line = first;
        }
    }

    /// Queues the times off the CPU that began before `until`, at
    /// `depth` (none outside a call).
    fn queue_until(&mut self, until: u64, depth: u32) {
        for slice in self.slices.before(until) {
            if depth > 0 {
                self.ready.push_back(Line::OffCpu { slice, depth });
            }
        }
    }
}

/// Events decoded at a time: a few pages, read back while in the cache.
const BATCH: usize = 512;

/// A function's lines after the indentation, rendered once, each with
/// its length and spaces after it up to a copy in one piece.
pub(super) struct Tails {
    /// `name() {`
    enter: (Box<[u8]>, usize),
    /// `name();`
    leaf: (Box<[u8]>, usize),
    /// `} /* name */`
    leave: (Box<[u8]>, usize),
}

impl Tails {
    fn of(name: &str) -> Tails {
        let with = |before: &str, after: &str| -> (Box<[u8]>, usize) {
            let mut text = format!("{before}{name}{after}\n").into_bytes();
            let len = text.len();
            text.resize(len.max(PIECE), b' ');
            (text.into(), len)
        };
        Tails {
            enter: with("", "() {"),
            leaf: with("", "();"),
            leave: with("} /* ", " */"),
        }
    }
}

impl ImageReplay<'_> {
    /// Writes the threads' lines merged by time (ties in the threads'
    /// order), then where each thread's reading stopped at damage.
    pub(super) fn run_fused(
        &mut self,
        mut threads: Vec<Thread<'_>>,
        out: &mut (impl Write + Send),
    ) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        let made = if self.opts.overlap_writes {
            blocks::write_behind(out, &mut buf, |behind, buf| {
                self.merged_lines(&mut threads, buf, behind)
            })
        } else {
            self.merged_lines(&mut threads, &mut buf, &mut blocks::Direct(out))
        };
        self.buf = buf;
        if made.is_err() {
            self.buf.clear();
            return made;
        }
        self.flush(out)?;
        for t in &threads {
            if let Some(d) = t.events.damage() {
                writeln!(out, "# thread {}: read up to damage: {d}", t.tid)?;
            }
        }
        Ok(())
    }

    /// Adds the threads' lines merged by time to `buf`, handing each
    /// full block on; the last one, not full, is left in `buf`.
    fn merged_lines(
        &mut self,
        threads: &mut [Thread<'_>],
        buf: &mut Vec<u8>,
        blocks: &mut impl Blocks,
    ) -> io::Result<()> {
        let mut heap = BinaryHeap::with_capacity(threads.len());
        for (i, t) in threads.iter_mut().enumerate() {
            if t.advance() {
                heap.push(Reverse((t.line.at(), i)));
            }
        }
        // The thread whose line comes next, kept out of the heap while
        // it stays ahead (as the general path's merge does).
        let mut front = None;
        let plain_columns = self.opts.fields == [Field::Duration, Field::Tid];
        let block = blocks.size();
        loop {
            let (_, i) = match front.take() {
                Some(f) => f,
                None => match heap.pop() {
                    Some(Reverse(top)) => top,
                    None => break,
                },
            };
            let t = &mut threads[i];
            self.fused_line(buf, plain_columns, t, &t.line);
            if t.advance() {
                let at = (t.line.at(), i);
                match heap.peek() {
                    Some(&Reverse(top)) if top < at => heap.push(Reverse(at)),
                    _ => front = Some(at),
                }
            }
            if buf.len() >= block {
                blocks.hand_on(buf)?;
            }
        }
        Ok(())
    }

    /// Adds one line: the common ones here, the others by the general
    /// writer.
    #[inline]
    fn fused_line(&mut self, buf: &mut Vec<u8>, plain_columns: bool, t: &Thread<'_>, line: &Line) {
        let tid = t.tid;
        let (func, at, duration, depth, tail) = match *line {
            Line::Enter {
                func: Some(f),
                tsc,
                depth,
                resumed: false,
                earlier: false,
                ..
            } => (f, tsc, None, depth, Tail::Enter),
            Line::Leaf {
                func: Some(f),
                start,
                end,
                depth,
                how: EventKind::Exit,
                ..
            } => (f, start, Some(end.saturating_sub(start)), depth, Tail::Leaf),
            Line::Leave {
                func: Some(f),
                start,
                end,
                depth,
                how: EventKind::Exit,
                earlier,
                ..
            } if !earlier || t.window => {
                (f, end, Some(end.saturating_sub(start)), depth, Tail::Leave)
            }
            _ => return self.general_line(buf, t, line),
        };
        if self.tails.get(func.0 as usize).is_none() {
            // Not a function of the image: no name to render once.
            return self.general_line(buf, t, line);
        }
        if plain_columns {
            self.default_columns(buf, tid, duration, depth);
        } else {
            self.columns(buf, tid, at, duration, None);
            buf.extend_from_slice(b"| ");
            indent(buf, depth);
        }
        self.last = Some(at);
        let names = self.names;
        let tails = self.tails[func.0 as usize]
            .get_or_insert_with(|| Tails::of(&names.function(func).name));
        let (text, len) = match tail {
            Tail::Enter => &tails.enter,
            Tail::Leaf => &tails.leaf,
            Tail::Leave => &tails.leave,
        };
        if *len > PIECE {
            return buf.extend_from_slice(&text[..*len]);
        }
        let end = buf.len() + len;
        buf.extend_from_slice(&text[..PIECE]);
        buf.truncate(end);
    }

    /// Adds a line that is not one of the common ones, by the general
    /// writer.
    #[cold]
    fn general_line(&mut self, buf: &mut Vec<u8>, t: &Thread<'_>, line: &Line) {
        let (tid, window) = (t.tid, t.window);
        self.truncated_note = if t.detached {
            super::DETACHED
        } else {
            super::TRUNCATED
        };
        std::mem::swap(&mut self.buf, buf);
        match *line {
            Line::OffCpu { slice, depth } => self.off_cpu(tid, slice, depth),
            other => {
                if let Some(item) = other.shown() {
                    self.line(tid, window, &item);
                }
            }
        }
        std::mem::swap(&mut self.buf, buf);
    }
}

/// Which of a function's rendered lines.
#[derive(Clone, Copy)]
enum Tail {
    Enter,
    Leaf,
    Leave,
}

impl ImageReplay<'_> {
    /// The default columns (duration, thread), `| ` and the
    /// indentation, as [`ImageReplay::columns`] and [`super::indent`]
    /// write them: most lines in one copy of known length, then cut.
    #[inline]
    fn default_columns(&mut self, buf: &mut Vec<u8>, tid: u32, duration: Option<u64>, depth: u32) {
        if self.tid_prefix.0 != Some(tid) {
            self.tid_prefix = (Some(tid), tid_prefix(tid));
        }
        let (_, (prefix, before_indent)) = &self.tid_prefix;
        let from = match duration {
            None => 0,
            Some(ticks) => {
                duration_column(buf, ticks as f64 * 1e9 / self.hz);
                DURATION
            }
        };
        let len = before_indent - from + 2 * depth as usize;
        if depth > MAX_INDENT || len > PIECE {
            buf.extend_from_slice(&prefix[from..*before_indent]);
            return indent(buf, depth);
        }
        let end = buf.len() + len;
        buf.extend_from_slice(&prefix[from..from + PIECE]);
        buf.truncate(end);
    }
}

/// Bytes copied in one piece for the columns and the indentation (an
/// inline copy, no call to `memcpy`), and for a function's line.
const PIECE: usize = 64;

/// The columns of an entry of thread `tid` (no duration) and `| `, then
/// spaces for the deepest indentation and a copy in one piece; and how
/// many bytes come before the indentation.
fn tid_prefix(tid: u32) -> (Vec<u8>, usize) {
    let mut prefix = vec![b' '; DURATION + 1];
    prefix.push(b'[');
    super::right_aligned(&mut prefix, u64::from(tid), 6);
    prefix.extend_from_slice(b"] | ");
    let before_indent = prefix.len();
    prefix.resize(
        DURATION + PIECE.max(before_indent + 2 * MAX_INDENT as usize),
        b' ',
    );
    (prefix, before_indent)
}

/// Columns of a duration.
const DURATION: usize = 10;

/// `ns` as [`super::push_ns`] writes it (`{:7.3} {unit}`), with the
/// common widths written in one piece.
#[inline]
fn duration_column(buf: &mut Vec<u8>, ns: f64) {
    let (v, unit) = super::scaled(ns);
    let milli = super::round(v * 1000.0);
    let (Ok(unit), true) = (<[u8; 2]>::try_from(unit.as_bytes()), milli < 1_000_000) else {
        return super::push_ns(buf, ns);
    };
    let whole = milli / 1000;
    let frac = milli % 1000;
    let digit = |n: u64| b'0' + (n % 10) as u8;
    let mut a = [b' '; DURATION];
    if whole >= 100 {
        a[0] = digit(whole / 100);
    }
    if whole >= 10 {
        a[1] = digit(whole / 10);
    }
    a[2] = digit(whole);
    a[3] = b'.';
    a[4] = digit(frac / 100);
    a[5] = digit(frac / 10);
    a[6] = digit(frac);
    a[8] = unit[0];
    a[9] = unit[1];
    buf.extend_from_slice(&a);
}

/// Two spaces a level, as [`super::indent`] writes them, in one piece
/// (a depth past [`MAX_INDENT`] by the general writer).
#[inline]
fn indent(buf: &mut Vec<u8>, depth: u32) {
    const SPACES: &[u8; 2 * MAX_INDENT as usize] = &[b' '; 2 * MAX_INDENT as usize];
    if depth > MAX_INDENT {
        return super::indent(buf, depth);
    }
    // A copy of known length, then cut: no call to `memset`.
    let end = buf.len() + 2 * depth as usize;
    buf.extend_from_slice(SPACES);
    buf.truncate(end);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_in_one_piece_match_the_general_writer() {
        let mut ns = vec![0.0, 0.4, 0.5, 999.4994, 999.9995, 1e3, 99_999.9, 1e9, 5e12];
        ns.extend((0..2000).map(|i| f64::from(i) * 1.37e5 / 7.0));
        for &ns in &ns {
            let (mut fused, mut general) = (Vec::new(), Vec::new());
            duration_column(&mut fused, ns);
            super::super::push_ns(&mut general, ns);
            assert_eq!(fused, general, "{ns}");
        }
        for depth in 0..60 {
            let (mut fused, mut general) = (b"x".to_vec(), b"x".to_vec());
            indent(&mut fused, depth);
            super::super::indent(&mut general, depth);
            assert_eq!(fused, general, "{depth}");
        }
    }
}

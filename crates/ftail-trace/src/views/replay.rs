//! `ftail replay`: the call graph as text, in the style of uftrace and
//! ftrace's function_graph: one line per call begun and ended, durations
//! on the closing line (or on the one line of a call with nothing shown
//! inside), threads of a process interleaved in time order, each process
//! image (a process, or what it became after `exec`) under a header of its
//! own.
//!
//! A function alive on a stack the thread switched away from (a
//! coroutine) shows as slices: `} /* f (switched out) */` ends one,
//! `f() { /* resumed */` opens the next where its stack ran again.
//!
//! Streamed: each thread's events are read a block at a time, filtered
//! ([`crate::views::view`]) and merged with the other threads' by time; output
//! goes to the writer as it is made. Memory is the call depth per thread
//! (indentation past [`MAX_INDENT`] levels is not spelled out: the depth
//! is shown as a number).

use std::io::{self, Write};

use ftail_abi::trace::EventKind;

use crate::reader::calls::Calls;
use crate::reader::dir::{Image, TraceDir};
use crate::reader::merge::Merge;
use crate::reader::sched::{OffCpu, OffCpuCursor, Sched};
use crate::symbols::names::{FuncId, Names};
use crate::views::view::{Filters, Leaves, Matches, Shown, Threshold, Visible};

mod blocks;
mod fused;

/// Levels of indentation spelled out; deeper calls show their depth.
pub const MAX_INDENT: u32 = 40;

/// Bytes of lines gathered before they go to the writer.
const OUT_BLOCK: usize = 1 << 16;

/// A column of the output (`-f`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Time since the trace began (or wall-clock time, see
    /// [`Options::absolute`]).
    Time,
    /// Time since the previous line.
    Delta,
    /// The call's duration, on its closing line.
    Duration,
    /// The thread id.
    Tid,
    /// Time since the trace began, whatever the time column shows.
    Elapsed,
    /// The function's address (its first byte).
    Addr,
}

impl Field {
    /// Parses a `-f` list as uftrace's `replay -f` does: names from
    /// `time,delta,elapsed,duration,tid,addr` in any order; `none` alone
    /// for no column; a list starting with `+` adds to the default
    /// (`+time` is `duration,tid,time`).
    ///
    /// # Errors
    ///
    /// Names the field it does not know.
    pub fn parse_list(list: &str) -> Result<Vec<Field>, String> {
        let list = list.trim();
        if list == "none" {
            return Ok(Vec::new());
        }
        let (mut fields, list) = match list.strip_prefix('+') {
            Some(rest) => (Options::default().fields, rest),
            None => (Vec::new(), list),
        };
        for f in list.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            fields.push(match f {
                "time" => Field::Time,
                "delta" => Field::Delta,
                "duration" => Field::Duration,
                "tid" => Field::Tid,
                "elapsed" => Field::Elapsed,
                "addr" => Field::Addr,
                other => {
                    return Err(format!(
                        "unknown field {other:?} (known: time, delta, elapsed, duration, \
                         tid, addr; or none)"
                    ))
                }
            });
        }
        Ok(fields)
    }
}

/// How to replay.
#[derive(Debug, Clone)]
pub struct Options {
    /// What to show.
    pub filters: Filters,
    /// Only these threads (empty: all).
    pub tids: Vec<u32>,
    /// Columns before the function.
    pub fields: Vec<Field>,
    /// Put a call with nothing shown inside on one line (uftrace's
    /// default; `--no-merge` turns it off).
    pub merge_leaves: bool,
    /// `time` is wall-clock time, not time since the trace began.
    pub absolute: bool,
    /// Colours (durations by size, how calls ended).
    pub color: bool,
    /// The source line of each function entered (`--srcline`).
    pub srcline: bool,
    /// The times threads spent off the CPU, as uftrace's
    /// `linux:schedule` lines inside the call that was running
    /// (`--no-event` turns them off).
    pub sched: bool,
    /// Hand the lines to a second thread that writes them while the
    /// next are made: for output to a file or a pipe, where writing
    /// costs about as much as making the lines (plain replay only).
    pub overlap_writes: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            filters: Filters::default(),
            tids: Vec::new(),
            fields: vec![Field::Duration, Field::Tid],
            merge_leaves: true,
            absolute: false,
            color: false,
            srcline: false,
            sched: true,
            overlap_writes: false,
        }
    }
}

/// Replays every image of `trace` into `out`; `names` has one entry per
/// image. Errors are only the writer's.
pub fn replay(
    trace: &TraceDir,
    names: &[Names],
    opts: &Options,
    out: &mut (impl Write + Send),
) -> io::Result<()> {
    replay_by(trace, names, opts, out, true)
}

/// [`replay`] without its fused path for plain replay, which must write
/// the same bytes: what tests compare it with.
pub fn replay_general(
    trace: &TraceDir,
    names: &[Names],
    opts: &Options,
    out: &mut (impl Write + Send),
) -> io::Result<()> {
    replay_by(trace, names, opts, out, false)
}

fn replay_by(
    trace: &TraceDir,
    names: &[Names],
    opts: &Options,
    out: &mut (impl Write + Send),
    fused: bool,
) -> io::Result<()> {
    let origin = trace
        .images
        .iter()
        .filter_map(|i| i.info.get("start_tsc").and_then(|v| v.parse::<u64>().ok()))
        .min()
        .unwrap_or(0);
    header(opts, out)?;
    let enums = crate::values::Enums::load(&trace.dir);
    let sched = if opts.sched {
        Sched::load(&trace.dir)
    } else {
        Sched::default()
    };
    for n in &sched.notes {
        writeln!(out, "# {n}")?;
    }
    for (image, names) in trace.images.iter().zip(names) {
        let mut r = ImageReplay {
            image,
            names,
            opts,
            hz: image_hz(image),
            origin,
            last: None,
            buf: Vec::with_capacity(OUT_BLOCK + 4096),
            names_by_id: vec![None; names.functions().len()],
            tails: std::iter::repeat_with(|| None)
                .take(names.functions().len())
                .collect(),
            tid_column: (None, Vec::new()),
            tid_prefix: (None, (Vec::new(), 0)),
            srclines: vec![None; names.functions().len()],
            enums: &enums,
            text: String::new(),
            starts: std::cell::OnceCell::new(),
            mark: trace.mark.clone(),
            sched: &sched,
            windows: Vec::new(),
            fused,
            detached: Vec::new(),
            truncated_note: TRUNCATED,
        };
        r.run(out)?;
    }
    Ok(())
}

fn image_hz(image: &Image) -> f64 {
    image.tsc_hz().max(1) as f64
}

/// Ticks in `ns` nanoseconds at `hz` (for `-t`).
pub fn ticks(ns: f64, hz: f64) -> u64 {
    (ns * hz / 1e9) as u64
}

/// `ticks` as whole nanoseconds, rounded: what the time column shows, and
/// what `--time-range` compares, so that a time copied from one selects
/// the line it was copied from.
pub fn shown_ns(ticks: u64, hz: f64) -> u64 {
    round(ticks as f64 * 1e9 / hz)
}

/// `x.round() as u64` without the library call `f64::round` is on x86-64:
/// below 2^53 the fraction `x - trunc(x)` is exact, above it `x` is a
/// whole number; negatives and NaN are 0 either way.
#[inline]
fn round(x: f64) -> u64 {
    let whole = x as u64;
    whole.saturating_add(u64::from(x - whole as f64 >= 0.5))
}

/// The first tick that shows as `ns` or later (`--time-range`'s start).
pub fn first_tick_shown_at(ns: u64, hz: f64) -> u64 {
    let mut t = ((ns as f64 - 0.5).max(0.0) * hz / 1e9) as u64;
    // The estimate is off by float rounding at most a tick or two.
    while t > 0 && shown_ns(t - 1, hz) >= ns {
        t -= 1;
    }
    while shown_ns(t, hz) < ns {
        t += 1;
    }
    t
}

/// The last tick that shows as `ns` or earlier (`--time-range`'s end).
pub fn last_tick_shown_at(ns: u64, hz: f64) -> u64 {
    first_tick_shown_at(ns.saturating_add(1), hz).saturating_sub(1)
}

/// `ns` as seconds with nine decimals (`12.000345678`).
pub fn seconds(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

fn header(opts: &Options, out: &mut impl Write) -> io::Result<()> {
    let mut line = String::from("#");
    for f in &opts.fields {
        line.push_str(match f {
            Field::Time => "     TIMESTAMP  ",
            Field::Delta => "     DELTA  ",
            Field::Duration => " DURATION    ",
            Field::Tid => " TID     ",
            Field::Elapsed => "   ELAPSED TIME  ",
            Field::Addr => "         ADDRESS  ",
        });
    }
    if opts.fields.is_empty() {
        line.push(' ');
    }
    line.push_str("FUNCTION\n");
    out.write_all(line.as_bytes())
}

struct ImageReplay<'a> {
    image: &'a Image,
    names: &'a Names,
    opts: &'a Options,
    hz: f64,
    origin: u64,
    /// Time of the previous line (for `delta`).
    last: Option<u64>,
    /// Lines not yet handed to the writer: one call of the writer per
    /// [`OUT_BLOCK`] bytes, not one per line.
    buf: Vec<u8>,
    /// Function names looked up so far, by function id.
    names_by_id: Vec<Option<&'a str>>,
    /// Function lines rendered so far (the fused path), by function id.
    tails: Vec<Option<fused::Tails>>,
    /// The thread column of the last line's thread.
    tid_column: (Option<u32>, Vec<u8>),
    /// The default columns of an entry of the last line's thread, then
    /// spaces to indent, and where the indentation starts (the fused
    /// path).
    tid_prefix: (Option<u32>, (Vec<u8>, usize)),
    /// Source lines looked up so far, by function.
    srclines: Vec<Option<Option<Box<str>>>>,
    /// The enums' names, for recorded values.
    enums: &'a crate::values::Enums,
    /// Scratch for values shown.
    text: String,
    /// The image's functions by first byte, made when a value first
    /// needs them.
    starts: std::cell::OnceCell<FunctionStarts>,
    /// The call that took the snapshot being replayed, until shown.
    mark: Option<ftail_abi::trigger::Mark>,
    /// The trace's times off the CPU.
    sched: &'a Sched,
    /// Which of the threads being shown keep a ring (a window of their
    /// events) rather than every event, in the order of their sources.
    windows: Vec<bool>,
    /// Plain replay may take the fused path.
    fused: bool,
    /// Which of them were detached from (`ftail record -p`, `ftail ctl
    /// off`): their frames closed as `Truncated` were open then.
    detached: Vec<bool>,
    /// How a frame closed as `Truncated` on the thread of the line being
    /// made ended, in words.
    truncated_note: &'static str,
}

/// A snapshot's mark with its call's entry time: `ftail_snapshot()`
/// gives its own time, and the call it names is the innermost call of
/// its function on its thread running then. `None` when the image has
/// no such call (or the mark is another image's).
pub fn resolve_mark(
    mark: ftail_abi::trigger::Mark,
    image: &Image,
) -> Option<ftail_abi::trigger::Mark> {
    use crate::reader::calls::Step;
    let t = image.threads.iter().find(|t| t.tid == mark.tid)?;
    if mark.why != ftail_abi::trigger::WHY_PROGRAM {
        return Some(mark);
    }
    let (header, events) = crate::reader::events::Events::open(&t.path).ok()?;
    let mut open: Vec<(u64, u64)> = Vec::new();
    for step in Calls::new(events, header.stopped) {
        if step.tsc() > mark.time {
            break;
        }
        match step {
            Step::Enter { addr, tsc, .. } => open.push((addr, tsc)),
            Step::Leave { .. } => {
                open.pop();
            }
        }
    }
    let (_, start) = open.iter().rev().find(|(a, _)| *a == mark.addr)?;
    Some(mark.entered_at(*start))
}

/// The functions of an image by their first byte: a pointer argument
/// equal to one shows as `&name`.
struct FunctionStarts(rustc_hash::FxHashMap<u64, std::sync::Arc<str>>);

impl FunctionStarts {
    fn of<'a>(cell: &'a std::cell::OnceCell<FunctionStarts>, names: &Names) -> &'a FunctionStarts {
        cell.get_or_init(|| {
            FunctionStarts(
                (0..names.functions().len() as u32)
                    .map(FuncId)
                    .map(|f| (names.start(f), names.function(f).name.clone()))
                    .collect(),
            )
        })
    }
}

impl crate::values::FunctionAt for FunctionStarts {
    fn function_at(&self, addr: u64) -> Option<&str> {
        self.0.get(&addr).map(|n| &**n)
    }
}

impl ImageReplay<'_> {
    fn run(&mut self, out: &mut (impl Write + Send)) -> io::Result<()> {
        let image = self.image;
        let args = image.command_line();
        let exec = image
            .key
            .split_once('~')
            .map_or(String::new(), |(_, n)| format!(" (after exec #{n})"));
        writeln!(out, "# process {}{exec}: {args}", image.pid)?;
        for d in self.names.diagnostics() {
            writeln!(out, "# {d}")?;
        }
        let matches = Matches::new(&self.opts.filters, self.names);
        let threads: Vec<_> = image
            .threads
            .iter()
            .filter(|t| self.opts.tids.is_empty() || self.opts.tids.contains(&t.tid))
            .collect();
        self.mark = self.mark.take().and_then(|m| resolve_mark(m, image));
        let fused =
            self.fused && fused::applies(self.opts, self.enums.loaded(), self.mark.is_some());
        let mut plain = Vec::new();
        let mut notes = Vec::new();
        let mut sources: Vec<Box<dyn Iterator<Item = Item> + '_>> = Vec::new();
        let mut tids = Vec::new();
        let mut damage = Vec::new();
        for t in &threads {
            let name = t.name();
            notes.push(format!(
                "# thread {}{}",
                t.tid,
                if name.is_empty() {
                    String::new()
                } else {
                    format!(" ({name})")
                }
            ));
            let (header, events) = match crate::reader::events::Events::open(&t.path) {
                Ok(x) => x,
                Err(e) => {
                    notes.push(format!("# thread {}: {e}", t.tid));
                    continue;
                }
            };
            if header.lost > 0 {
                notes.push(format!("# thread {}: {} events lost", t.tid, header.lost));
            }
            if fused {
                let slices = self.sched.thread(t.tid);
                let merge = self.opts.merge_leaves;
                plain.push(fused::Thread::new(
                    t.tid, &header, events, self.names, merge, slices,
                ));
                continue;
            }
            let slot = std::rc::Rc::new(std::cell::RefCell::new(None));
            damage.push((t.tid, slot.clone()));
            let feed = events.values();
            let events = KeepDamage { events, slot };
            let visible = Visible::new(
                Calls::new(events, header.stopped).values(feed),
                self.names,
                &matches,
                &self.opts.filters,
            );
            let thresholded = Threshold::new(visible, self.opts.filters.min_ticks);
            let items: Box<dyn Iterator<Item = Shown>> = if self.opts.merge_leaves {
                Box::new(Leaves::new(thresholded))
            } else {
                Box::new(thresholded)
            };
            sources.push(Box::new(WithSched::new(items, self.sched.thread(t.tid))));
            tids.push(t.tid);
            self.windows.push(header.ring != 0);
            self.detached.push(detached(&header));
        }
        for n in &notes {
            writeln!(out, "{n}")?;
        }
        if fused {
            return self.run_fused(plain, out);
        }
        for (i, item) in Merge::new(sources, Item::tsc) {
            match item {
                Item::Call(item) => {
                    self.truncated_note = if self.detached[i] {
                        DETACHED
                    } else {
                        TRUNCATED
                    };
                    self.line(tids[i], self.windows[i], &item)
                }
                Item::OffCpu { slice, depth } => self.off_cpu(tids[i], slice, depth),
            }
            if self.buf.len() >= OUT_BLOCK {
                self.flush(out)?;
            }
        }
        self.flush(out)?;
        for (tid, slot) in damage {
            if let Some(d) = slot.borrow().as_deref() {
                writeln!(out, "# thread {tid}: read up to damage: {d}")?;
            }
        }
        Ok(())
    }

    /// `(1, "abc")`: the recorded arguments, or `()`.
    fn args(&mut self, line: &mut Vec<u8>, args: &Option<crate::values::Values>) {
        line.push(b'(');
        if let Some(v) = args {
            self.text.clear();
            let functions = FunctionStarts::of(&self.starts, self.names);
            crate::values::write_list_named(&mut self.text, v, self.enums, functions);
            line.extend_from_slice(self.text.as_bytes());
        }
        line.push(b')');
    }

    /// ` = 42`: the recorded return value, if any; whether there was one
    /// to show.
    fn ret(
        &mut self,
        line: &mut Vec<u8>,
        ret: &Option<crate::values::Values>,
        func: Option<crate::symbols::names::FuncId>,
    ) -> bool {
        let Some(v) = ret else { return false };
        self.text.clear();
        let names = self.names;
        let function = func.map(|f| &*names.function(f).mangled);
        let functions = FunctionStarts::of(&self.starts, self.names);
        let shown =
            crate::values::write_ret_named(&mut self.text, v, function, self.enums, functions);
        if shown {
            line.extend_from_slice(b" = ");
            line.extend_from_slice(self.text.as_bytes());
        }
        shown
    }

    /// Hands the lines gathered to `out`.
    fn flush(&mut self, out: &mut impl Write) -> io::Result<()> {
        let r = out.write_all(&self.buf);
        self.buf.clear();
        r
    }

    /// Adds one line to the lines gathered. The hot path of replay:
    /// without formatting machinery or allocation.
    fn line(&mut self, tid: u32, window: bool, item: &Shown) {
        let mut line = std::mem::take(&mut self.buf);
        let at = item.tsc();
        let duration = match *item {
            Shown::Enter { .. } => None,
            Shown::Leave { start, end, .. } | Shown::Leaf { start, end, .. } => {
                Some(end.saturating_sub(start))
            }
        };
        self.columns(&mut line, tid, at, duration, Some(item));
        self.last = Some(at);
        line.extend_from_slice(b"| ");
        match *item {
            Shown::Enter {
                addr,
                func,
                tsc,
                depth,
                resumed,
                earlier,
                ref args,
            } => {
                indent(&mut line, depth);
                self.name(&mut line, func, addr, tsc);
                self.args(&mut line, args);
                line.extend_from_slice(b" {");
                if earlier && window {
                    // A ring's window began while it ran: its entry was
                    // overwritten.
                    line.extend_from_slice(b" /* began before the window */");
                } else if earlier {
                    // Running when tracing was switched on (`record -p`):
                    // shown from then.
                    line.extend_from_slice(b" /* began before tracing */");
                } else if resumed {
                    // A function switched out on a coroutine's stack runs
                    // again: a new slice of it, where execution is now.
                    line.extend_from_slice(b" /* resumed */");
                }
                self.srcline(&mut line, func);
                self.mark(&mut line, tid, addr, tsc);
            }
            Shown::Leaf {
                addr,
                func,
                start,
                depth,
                how,
                ref args,
                ref ret,
                ..
            } => {
                indent(&mut line, depth);
                self.name(&mut line, func, addr, start);
                self.args(&mut line, args);
                self.ret(&mut line, ret, func);
                line.push(b';');
                if how != EventKind::Exit {
                    // A tail call into code that is not traced: nothing
                    // inside to show, but it did not simply return.
                    line.extend_from_slice(b" /* ");
                    let note = self.how_note(how);
                    line.extend_from_slice(self.paint(note).as_bytes());
                    line.extend_from_slice(b" */");
                }
                self.srcline(&mut line, func);
                self.mark(&mut line, tid, addr, start);
            }
            Shown::Leave {
                addr,
                func,
                start,
                depth,
                how,
                earlier,
                ref ret,
                ..
            } => {
                indent(&mut line, depth);
                line.push(b'}');
                if self.ret(&mut line, ret, func) {
                    line.push(b';');
                }
                line.extend_from_slice(b" /* ");
                self.name(&mut line, func, addr, start);
                if how != EventKind::Exit {
                    line.extend_from_slice(self.how(how).as_bytes());
                } else if earlier && !window {
                    // Its time counts from when tracing was switched on.
                    let note = self.paint(" (began before tracing)");
                    line.extend_from_slice(note.as_bytes());
                }
                line.extend_from_slice(b" */");
                self.mark(&mut line, tid, addr, start);
            }
        }
        line.push(b'\n');
        self.buf = line;
    }

    /// The columns before `| ` of a line at `at`: `duration` blank for an
    /// entry, the address blank for a line of no call (`item` none).
    #[inline]
    fn columns(
        &mut self,
        line: &mut Vec<u8>,
        tid: u32,
        at: u64,
        duration: Option<u64>,
        item: Option<&Shown>,
    ) {
        for f in &self.opts.fields {
            match f {
                Field::Time => self.time(line, at),
                Field::Delta => {
                    let d = self.last.map_or(0, |l| at.saturating_sub(l));
                    self.duration(line, d, false);
                    line.extend_from_slice(b"  ");
                }
                Field::Duration => {
                    match duration {
                        None => line.extend_from_slice(b"          "),
                        Some(d) => self.duration(line, d, self.opts.color),
                    }
                    line.push(b' ');
                }
                Field::Tid => {
                    if self.tid_column.0 != Some(tid) {
                        let text = &mut self.tid_column.1;
                        text.clear();
                        text.push(b'[');
                        right_aligned(text, u64::from(tid), 6);
                        text.extend_from_slice(b"] ");
                        self.tid_column.0 = Some(tid);
                    }
                    line.extend_from_slice(&self.tid_column.1);
                }
                Field::Elapsed => {
                    push_seconds(line, shown_ns(at.saturating_sub(self.origin), self.hz), 15);
                    line.extend_from_slice(b"  ");
                }
                Field::Addr => match item {
                    Some(item) => {
                        push_hex(line, self.address(item), 16);
                        line.extend_from_slice(b"  ");
                    }
                    None => line.extend_from_slice(&[b' '; 18]),
                },
            }
        }
    }

    /// `linux:schedule();` with the time the thread spent off the CPU,
    /// as uftrace shows a context switch.
    fn off_cpu(&mut self, tid: u32, slice: OffCpu, depth: u32) {
        let mut line = std::mem::take(&mut self.buf);
        let at = slice.start;
        let off = slice.end.saturating_sub(slice.start);
        self.columns(&mut line, tid, at, Some(off), None);
        self.last = Some(at);
        line.extend_from_slice(b"| ");
        indent(&mut line, depth);
        line.extend_from_slice(b"linux:schedule();");
        if slice.preempted {
            line.extend_from_slice(b" /* ");
            line.extend_from_slice(self.paint("preempted").as_bytes());
            line.extend_from_slice(b" */");
        }
        line.push(b'\n');
        self.buf = line;
    }

    /// ` /* snapshot: ... */` on the first line of the call that took the
    /// snapshot being replayed.
    fn mark(&mut self, line: &mut Vec<u8>, tid: u32, addr: u64, start: u64) {
        if let Some(m) = self.mark.take_if(|m| m.is(tid, addr, start)) {
            line.extend_from_slice(b" /* ");
            line.extend_from_slice(self.paint(m.note()).as_bytes());
            line.extend_from_slice(b" */");
        }
    }

    /// ` /* file:line */` of the function's entry, when asked and known
    /// (looked up once per function).
    fn srcline(&mut self, line: &mut Vec<u8>, func: Option<FuncId>) {
        let (true, Some(f)) = (self.opts.srcline, func) else {
            return;
        };
        let names = self.names;
        let text = self.srclines[f.0 as usize]
            .get_or_insert_with(|| names.srcline(f).map(|s| s.to_string().into_boxed_str()));
        if let Some(t) = text {
            line.extend_from_slice(b" /* ");
            line.extend_from_slice(t.as_bytes());
            line.extend_from_slice(b" */");
        }
    }

    /// The address of the function of `item`: its first byte, or the
    /// site's when it is not known.
    fn address(&self, item: &Shown) -> u64 {
        let (Shown::Enter { addr, func, .. }
        | Shown::Leaf { addr, func, .. }
        | Shown::Leave { addr, func, .. }) = *item;
        match func.or_else(|| self.names.resolve(addr, item.tsc())) {
            Some(f) => self.names.start(f),
            None => addr.saturating_sub(5),
        }
    }

    /// The function's name, or the site's address.
    #[inline]
    fn name(&mut self, line: &mut Vec<u8>, func: Option<FuncId>, addr: u64, tsc: u64) {
        match func.or_else(|| self.names.resolve(addr, tsc)) {
            Some(f) => {
                let names = self.names;
                let name = match self.names_by_id.get_mut(f.0 as usize) {
                    Some(cached) => *cached.get_or_insert_with(|| &names.function(f).name),
                    None => &names.function(f).name,
                };
                line.extend_from_slice(name.as_bytes());
            }
            None => line.extend_from_slice(format!("{:#x}", addr.saturating_sub(5)).as_bytes()),
        }
    }

    /// The note of a call that did not simply return.
    fn how(&self, how: EventKind) -> String {
        match self.how_note(how) {
            "" => String::new(),
            note => self.paint(&format!(" ({note})")),
        }
    }

    /// A note in the notes' colour, when asked.
    fn paint(&self, text: &str) -> String {
        if self.opts.color && !text.is_empty() {
            format!("\x1b[36m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// A duration in uftrace's 10 columns (`  3.097 ms`), coloured by
    /// size when asked.
    #[inline]
    fn duration(&self, line: &mut Vec<u8>, ticks: u64, color: bool) {
        let ns = ticks as f64 * 1e9 / self.hz;
        let code: &[u8] = if !color {
            b""
        } else if ns >= 1e6 {
            b"\x1b[31m" // red: a millisecond or more
        } else if ns >= 1e4 {
            b"\x1b[33m" // yellow: ten microseconds or more
        } else {
            b""
        };
        line.extend_from_slice(code);
        push_ns(line, ns);
        if !code.is_empty() {
            line.extend_from_slice(b"\x1b[0m");
        }
    }

    /// The time column: wall-clock seconds (`--wall-clock`), or seconds
    /// since the trace began.
    fn time(&self, line: &mut Vec<u8>, tsc: u64) {
        if self.opts.absolute {
            let start = self
                .image
                .info
                .get("start_realtime_ns")
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
            let image_start = self
                .image
                .info
                .get("start_tsc")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(self.origin);
            let secs = start / 1e9 + (tsc as f64 - image_start as f64) / self.hz;
            line.extend_from_slice(format!("{secs:>20.9}  ").as_bytes());
        } else {
            push_seconds(line, shown_ns(tsc.saturating_sub(self.origin), self.hz), 14);
            line.extend_from_slice(b"  ");
        }
    }
}

/// What replay prints of a thread: its calls, and its times off the CPU.
enum Item {
    Call(Shown),
    /// Off the CPU inside a shown call, at this depth.
    OffCpu {
        slice: OffCpu,
        depth: u32,
    },
}

impl Item {
    fn tsc(&self) -> u64 {
        match self {
            Item::Call(s) => s.tsc(),
            Item::OffCpu { slice, .. } => slice.start,
        }
    }
}

/// A thread's shown calls with its times off the CPU placed inside the
/// call that was running: a call shown on one line that held some opens
/// and closes around them (as uftrace's `sleeper() { linux:schedule();
/// }`). Off-CPU times outside every shown call are left out.
struct WithSched<'a, I> {
    items: I,
    slices: OffCpuCursor<'a>,
    /// Depth of what comes next: inside how many shown calls.
    depth: u32,
    ready: std::collections::VecDeque<Item>,
}

impl<'a, I: Iterator<Item = Shown>> WithSched<'a, I> {
    fn new(items: I, slices: &'a [OffCpu]) -> Self {
        WithSched {
            items,
            slices: OffCpuCursor::new(slices),
            depth: 0,
            ready: std::collections::VecDeque::new(),
        }
    }

    /// Queues the off-CPU times that began before `until`, at `depth`
    /// (none outside a shown call).
    fn queue_until(&mut self, until: u64, depth: u32) {
        for slice in self.slices.before(until) {
            if depth > 0 {
                self.ready.push_back(Item::OffCpu { slice, depth });
            }
        }
    }
}

impl<I: Iterator<Item = Shown>> Iterator for WithSched<'_, I> {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        if let Some(item) = self.ready.pop_front() {
            return Some(item);
        }
        let item = self.items.next()?;
        self.queue_until(item.tsc(), self.depth);
        match item {
            Shown::Enter { depth, .. } => self.depth = depth + 1,
            Shown::Leave { depth, .. } => self.depth = depth,
            Shown::Leaf {
                addr,
                func,
                start,
                end,
                depth,
                how,
                args,
                ret,
            } if self.slices.any_before(end) => {
                self.ready.push_back(Item::Call(Shown::Enter {
                    addr,
                    func,
                    tsc: start,
                    depth,
                    resumed: false,
                    earlier: false,
                    args,
                }));
                self.queue_until(end, depth + 1);
                self.ready.push_back(Item::Call(Shown::Leave {
                    addr,
                    func,
                    start,
                    end,
                    depth,
                    how,
                    earlier: false,
                    ret,
                }));
                self.depth = depth;
                return self.ready.pop_front();
            }
            Shown::Leaf { depth, .. } => self.depth = depth,
        }
        if self.ready.is_empty() {
            return Some(Item::Call(item));
        }
        self.ready.push_back(Item::Call(item));
        self.ready.pop_front()
    }
}

/// A thread's events that leave their damage, if any, in a slot when they
/// end (the replay names it after the thread's last line).
struct KeepDamage {
    events: crate::reader::events::Events,
    slot: std::rc::Rc<std::cell::RefCell<Option<String>>>,
}

impl Iterator for KeepDamage {
    type Item = ftail_abi::trace::Event;

    fn next(&mut self) -> Option<Self::Item> {
        let e = self.events.next();
        if e.is_none() {
            *self.slot.borrow_mut() = self.events.damage().map(str::to_string);
        }
        e
    }
}

/// Two spaces per level up to [`MAX_INDENT`], then the depth as a number.
fn indent(line: &mut Vec<u8>, depth: u32) {
    const SPACES: &[u8] = &[b' '; 2 * MAX_INDENT as usize];
    line.extend_from_slice(&SPACES[..2 * depth.min(MAX_INDENT) as usize]);
    if depth > MAX_INDENT {
        line.push(b'[');
        right_aligned(line, u64::from(depth), 0);
        line.extend_from_slice(b"] ");
    }
}

const SPACES: &[u8; 32] = &[b' '; 32];

/// `ns` as [`seconds`] writes it, right-aligned in `width` columns.
fn push_seconds(line: &mut Vec<u8>, ns: u64, width: usize) {
    right_aligned(line, ns / 1_000_000_000, width.saturating_sub(10));
    line.push(b'.');
    let mut frac = ns % 1_000_000_000;
    let mut digits = [b'0'; 9];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    line.extend_from_slice(&digits);
}

/// `n` in lower-case hexadecimal, right-aligned in `width` columns.
fn push_hex(line: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n & 15) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    pad(line, width.saturating_sub(digits.len() - i));
    line.extend_from_slice(&digits[i..]);
}

/// `n` spaces.
fn pad(line: &mut Vec<u8>, mut n: usize) {
    while n > 0 {
        let k = n.min(SPACES.len());
        line.extend_from_slice(&SPACES[..k]);
        n -= k;
    }
}

/// Writes `n` in decimal into `a`, its last digit right before `end`;
/// returns where its first digit is.
fn digits_before(a: &mut [u8], end: usize, mut n: u64) -> usize {
    let mut i = end;
    loop {
        i -= 1;
        a[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return i;
        }
    }
}

/// `n` in decimal, right-aligned in `width` columns.
fn right_aligned(line: &mut Vec<u8>, n: u64, width: usize) {
    let mut a = [b' '; 20];
    let start = digits_before(&mut a, 20, n);
    pad(line, width.saturating_sub(a.len()));
    line.extend_from_slice(&a[start.min(a.len().saturating_sub(width))..]);
}

/// `ns` as uftrace shows a duration: `{:7.3} {unit}`, 10 columns, put
/// together on the stack and added in one piece.
fn push_ns(line: &mut Vec<u8>, ns: f64) {
    let (v, unit) = scaled(ns);
    let milli = round(v * 1000.0);
    let mut a = [b' '; 32];
    let n = a.len();
    a[n - 2..].copy_from_slice(unit.as_bytes());
    let frac = milli % 1000;
    a[n - 6] = b'0' + (frac / 100) as u8;
    a[n - 5] = b'0' + (frac / 10 % 10) as u8;
    a[n - 4] = b'0' + (frac % 10) as u8;
    a[n - 7] = b'.';
    let start = digits_before(&mut a, n - 7, milli / 1000);
    line.extend_from_slice(&a[start.min(n - 10)..]);
}

/// A duration formatted like uftrace: value and unit in 10 columns.
pub fn format_ns(ns: f64) -> String {
    let (v, unit) = scaled(ns);
    format!("{v:7.3} {unit}")
}

/// Nanoseconds as a value and the unit uftrace would show it in.
pub fn scaled(ns: f64) -> (f64, &'static str) {
    if ns < 1e3 {
        (ns, "ns")
    } else if ns < 1e6 {
        (ns / 1e3, "us")
    } else if ns < 1e9 {
        (ns / 1e6, "ms")
    } else {
        (ns / 1e9, " s")
    }
}

/// Renders the trace in `trace.dir` as a string with the default options
/// (tests and small traces; commands stream with [`replay`]).
pub fn render(trace: &crate::trace::Trace) -> String {
    let Ok(listing) = TraceDir::open(&trace.dir) else {
        return String::new();
    };
    let names = crate::symbols::names::for_images(&listing.images);
    let mut out = Vec::new();
    let _ = replay(&listing, &names, &Options::default(), &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// How a call closed as `Truncated` ended: the buffer filled up, or
/// tracing was switched off (or the tracer detached) while it ran.
const TRUNCATED: &str = "buffer full: exit not recorded";
const DETACHED: &str = "detached: exit not recorded";

/// Whether the frames of this thread's file that close as `Truncated`
/// were open when tracing was switched off: a file stopped by a detach,
/// or one that went on after tracing was switched on again and did not
/// stop early (a full buffer stops the file for good).
fn detached(header: &crate::reader::events::Header) -> bool {
    header.stopped == ftail_abi::trace::STOPPED_DETACHED
        || (header.stopped == 0 && header.rejoined != 0)
}

impl ImageReplay<'_> {
    /// How a call that did not simply return ended, in words.
    fn how_note(&self, how: EventKind) -> &'static str {
        match how {
            EventKind::TailExit => "tail call",
            EventKind::Unwound => "unwound",
            EventKind::Truncated => self.truncated_note,
            EventKind::Suspended => "switched out",
            _ => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_written_by_hand_match_the_formatting_machinery() {
        let values = [
            0u64,
            1,
            9,
            10,
            999,
            1_000,
            999_499,
            999_500,
            123_456_789,
            1_000_000_000,
            12_345_678_901_234,
            u64::MAX / 3,
        ];
        for x in [
            0.0,
            0.49999999999999994,
            0.5,
            1.5,
            2.5,
            4503599627370497.0,
            1e30,
            -3.5,
        ] {
            assert_eq!(round(x), x.round() as u64, "{x}");
        }
        assert_eq!(round(f64::NAN), 0);
        for &n in &values {
            let ns = n as f64 * 0.37;
            let mut line = Vec::new();
            push_ns(&mut line, ns);
            assert_eq!(String::from_utf8(line).unwrap(), format_ns(ns), "{ns}");
            let mut line = Vec::new();
            right_aligned(&mut line, n, 6);
            assert_eq!(String::from_utf8(line).unwrap(), format!("{n:>6}"));
            let mut line = Vec::new();
            right_aligned(&mut line, n, 24);
            assert_eq!(String::from_utf8(line).unwrap(), format!("{n:>24}"));
            let mut line = Vec::new();
            push_seconds(&mut line, n, 15);
            assert_eq!(
                String::from_utf8(line).unwrap(),
                format!("{:>15}", seconds(n))
            );
            let mut line = Vec::new();
            push_hex(&mut line, n, 16);
            assert_eq!(String::from_utf8(line).unwrap(), format!("{n:>16x}"));
        }
    }
}

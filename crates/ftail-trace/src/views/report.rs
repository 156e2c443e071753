//! `ftail report`: per function, how often it was called and how long it
//! ran — total (callees included; a recursive function's time once, from
//! its outermost activation, as uftrace counts it), self (without its
//! shown callees), average, shortest, longest — over every thread, or
//! per thread.
//!
//! Each thread is read on its own (in parallel) and folded into counters
//! indexed by function: memory is the number of functions plus the call
//! depth, whatever the trace's size. With no filter the fold resolves
//! each entry with one hash probe and touches nothing else; filters go
//! through the same pipeline as replay ([`crate::views::view`]).
//!
//! With recorded values (`ftail record -A/-R/-a`), [`Options::values`]
//! groups calls by function *and* arguments: one row per distinct
//! argument list (`add(1, 2)`), with the return value its calls gave
//! most often (`= 3`, and how often when they differ). Memory is then
//! the number of distinct argument lists and return values.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use ftail_abi::trace::{Event, EventKind, KIND_SHIFT};

use crate::reader::calls::Calls;
use crate::reader::dir::{ThreadFile, TraceDir};
use crate::reader::events::{EventSink, Events};
use crate::reader::sched::{OffCpu, Sched};
use crate::symbols::names::Names;
use crate::views::view::{Filters, Matches, Shown, Visible};
use crate::views::Until;

/// One function's counters, in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Calls (entries).
    pub calls: u64,
    /// Entry to exit, summed over the outermost activations (a call
    /// inside another call of the same function is already in it).
    pub total: u64,
    /// Total without the time of its callees.
    pub self_time: u64,
    /// The shortest call.
    pub min: u64,
    /// The longest call.
    pub max: u64,
    /// Time off the CPU inside the calls, summed as `total` is.
    pub off_cpu: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            calls: 0,
            total: 0,
            self_time: 0,
            min: u64::MAX,
            max: 0,
            off_cpu: 0,
        }
    }
}

impl Counters {
    /// Adds a call's time; `new_call` is false for a resumed slice of a
    /// call already counted (a suspended function's time is the slices it
    /// ran: the time its stack was switched out is not its own);
    /// `outermost` is false for a call inside another of the same
    /// function, whose time that one's total already holds.
    #[inline(always)]
    fn add(&mut self, ticks: u64, callees: u64, new_call: bool, outermost: bool, off: u64) {
        self.calls += u64::from(new_call);
        if outermost {
            self.total += ticks;
            self.off_cpu += off;
        }
        self.self_time += ticks.saturating_sub(callees);
        self.min = self.min.min(ticks);
        self.max = self.max.max(ticks);
    }
}

/// One function's figures in nanoseconds, as reported.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionStats {
    /// Calls.
    pub calls: u64,
    /// Total time.
    pub total_ns: f64,
    /// Self time.
    pub self_ns: f64,
    /// Shortest call.
    pub min_ns: f64,
    /// Longest call.
    pub max_ns: f64,
    /// Time off the CPU inside its calls (with scheduler events).
    pub off_cpu_ns: f64,
}

impl FunctionStats {
    fn from(c: &Counters, hz: f64) -> FunctionStats {
        let ns = |t: u64| t as f64 * 1e9 / hz;
        FunctionStats {
            calls: c.calls,
            total_ns: ns(c.total),
            self_ns: ns(c.self_time),
            min_ns: if c.calls == 0 { 0.0 } else { ns(c.min) },
            max_ns: ns(c.max),
            off_cpu_ns: ns(c.off_cpu),
        }
    }

    /// Adds `o`'s calls (another thread's) to these.
    pub fn merge(&mut self, o: &FunctionStats) {
        if self.calls == 0 {
            *self = o.clone();
            return;
        }
        self.calls += o.calls;
        self.total_ns += o.total_ns;
        self.self_ns += o.self_ns;
        self.min_ns = self.min_ns.min(o.min_ns);
        self.max_ns = self.max_ns.max(o.max_ns);
        self.off_cpu_ns += o.off_cpu_ns;
    }

    /// Average time per call.
    pub fn avg_ns(&self) -> f64 {
        self.total_ns / self.calls.max(1) as f64
    }
}

/// A thread's counters: per function of its image, and per address for
/// entries no table names.
#[derive(Debug, Default)]
struct ThreadCounters {
    by_func: Vec<Counters>,
    unknown: FxHashMap<u64, Counters>,
    /// With [`Options::values`]: per function (index, or `u32::MAX` and
    /// the address) and argument list.
    by_values: FxHashMap<ValueKey, ValueCounters>,
    /// Damage met reading the thread, if any.
    damage: Option<String>,
}

impl ThreadCounters {
    /// The counters of function `f` (an index, or `u32::MAX` for an
    /// entry at `addr` that no table names).
    #[inline]
    fn counters(&mut self, f: u32, addr: u64) -> &mut Counters {
        match self.by_func.get_mut(f as usize) {
            Some(c) => c,
            None => other_slot(&mut self.unknown, addr),
        }
    }

    /// The functions that were called, taken out of `by_func`: the
    /// threads of a trace of many short processes each call few of their
    /// image's functions, and all are held until they are merged.
    fn take_called(&mut self) -> Vec<(u32, Counters)> {
        (0u32..)
            .zip(std::mem::take(&mut self.by_func))
            .filter(|(_, c)| c.calls > 0)
            .collect()
    }
}

/// A function (index, or `u32::MAX` with the entry address for one no
/// table names) and its arguments as text, when recorded.
type ValueKey = (u32, u64, Option<Box<str>>);

/// The calls of one argument list: their counters, and how often each
/// return value came back.
#[derive(Debug, Default)]
struct ValueCounters {
    counters: Counters,
    returns: FxHashMap<Box<str>, u64>,
}

/// How many frames of each key (a function, or a function and its
/// arguments) are open: a call counts in its key's total only when it
/// closes with no other of the same key open around it.
#[derive(Debug)]
struct Open<K> {
    by_func: Vec<u32>,
    other: FxHashMap<K, u32>,
}

impl<K: std::hash::Hash + Eq> Open<K> {
    fn new(functions: usize) -> Self {
        Open {
            by_func: vec![0; functions],
            other: FxHashMap::default(),
        }
    }

    /// The count of function `f` (an index, or `u32::MAX` for the keys
    /// of `other`).
    #[inline(always)]
    fn slot(&mut self, f: u32, key: impl FnOnce() -> K) -> &mut u32 {
        match self.by_func.get_mut(f as usize) {
            Some(n) => n,
            None => other_slot(&mut self.other, key()),
        }
    }

    #[inline(always)]
    fn enter(&mut self, f: u32, key: impl FnOnce() -> K) {
        *self.slot(f, key) += 1;
    }

    /// Closes a frame of `f`; whether it was the outermost one open.
    #[inline(always)]
    fn leave(&mut self, f: u32, key: impl FnOnce() -> K) -> bool {
        let n = self.slot(f, key);
        *n = n.saturating_sub(1);
        *n == 0
    }
}

/// The entry of `key` in `map`, made when missing: out of the loops'
/// way (functions no table names are few).
#[cold]
#[inline(never)]
fn other_slot<K: std::hash::Hash + Eq, V: Default>(map: &mut FxHashMap<K, V>, key: K) -> &mut V {
    map.entry(key).or_default()
}

/// A thread's time off the CPU up to any instant: what a call's
/// duration holds of it is the difference at its two ends.
struct OffTime<'a> {
    slices: &'a [OffCpu],
    /// Time off the CPU before each slice began.
    before: Vec<u64>,
    /// Take it out of every duration (`--no-sleep-time`).
    subtract: bool,
}

impl<'a> OffTime<'a> {
    fn new(slices: &'a [OffCpu], subtract: bool) -> Self {
        let mut sum = 0;
        let before = slices
            .iter()
            .map(|s| {
                let b = sum;
                sum += s.end - s.start;
                b
            })
            .collect();
        OffTime {
            slices,
            before,
            subtract,
        }
    }

    fn until(&self, t: u64) -> u64 {
        let n = self.slices.partition_point(|s| s.start < t);
        match n.checked_sub(1) {
            None => 0,
            Some(i) => {
                let s = self.slices[i];
                self.before[i] + (t.min(s.end) - s.start)
            }
        }
    }

    /// A call from `start` to `end`: its duration (without its time off
    /// the CPU when asked) and its time off the CPU.
    fn call(&self, start: u64, end: u64) -> (u64, u64) {
        let ticks = end.saturating_sub(start);
        if self.slices.is_empty() {
            return (ticks, 0);
        }
        let off = self.until(end).saturating_sub(self.until(start)).min(ticks);
        (if self.subtract { ticks - off } else { ticks }, off)
    }
}

/// Empty counters for `names`, and the thread's events; or the counters
/// with the reason the events cannot be read.
fn open_thread(
    file: &ThreadFile,
    names: &Names,
) -> Result<(ThreadCounters, crate::reader::events::Header, Events), ThreadCounters> {
    let mut out = ThreadCounters {
        by_func: vec![Counters::default(); names.functions().len()],
        ..ThreadCounters::default()
    };
    match Events::open(&file.path) {
        Ok((header, events)) => Ok((out, header, events)),
        Err(e) => {
            out.damage = Some(e);
            Err(out)
        }
    }
}

/// Folds one thread without filters but `-t` (`filters`' other
/// fields are not looked at): the fast path, one loop over the thread's
/// records that pairs and counts as it decodes, made once for threads
/// that were never off the CPU and once for those that were.
fn fold_plain(
    file: &ThreadFile,
    names: &Names,
    filters: &Filters,
    off: &OffTime,
    stop: &AtomicBool,
) -> ThreadCounters {
    let (mut out, header, mut events) = match open_thread(file, names) {
        Ok(x) => x,
        Err(out) => return out,
    };
    let close_at_end = header.stopped != 0;
    if off.slices.is_empty() {
        let fold = PlainFold::new(&mut out, names, filters.min_ticks, OnCpu);
        fold.run(&mut events, close_at_end, stop);
    } else {
        let fold = PlainFold::new(&mut out, names, filters.min_ticks, OffCursor::new(off));
        fold.run(&mut events, close_at_end, stop);
    }
    out.damage = events.damage().map(str::to_string);
    out
}

/// What a call from `start` to `end` held of the time its thread was
/// off the CPU, asked in (about) time order: at each entry, then at its
/// exit.
trait OffClock {
    /// Time off the CPU before `t`.
    fn at(&mut self, t: u64) -> u64;
    /// A call's duration (without its time off the CPU when asked) and
    /// its time off the CPU; `off_start` is [`OffClock::at`] its start.
    fn call(&mut self, start: u64, off_start: u64, end: u64) -> (u64, u64);
}

/// A thread never off the CPU (or no scheduler events).
struct OnCpu;

impl OffClock for OnCpu {
    #[inline(always)]
    fn at(&mut self, _: u64) -> u64 {
        0
    }

    #[inline(always)]
    fn call(&mut self, start: u64, _: u64, end: u64) -> (u64, u64) {
        (end.saturating_sub(start), 0)
    }
}

/// [`OffTime`] read with a cursor that follows the events' times: a
/// comparison or two per event where a binary search over every slice
/// took a dozen mispredicted steps. It seeks back as well when a time
/// goes back (a clock resynchronised), so it finds what
/// [`OffTime::until`] finds.
struct OffCursor<'a> {
    time: &'a OffTime<'a>,
    /// The slices that start before the last time asked.
    next: usize,
    /// Times in `(lo, hi]` have `next` slices starting before them.
    lo: u64,
    hi: u64,
    /// The last of those slices (all 0 when there is none): time off
    /// the CPU before it, its start and end.
    before: u64,
    start: u64,
    end: u64,
}

impl<'a> OffCursor<'a> {
    fn new(time: &'a OffTime<'a>) -> Self {
        let mut cursor = OffCursor {
            time,
            next: 0,
            lo: 0,
            hi: 0,
            before: 0,
            start: 0,
            end: 0,
        };
        cursor.seek(0);
        cursor
    }

    /// Moves to the slices that start before `t`.
    #[cold]
    #[inline(never)]
    fn seek(&mut self, t: u64) {
        let slices = self.time.slices;
        while self.next < slices.len() && slices[self.next].start < t {
            self.next += 1;
        }
        while self.next > 0 && slices[self.next - 1].start >= t {
            self.next -= 1;
        }
        self.hi = slices.get(self.next).map_or(u64::MAX, |s| s.start);
        (self.lo, self.before, self.start, self.end) = match self.next.checked_sub(1) {
            // A time of 0 seeks again: it finds no slice before it.
            None => (0, 0, 0, 0),
            Some(i) => {
                let s = slices[i];
                (s.start, self.time.before[i], s.start, s.end)
            }
        };
    }
}

impl OffClock for OffCursor<'_> {
    #[inline(always)]
    fn at(&mut self, t: u64) -> u64 {
        if !(self.lo < t && t <= self.hi) {
            self.seek(t);
        }
        self.before + (t.min(self.end) - self.start)
    }

    #[inline(always)]
    fn call(&mut self, start: u64, off_start: u64, end: u64) -> (u64, u64) {
        let ticks = end.saturating_sub(start);
        let off = self.at(end).saturating_sub(off_start).min(ticks);
        (
            if self.time.subtract {
                ticks - off
            } else {
                ticks
            },
            off,
        )
    }
}

/// An open frame of [`PlainFold`].
struct PlainFrame {
    addr: u64,
    start: u64,
    /// Time of its callees so far.
    callees: u64,
    /// Time off the CPU before it began.
    off_start: u64,
    /// Its function (index, or `u32::MAX` for an address no table names).
    func: u32,
    /// A new call, not a resumed slice.
    new_call: bool,
}

/// The state of [`fold_plain`]: events paired as [`Calls`] pairs them
/// and counted as the filtered fold counts its shown calls.
struct PlainFold<'a, C> {
    out: &'a mut ThreadCounters,
    names: &'a Names,
    resolved: crate::symbols::names::ResolveCache,
    stack: Vec<PlainFrame>,
    open: Open<u64>,
    min_ticks: u64,
    clock: C,
    /// The time of the last event.
    last: u64,
}

impl<C: OffClock> EventSink for PlainFold<'_, C> {
    #[inline(always)]
    fn event(&mut self, e: Event) {
        self.last = e.tsc;
        match EventKind::from_u8((e.word >> KIND_SHIFT) as u8) {
            Some(kind) if kind.opens() => self.enter(e.addr(), e.tsc, kind != EventKind::Entry),
            Some(_) => self.leave(e.tsc),
            None => {}
        }
    }
}

impl<'a, C: OffClock> PlainFold<'a, C> {
    fn new(out: &'a mut ThreadCounters, names: &'a Names, min_ticks: u64, clock: C) -> Self {
        let functions = out.by_func.len();
        PlainFold {
            out,
            names,
            resolved: Default::default(),
            stack: Vec::new(),
            open: Open::new(functions),
            min_ticks,
            clock,
            last: 0,
        }
    }

    /// Reads every event; a thread that stopped recording early has the
    /// frames still open at its end closed at its last event's time.
    fn run(mut self, events: &mut Events, close_at_end: bool, stop: &AtomicBool) {
        events.each_event(stop, &mut self);
        if close_at_end {
            while !self.stack.is_empty() {
                self.leave(self.last);
            }
        }
    }

    #[inline(always)]
    fn enter(&mut self, addr: u64, tsc: u64, resumed: bool) {
        let func = self
            .resolved
            .resolve(self.names, addr, tsc)
            .map_or(u32::MAX, |f| f.0);
        self.open.enter(func, || addr);
        self.stack.push(PlainFrame {
            addr,
            start: tsc,
            callees: 0,
            off_start: self.clock.at(tsc),
            func,
            new_call: !resumed,
        });
    }

    #[inline(always)]
    fn leave(&mut self, end: u64) {
        let Some(frame) = self.stack.pop() else {
            return; // an exit with nothing open
        };
        let (ticks, off_cpu) = self.clock.call(frame.start, frame.off_start, end);
        let outermost = self.open.leave(frame.func, || frame.addr);
        if end.saturating_sub(frame.start) < self.min_ticks {
            // Left out (`-t`): its time stays in its caller's own time.
            return;
        }
        let c = self.out.counters(frame.func, frame.addr);
        c.add(ticks, frame.callees, frame.new_call, outermost, off_cpu);
        if let Some(parent) = self.stack.last_mut() {
            parent.callees += ticks;
        }
    }
}

/// Folds one thread through the filters.
fn fold_filtered(
    file: &ThreadFile,
    names: &Names,
    filters: &Filters,
    m: &Matches,
    off: &OffTime,
    stop: &AtomicBool,
) -> ThreadCounters {
    let (mut out, header, mut events) = match open_thread(file, names) {
        Ok(x) => x,
        Err(out) => return out,
    };
    let events_until = Until::new(&mut events, stop);
    let visible = Visible::new(Calls::new(events_until, header.stopped), names, m, filters);
    // Per open shown call: time of its callees, whether a new call.
    let mut callees: Vec<(u64, bool)> = Vec::new();
    let mut open: Open<u64> = Open::new(out.by_func.len());
    let id = |func: Option<crate::symbols::names::FuncId>| func.map_or(u32::MAX, |f| f.0);
    // `-t` is decided at each exit: no call waits.
    for item in visible {
        match item {
            Shown::Enter {
                addr,
                func,
                resumed,
                ..
            } => {
                open.enter(id(func), || addr);
                callees.push((0, !resumed));
            }
            Shown::Leave {
                addr,
                func,
                start,
                end,
                ..
            } if !filters.long_enough(start, end) => {
                callees.pop();
                open.leave(id(func), || addr);
            }
            Shown::Leave {
                addr,
                func,
                start,
                end,
                ..
            }
            | Shown::Leaf {
                addr,
                func,
                start,
                end,
                ..
            } => {
                let (inner, new_call, outermost) = if matches!(item, Shown::Leave { .. }) {
                    let (inner, new_call) = callees.pop().unwrap_or((0, true));
                    (inner, new_call, open.leave(id(func), || addr))
                } else {
                    let f = id(func);
                    (0, true, *open.slot(f, || addr) == 0)
                };
                let (ticks, off_cpu) = off.call(start, end);
                let c = out.counters(id(func), addr);
                c.add(ticks, inner, new_call, outermost, off_cpu);
                if let Some(parent) = callees.last_mut() {
                    parent.0 += ticks;
                }
            }
        }
    }
    out.damage = events.damage().map(str::to_string);
    out
}

/// Folds one thread by function and argument values, through the
/// filters.
fn fold_values(
    file: &ThreadFile,
    names: &Names,
    filters: &Filters,
    m: &Matches,
    enums: &crate::values::Enums,
    off: &OffTime,
    stop: &AtomicBool,
) -> ThreadCounters {
    let (mut out, header, mut events) = match open_thread(file, names) {
        Ok(x) => x,
        Err(out) => return out,
    };
    let feed = events.values();
    let visible = Visible::new(
        Calls::new(Until::new(&mut events, stop), header.stopped).values(feed),
        names,
        m,
        filters,
    );
    // Per open shown call: time of its callees, whether a new call, its
    // arguments.
    let mut open: Vec<(u64, bool, Option<Box<str>>)> = Vec::new();
    // Open calls per row (function and arguments): a row's total counts
    // its outermost calls.
    let mut rows: Open<ValueKey> = Open::new(0);
    let text = |v: &crate::values::Values| -> Box<str> {
        crate::values::args_text(v, enums).into_boxed_str()
    };
    let key = |func: Option<crate::symbols::names::FuncId>, addr: u64, args| match func {
        Some(f) => (f.0, 0, args),
        None => (u32::MAX, addr, args),
    };
    // `-t` is decided at each exit: no call waits.
    for item in visible {
        match item {
            Shown::Enter {
                addr,
                func,
                resumed,
                ref args,
                ..
            } => {
                let args = args.as_ref().map(text);
                rows.enter(u32::MAX, || key(func, addr, args.clone()));
                open.push((0, !resumed, args));
            }
            Shown::Leave {
                addr,
                func,
                start,
                end,
                ..
            } if !filters.long_enough(start, end) => {
                let args = open.pop().and_then(|o| o.2);
                rows.leave(u32::MAX, || key(func, addr, args));
            }
            Shown::Leave {
                addr,
                func,
                start,
                end,
                ref ret,
                ..
            }
            | Shown::Leaf {
                addr,
                func,
                start,
                end,
                ref ret,
                ..
            } => {
                let (inner, new_call, args, outermost) = match item {
                    Shown::Leaf { ref args, .. } => {
                        let args = args.as_ref().map(text);
                        let k = key(func, addr, args.clone());
                        let outermost = rows.other.get(&k).is_none_or(|&n| n == 0);
                        (0, true, args, outermost)
                    }
                    _ => {
                        let (inner, new_call, args) = open.pop().unwrap_or((0, true, None));
                        let outermost = rows.leave(u32::MAX, || key(func, addr, args.clone()));
                        (inner, new_call, args, outermost)
                    }
                };
                let (ticks, off_cpu) = off.call(start, end);
                let c = out.by_values.entry(key(func, addr, args)).or_default();
                c.counters.add(ticks, inner, new_call, outermost, off_cpu);
                let name = func.map(|f| &*names.function(f).mangled);
                if let Some(r) = ret
                    .as_ref()
                    .and_then(|v| crate::values::ret_text(v, name, enums))
                {
                    *c.returns.entry(r.into_boxed_str()).or_default() += 1;
                }
                if let Some(parent) = open.last_mut() {
                    parent.0 += ticks;
                }
            }
        }
    }
    out.damage = events.damage().map(str::to_string);
    out
}

/// How to report.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// What to count (as in replay).
    pub filters: Filters,
    /// Only these threads (empty: all).
    pub tids: Vec<u32>,
    /// One row per thread and function, not per function.
    pub per_thread: bool,
    /// One row per function and argument list, with the return values
    /// (recorded with `ftail record -A/-R/-a`).
    pub values: bool,
    /// Each function's source file and line (`--srcline`).
    pub srcline: bool,
    /// Durations without the time off the CPU (ftrace's `nosleep-time`),
    /// where the trace has scheduler events.
    pub no_sleep_time: bool,
}

/// A row's key: the function's name, and the thread when per thread.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowKey {
    /// Process image (pid, or `PID~N`) and thread, when per thread.
    pub thread: Option<(String, u32)>,
    /// The function's name.
    pub name: Arc<str>,
    /// Its arguments as replay shows them (`1, "abc"`), with
    /// [`Options::values`] when they were recorded.
    pub args: Option<Box<str>>,
}

/// What a report found.
#[derive(Debug, Default)]
pub struct Report {
    /// Per row.
    pub rows: BTreeMap<RowKey, FunctionStats>,
    /// With [`Options::values`]: per row with recorded return values,
    /// how many calls returned each.
    pub returns: BTreeMap<RowKey, BTreeMap<Box<str>, u64>>,
    /// Threads read up to damage: one line each.
    pub damage: Vec<String>,
    /// Modules that could not be named.
    pub diagnostics: Vec<String>,
    /// With [`Options::srcline`]: where each function named in the rows
    /// is, when the debug info says.
    pub srclines: BTreeMap<Arc<str>, String>,
    /// Whether the trace has scheduler events (its off-CPU times mean
    /// something).
    pub sched: bool,
}

/// Counts every selected thread of `trace` (in parallel); `names` has one
/// entry per image.
pub fn report(trace: &TraceDir, names: &[Names], opts: &Options) -> Report {
    report_until(trace, names, opts, &AtomicBool::new(false))
}

/// [`report`], ending early (with the calls read so far) once `stop` is
/// set: for a report nobody waits for any more.
pub fn report_until(
    trace: &TraceDir,
    names: &[Names],
    opts: &Options,
    stop: &AtomicBool,
) -> Report {
    let matches: Vec<Matches> = names
        .iter()
        .map(|n| Matches::new(&opts.filters, n))
        .collect();
    // `-t` alone is decided at each exit, on the fast path too.
    let plain = !Filters {
        min_ticks: 0,
        ..opts.filters.clone()
    }
    .select();
    let jobs: Vec<(usize, &ThreadFile)> = trace
        .images
        .iter()
        .enumerate()
        .flat_map(|(i, img)| img.threads.iter().map(move |t| (i, t)))
        .filter(|(_, t)| opts.tids.is_empty() || opts.tids.contains(&t.tid))
        .collect();
    let enums = if opts.values {
        crate::values::Enums::load(&trace.dir)
    } else {
        crate::values::Enums::default()
    };
    let sched = Sched::load(&trace.dir);
    #[allow(clippy::type_complexity)]
    let folded: Vec<(usize, u32, Vec<(u32, Counters)>, ThreadCounters)> = jobs
        .par_iter()
        .map(|&(i, t)| {
            let off = OffTime::new(sched.thread(t.tid), opts.no_sleep_time);
            let mut c = if opts.values {
                fold_values(t, &names[i], &opts.filters, &matches[i], &enums, &off, stop)
            } else if plain {
                fold_plain(t, &names[i], &opts.filters, &off, stop)
            } else {
                fold_filtered(t, &names[i], &opts.filters, &matches[i], &off, stop)
            };
            (i, t.tid, c.take_called(), c)
        })
        .collect();
    let mut out = Report {
        sched: sched.recorded,
        ..Report::default()
    };
    for n in names {
        out.diagnostics.extend(n.diagnostics().iter().cloned());
    }
    for (i, tid, called, c) in folded {
        let image = &trace.images[i];
        let hz = image.tsc_hz().max(1) as f64;
        let thread = opts.per_thread.then(|| (image.key.clone(), tid));
        let mut add = |name: Arc<str>, args: Option<Box<str>>, counters: &Counters| {
            if counters.calls == 0 {
                return None;
            }
            let stats = FunctionStats::from(counters, hz);
            let key = RowKey {
                thread: thread.clone(),
                name,
                args,
            };
            out.rows
                .entry(key.clone())
                .and_modify(|s| s.merge(&stats))
                .or_insert(stats);
            Some(key)
        };
        let unknown = |addr: u64| -> Arc<str> { format!("{:#x}", addr.saturating_sub(5)).into() };
        for (f, counters) in &called {
            let id = *f as usize;
            let name = names[i].functions()[id].name.clone();
            if add(name.clone(), None, counters).is_some() && opts.srcline {
                if let Some(line) = names[i].srcline(crate::symbols::names::FuncId(id as u32)) {
                    out.srclines.entry(name).or_insert_with(|| line.to_string());
                }
            }
        }
        for (addr, counters) in &c.unknown {
            add(unknown(*addr), None, counters);
        }
        let mut returns = Vec::new();
        for ((f, addr, args), v) in c.by_values {
            let name = match f {
                u32::MAX => unknown(addr),
                f => names[i].functions()[f as usize].name.clone(),
            };
            if let Some(key) = add(name, args, &v.counters) {
                returns.push((key, v.returns));
            }
        }
        for (key, rets) in returns {
            if rets.is_empty() {
                continue;
            }
            let row = out.returns.entry(key).or_default();
            for (r, n) in rets {
                *row.entry(r).or_default() += n;
            }
        }
        if let Some(d) = c.damage {
            out.damage.push(d);
        }
    }
    out
}

/// What to sort the report by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Total time, longest first.
    Total,
    /// Self time, longest first.
    SelfTime,
    /// Calls, most first.
    Calls,
    /// Average time, longest first.
    Avg,
    /// Shortest call, longest first.
    Min,
    /// Longest call, longest first.
    Max,
    /// Function name.
    Name,
}

impl SortKey {
    /// Parses a sort key's name.
    pub fn parse(s: &str) -> Option<SortKey> {
        Some(match s {
            "total" => SortKey::Total,
            "self" => SortKey::SelfTime,
            "calls" => SortKey::Calls,
            "avg" => SortKey::Avg,
            "min" => SortKey::Min,
            "max" => SortKey::Max,
            "name" => SortKey::Name,
            _ => return None,
        })
    }

    fn order(self, a: &FunctionStats, b: &FunctionStats) -> std::cmp::Ordering {
        match self {
            SortKey::Total => b.total_ns.total_cmp(&a.total_ns),
            SortKey::SelfTime => b.self_ns.total_cmp(&a.self_ns),
            SortKey::Calls => b.calls.cmp(&a.calls),
            SortKey::Avg => b.avg_ns().total_cmp(&a.avg_ns()),
            SortKey::Min => b.min_ns.total_cmp(&a.min_ns),
            SortKey::Max => b.max_ns.total_cmp(&a.max_ns),
            SortKey::Name => std::cmp::Ordering::Equal,
        }
    }
}

/// Nanoseconds with a unit, like uftrace.
fn human(ns: f64) -> String {
    let (v, unit) = crate::views::replay::scaled(ns);
    format!("{v:.3} {unit}")
}

/// A column of the report (`-f`), named as uftrace's `report -f` names
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// Total time (`total`).
    Total,
    /// Self time (`self`).
    SelfTime,
    /// Calls (`call`).
    Calls,
    /// Average total time per call (`total-avg`, or `avg`).
    Avg,
    /// Shortest call (`total-min`, or `min`).
    Min,
    /// Longest call (`total-max`, or `max`).
    Max,
    /// Average self time per call (`self-avg`).
    SelfAvg,
    /// Time off the CPU inside the calls (`off-cpu`), from scheduler
    /// events.
    OffCpu,
}

impl Column {
    /// The columns shown by default, in their order.
    pub const DEFAULT: [Column; 6] = [
        Column::Total,
        Column::SelfTime,
        Column::Calls,
        Column::Avg,
        Column::Min,
        Column::Max,
    ];

    /// Parses a `-f` list: the columns in the order given; `none` alone
    /// for none, `all` for every one.
    ///
    /// # Errors
    ///
    /// Names the field it does not know.
    pub fn parse_list(list: &str) -> Result<Vec<Column>, String> {
        let mut out = Vec::new();
        for f in list.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            match f {
                "none" => {}
                "all" => out.extend(
                    Column::DEFAULT
                        .iter()
                        .copied()
                        .chain([Column::SelfAvg, Column::OffCpu]),
                ),
                "total" => out.push(Column::Total),
                "self" => out.push(Column::SelfTime),
                "call" | "calls" => out.push(Column::Calls),
                "total-avg" | "avg" => out.push(Column::Avg),
                "total-min" | "min" => out.push(Column::Min),
                "total-max" | "max" => out.push(Column::Max),
                "self-avg" => out.push(Column::SelfAvg),
                "off-cpu" => out.push(Column::OffCpu),
                other => {
                    return Err(format!(
                        "unknown report field {other:?} (known: total, self, call, total-avg, \
                         total-min, total-max, self-avg, off-cpu, or avg, min, max; all; none)"
                    ))
                }
            }
        }
        Ok(out)
    }

    fn title(self) -> &'static str {
        match self {
            Column::Total => "TOTAL TIME",
            Column::SelfTime => "SELF TIME",
            Column::Calls => "CALLS",
            Column::Avg => "AVERAGE",
            Column::Min => "MIN",
            Column::Max => "MAX",
            Column::SelfAvg => "SELF AVG",
            Column::OffCpu => "OFF-CPU",
        }
    }

    fn value(self, s: &FunctionStats) -> String {
        match self {
            Column::Total => human(s.total_ns),
            Column::SelfTime => human(s.self_ns),
            Column::Calls => s.calls.to_string(),
            Column::Avg => human(s.avg_ns()),
            Column::Min => human(s.min_ns),
            Column::Max => human(s.max_ns),
            Column::SelfAvg => human(s.self_ns / s.calls.max(1) as f64),
            Column::OffCpu => human(s.off_cpu_ns),
        }
    }

    /// Calls take 10 columns, times 12.
    fn width(self) -> usize {
        if self == Column::Calls {
            10
        } else {
            12
        }
    }
}

/// The report as text: one line per row, sorted, with the default
/// columns.
pub fn render(r: &Report, key: SortKey) -> String {
    render_columns(r, key, &Column::DEFAULT)
}

/// The report as text with `columns` (`-f`), in their order.
pub fn render_columns(r: &Report, key: SortKey, columns: &[Column]) -> String {
    let mut rows: Vec<(&RowKey, &FunctionStats)> = r.rows.iter().collect();
    rows.sort_by(|a, b| key.order(a.1, b.1).then_with(|| a.0.cmp(b.0)));
    let per_thread = rows.iter().any(|(k, _)| k.thread.is_some());
    let mut out = String::new();
    for c in columns {
        let _ = write!(out, "{:>w$}  ", c.title(), w = c.width());
    }
    if per_thread {
        out.push_str("PROCESS   THREAD  ");
    }
    out.push_str("FUNCTION");
    if !r.srclines.is_empty() {
        out.push_str(" [SOURCE]");
    }
    out.push('\n');
    for (k, s) in rows {
        for c in columns {
            let _ = write!(out, "{:>w$}  ", c.value(s), w = c.width());
        }
        if let Some((key, tid)) = &k.thread {
            let _ = write!(out, "{key:>7}  {tid:>7}  ");
        }
        let _ = write!(out, "{}", call(k, r.returns.get(k)));
        if let Some(src) = r.srclines.get(&k.name) {
            let _ = write!(out, " [{src}]");
        }
        out.push('\n');
    }
    for d in &r.diagnostics {
        let _ = writeln!(out, "# {d}");
    }
    for d in &r.damage {
        let _ = writeln!(out, "# read up to damage: {d}");
    }
    out
}

/// A row's function: its name, or with [`Options::values`] its call as
/// replay shows one, `add(1, 2) = 3`, with the return value its calls
/// gave most often and, when they differ, how often and how many values
/// there were: `rand(6) = 4 /* 3 of 10 calls; 6 values */`.
fn call(k: &RowKey, returns: Option<&BTreeMap<Box<str>, u64>>) -> String {
    let mut s = k.name.to_string();
    if k.args.is_none() && returns.is_none() {
        return s;
    }
    let _ = write!(s, "({})", k.args.as_deref().unwrap_or(""));
    let Some(returns) = returns else { return s };
    // The most frequent value; of equally frequent ones, the first.
    let Some((value, &n)) = returns.iter().rev().max_by_key(|(_, &n)| n) else {
        return s;
    };
    let _ = write!(s, " = {value}");
    if returns.len() > 1 {
        let all: u64 = returns.values().sum();
        let _ = write!(s, " /* {n} of {all} calls; {} values */", returns.len());
    }
    s
}

/// Which trace of a `--diff` is which, as the header names them.
#[derive(Debug, Clone, Copy)]
pub struct DiffLabels<'a> {
    /// The base the change is measured from (`--diff DIR`).
    pub before: &'a str,
    /// The trace compared with it (`-d DIR`).
    pub after: &'a str,
}

/// Two runs side by side, per function: calls, total and self time of
/// each, and the change from `before` to `after` (`--diff`): after −
/// before, relative to before, as uftrace's `report --diff` counts it
/// (a function going from 1 call to 3 is +200.0%).
pub fn render_diff(before: &Report, after: &Report, labels: DiffLabels, key: SortKey) -> String {
    let mut names: Vec<&RowKey> = before.rows.keys().chain(after.rows.keys()).collect();
    names.sort();
    names.dedup();
    let zero = FunctionStats {
        calls: 0,
        total_ns: 0.0,
        self_ns: 0.0,
        min_ns: 0.0,
        max_ns: 0.0,
        off_cpu_ns: 0.0,
    };
    let mut rows: Vec<(&RowKey, &FunctionStats, &FunctionStats)> = names
        .into_iter()
        .map(|k| {
            (
                k,
                before.rows.get(k).unwrap_or(&zero),
                after.rows.get(k).unwrap_or(&zero),
            )
        })
        .collect();
    // Sorted by the size of the change in the key's figure, largest first.
    let change = |a: &FunctionStats, b: &FunctionStats| -> f64 {
        match key {
            SortKey::Calls => b.calls as f64 - a.calls as f64,
            SortKey::SelfTime => b.self_ns - a.self_ns,
            _ => b.total_ns - a.total_ns,
        }
    };
    rows.sort_by(|x, y| {
        change(y.1, y.2)
            .abs()
            .total_cmp(&change(x.1, x.2).abs())
            .then_with(|| x.0.cmp(y.0))
    });
    let mut out = format!(
        "# before: {}\n# after:  {}\n# X: before, X': after, CHANGE: (after - before) / before\n",
        labels.before, labels.after
    );
    let _ = writeln!(
        out,
        "{:>10} {:>10} {:>8}  {:>12} {:>12} {:>8}  {:>12} {:>12} {:>8}  FUNCTION",
        "CALLS", "CALLS'", "CHANGE", "TOTAL", "TOTAL'", "CHANGE", "SELF", "SELF'", "CHANGE"
    );
    for (k, a, b) in rows {
        let _ = writeln!(
            out,
            "{:>10} {:>10} {:>8}  {:>12} {:>12} {:>8}  {:>12} {:>12} {:>8}  {}",
            a.calls,
            b.calls,
            change_pct(a.calls as f64, b.calls as f64),
            human(a.total_ns),
            human(b.total_ns),
            change_pct(a.total_ns, b.total_ns),
            human(a.self_ns),
            human(b.self_ns),
            change_pct(a.self_ns, b.self_ns),
            k.name
        );
    }
    out
}

/// The change from `before` to `after`, relative to `before`.
fn change_pct(before: f64, after: f64) -> String {
    if before == 0.0 {
        if after == 0.0 {
            "0%".into()
        } else {
            "new".into()
        }
    } else {
        format!("{:+.1}%", (after - before) * 100.0 / before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_holds_the_part_of_each_time_off_the_cpu_inside_it() {
        let slice = |start, end| OffCpu {
            start,
            end,
            preempted: false,
        };
        let slices = [slice(10, 20), slice(30, 35)];
        let kept = OffTime::new(&slices, false);
        assert_eq!(kept.call(0, 100), (100, 15));
        assert_eq!(kept.call(15, 32), (17, 7));
        assert_eq!(kept.call(20, 30), (10, 0));
        let taken = OffTime::new(&slices, true);
        assert_eq!(taken.call(15, 32), (10, 7));
        assert_eq!(taken.call(12, 18), (0, 6));
    }

    /// The cursor finds what the binary search finds, for times in order
    /// and for times that go back, inside, between and around slices.
    #[test]
    fn the_off_cpu_cursor_agrees_with_the_search() {
        let slice = |start, end| OffCpu {
            start,
            end,
            preempted: false,
        };
        let slices: Vec<OffCpu> = (0..50u64)
            .map(|i| slice(i * 100 + 10, i * 100 + 60))
            .collect();
        let mut seed = 88172645463325252u64;
        let mut times: Vec<u64> = (0..6000u64).map(|t| t + 1).collect();
        times.extend((0..2000).map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % 5200
        }));
        for subtract in [false, true] {
            let time = OffTime::new(&slices, subtract);
            let mut cursor = OffCursor::new(&time);
            let mut open = Vec::new();
            for (i, &t) in times.iter().enumerate() {
                assert_eq!(cursor.at(t), time.until(t), "at {t}");
                if i % 3 == 2 {
                    if let Some((start, off_start)) = open.pop() {
                        assert_eq!(cursor.call(start, off_start, t), time.call(start, t));
                    }
                } else {
                    open.push((t, cursor.at(t)));
                }
            }
        }
    }

    fn key(args: Option<&str>) -> RowKey {
        RowKey {
            thread: None,
            name: "roll".into(),
            args: args.map(Into::into),
        }
    }

    #[test]
    fn rows_with_values_show_the_most_frequent_return_value() {
        let returns = |v: &[(&str, u64)]| -> BTreeMap<Box<str>, u64> {
            v.iter().map(|&(r, n)| (r.into(), n)).collect()
        };
        assert_eq!(call(&key(None), None), "roll");
        assert_eq!(call(&key(Some("6")), None), "roll(6)");
        assert_eq!(
            call(&key(Some("6")), Some(&returns(&[("4", 1)]))),
            "roll(6) = 4"
        );
        assert_eq!(call(&key(None), Some(&returns(&[("4", 1)]))), "roll() = 4");
        assert_eq!(
            call(
                &key(Some("6")),
                Some(&returns(&[("1", 2), ("4", 3), ("6", 3), ("2", 1)]))
            ),
            "roll(6) = 4 /* 3 of 9 calls; 4 values */"
        );
    }
}

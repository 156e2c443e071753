//! `ftail report`: per function, how often it was called and how long it
//! ran — total (callees included; a recursive function's inner calls
//! count again, as in uftrace), self (without its shown callees),
//! average, shortest, longest — over every thread, or per thread.
//!
//! Each thread is read on its own (in parallel) and folded into counters
//! indexed by function: memory is the number of functions plus the call
//! depth, whatever the trace's size. With no filter the fold resolves
//! each entry with one hash probe and touches nothing else; filters go
//! through the same pipeline as replay ([`crate::view`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::names::Names;
use crate::reader::calls::{Calls, Step};
use crate::reader::dir::{ThreadFile, TraceDir};
use crate::reader::events::Events;
use crate::view::{Filters, Matches, Shown, Threshold, Visible};

/// One function's counters, in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Calls (entries).
    pub calls: u64,
    /// Entry to exit, summed.
    pub total: u64,
    /// Total without the time of its callees.
    pub self_time: u64,
    /// The shortest call.
    pub min: u64,
    /// The longest call.
    pub max: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            calls: 0,
            total: 0,
            self_time: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

impl Counters {
    /// Adds a call's time; `new_call` is false for a resumed slice of a
    /// call already counted (a suspended function's time is the slices it
    /// ran: the time its stack was switched out is not its own).
    fn add(&mut self, ticks: u64, callees: u64, new_call: bool) {
        self.calls += u64::from(new_call);
        self.total += ticks;
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
        }
    }

    fn merge(&mut self, o: &FunctionStats) {
        if self.calls == 0 {
            *self = o.clone();
            return;
        }
        self.calls += o.calls;
        self.total_ns += o.total_ns;
        self.self_ns += o.self_ns;
        self.min_ns = self.min_ns.min(o.min_ns);
        self.max_ns = self.max_ns.max(o.max_ns);
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
    /// Damage met reading the thread, if any.
    damage: Option<String>,
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

/// Folds one thread without filters: the fast path.
fn fold_plain(file: &ThreadFile, names: &Names) -> ThreadCounters {
    let (mut out, header, mut events) = match open_thread(file, names) {
        Ok(x) => x,
        Err(out) => return out,
    };
    // Open frames: the function (index, or !0 for an unknown address in
    // `addr`), entry address, entry time, time of its callees, whether a
    // new call (not a resumed slice).
    let mut stack: Vec<(u32, u64, u64, u64, bool)> = Vec::new();
    let mut calls = Calls::new(&mut events, header.stopped);
    for step in calls.by_ref() {
        match step {
            Step::Enter {
                addr, tsc, resumed, ..
            } => {
                let f = names.resolve(addr, tsc).map_or(u32::MAX, |f| f.0);
                stack.push((f, addr, tsc, 0, !resumed));
            }
            Step::Leave { end, .. } => {
                let Some((f, addr, start, callees, new_call)) = stack.pop() else {
                    continue;
                };
                let ticks = end.saturating_sub(start);
                let c = if f == u32::MAX {
                    out.unknown.entry(addr).or_default()
                } else {
                    &mut out.by_func[f as usize]
                };
                c.add(ticks, callees, new_call);
                if let Some(parent) = stack.last_mut() {
                    parent.3 += ticks;
                }
            }
        }
    }
    out.damage = events.damage().map(str::to_string);
    out
}

/// Folds one thread through the filters.
fn fold_filtered(
    file: &ThreadFile,
    names: &Names,
    filters: &Filters,
    m: &Matches,
) -> ThreadCounters {
    let (mut out, header, mut events) = match open_thread(file, names) {
        Ok(x) => x,
        Err(out) => return out,
    };
    let visible = Visible::new(Calls::new(&mut events, header.stopped), names, m, filters);
    // Per open shown call: time of its callees, whether a new call.
    let mut callees: Vec<(u64, bool)> = Vec::new();
    for item in Threshold::new(visible, filters.min_ticks) {
        match item {
            Shown::Enter { resumed, .. } => callees.push((0, !resumed)),
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
                let (inner, new_call) = if matches!(item, Shown::Leave { .. }) {
                    callees.pop().unwrap_or((0, true))
                } else {
                    (0, true)
                };
                let ticks = end.saturating_sub(start);
                let c = match func {
                    Some(f) => &mut out.by_func[f.0 as usize],
                    None => out.unknown.entry(addr).or_default(),
                };
                c.add(ticks, inner, new_call);
                if let Some(parent) = callees.last_mut() {
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
}

/// A row's key: the function's name, and the thread when per thread.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowKey {
    /// Process image (pid, or `PID~N`) and thread, when per thread.
    pub thread: Option<(String, u32)>,
    /// The function's name.
    pub name: Arc<str>,
}

/// What a report found.
#[derive(Debug, Default)]
pub struct Report {
    /// Per row.
    pub rows: BTreeMap<RowKey, FunctionStats>,
    /// Threads read up to damage: one line each.
    pub damage: Vec<String>,
    /// Modules that could not be named.
    pub diagnostics: Vec<String>,
}

/// Counts every selected thread of `trace` (in parallel); `names` has one
/// entry per image.
pub fn report(trace: &TraceDir, names: &[Names], opts: &Options) -> Report {
    let matches: Vec<Matches> = names
        .iter()
        .map(|n| Matches::new(&opts.filters, n))
        .collect();
    let plain = opts.filters.include.is_empty()
        && opts.filters.exclude.is_empty()
        && opts.filters.depth.is_none()
        && opts.filters.min_ticks == 0
        && opts.filters.range.is_none();
    let jobs: Vec<(usize, &ThreadFile)> = trace
        .images
        .iter()
        .enumerate()
        .flat_map(|(i, img)| img.threads.iter().map(move |t| (i, t)))
        .filter(|(_, t)| opts.tids.is_empty() || opts.tids.contains(&t.tid))
        .collect();
    let folded: Vec<(usize, u32, ThreadCounters)> = jobs
        .par_iter()
        .map(|&(i, t)| {
            let c = if plain {
                fold_plain(t, &names[i])
            } else {
                fold_filtered(t, &names[i], &opts.filters, &matches[i])
            };
            (i, t.tid, c)
        })
        .collect();
    let mut out = Report::default();
    for n in names {
        out.diagnostics.extend(n.diagnostics().iter().cloned());
    }
    for (i, tid, c) in folded {
        let image = &trace.images[i];
        let hz = image.tsc_hz().max(1) as f64;
        let thread = opts.per_thread.then(|| (image.key.clone(), tid));
        let mut add = |name: Arc<str>, counters: &Counters| {
            if counters.calls == 0 {
                return;
            }
            let stats = FunctionStats::from(counters, hz);
            out.rows
                .entry(RowKey {
                    thread: thread.clone(),
                    name,
                })
                .and_modify(|s| s.merge(&stats))
                .or_insert(stats);
        };
        for (f, counters) in c.by_func.iter().enumerate() {
            add(names[i].functions()[f].name.clone(), counters);
        }
        for (addr, counters) in &c.unknown {
            add(format!("{:#x}", addr.saturating_sub(5)).into(), counters);
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
    let (v, unit) = crate::replay::scaled(ns);
    format!("{v:.3} {unit}")
}

/// The report as text: one line per row, sorted.
pub fn render(r: &Report, key: SortKey) -> String {
    let mut rows: Vec<(&RowKey, &FunctionStats)> = r.rows.iter().collect();
    rows.sort_by(|a, b| key.order(a.1, b.1).then_with(|| a.0.cmp(b.0)));
    let per_thread = rows.iter().any(|(k, _)| k.thread.is_some());
    let mut out = String::new();
    let _ = write!(
        out,
        "{:>12}  {:>12}  {:>10}  {:>12}  {:>12}  {:>12}  ",
        "TOTAL TIME", "SELF TIME", "CALLS", "AVERAGE", "MIN", "MAX"
    );
    if per_thread {
        out.push_str("PROCESS   THREAD  ");
    }
    out.push_str("FUNCTION\n");
    for (k, s) in rows {
        let _ = write!(
            out,
            "{:>12}  {:>12}  {:>10}  {:>12}  {:>12}  {:>12}  ",
            human(s.total_ns),
            human(s.self_ns),
            s.calls,
            human(s.avg_ns()),
            human(s.min_ns),
            human(s.max_ns)
        );
        if let Some((key, tid)) = &k.thread {
            let _ = write!(out, "{key:>7}  {tid:>7}  ");
        }
        let _ = writeln!(out, "{}", k.name);
    }
    for d in &r.diagnostics {
        let _ = writeln!(out, "# {d}");
    }
    for d in &r.damage {
        let _ = writeln!(out, "# read up to damage: {d}");
    }
    out
}

/// Two runs side by side, per function: calls, total and self time of
/// each, and the change (`--diff`).
pub fn render_diff(base: &Report, other: &Report, key: SortKey) -> String {
    let mut names: Vec<&RowKey> = base.rows.keys().chain(other.rows.keys()).collect();
    names.sort();
    names.dedup();
    let zero = FunctionStats {
        calls: 0,
        total_ns: 0.0,
        self_ns: 0.0,
        min_ns: 0.0,
        max_ns: 0.0,
    };
    let mut rows: Vec<(&RowKey, &FunctionStats, &FunctionStats)> = names
        .into_iter()
        .map(|k| {
            (
                k,
                base.rows.get(k).unwrap_or(&zero),
                other.rows.get(k).unwrap_or(&zero),
            )
        })
        .collect();
    // Sorted by the change in the key's figure, largest first.
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
        "{:>10} {:>10} {:>8}  {:>12} {:>12} {:>8}  {:>12} {:>12} {:>8}  FUNCTION\n",
        "CALLS", "CALLS'", "CHANGE", "TOTAL", "TOTAL'", "CHANGE", "SELF", "SELF'", "CHANGE"
    );
    let pct = |a: f64, b: f64| -> String {
        if a == 0.0 {
            if b == 0.0 {
                "0%".into()
            } else {
                "new".into()
            }
        } else {
            format!("{:+.1}%", (b - a) * 100.0 / a)
        }
    };
    for (k, a, b) in rows {
        let _ = writeln!(
            out,
            "{:>10} {:>10} {:>8}  {:>12} {:>12} {:>8}  {:>12} {:>12} {:>8}  {}",
            a.calls,
            b.calls,
            pct(a.calls as f64, b.calls as f64),
            human(a.total_ns),
            human(b.total_ns),
            pct(a.total_ns, b.total_ns),
            human(a.self_ns),
            human(b.self_ns),
            pct(a.self_ns, b.self_ns),
            k.name
        );
    }
    out
}

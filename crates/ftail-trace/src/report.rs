//! `ftail report`: per function, how often it was called and how long it
//! ran (total, including callees, and self), over every thread of every
//! process — like `uftrace report`.

use std::collections::HashMap;
use std::fmt::Write as _;

use ftail_abi::trace::EventKind;

use crate::trace::{Symbols, Trace};

/// One function's totals.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FunctionStats {
    /// Recorded calls (entries).
    pub calls: u64,
    /// Time from entry to exit, summed, in nanoseconds (a recursive
    /// function's inner calls count again, as in uftrace); for a function
    /// switched out on a coroutine's stack, the slices it ran.
    pub total_ns: f64,
    /// Total minus the time of its traced callees.
    pub self_ns: f64,
}

/// Totals per function name.
pub fn stats(trace: &Trace) -> HashMap<String, FunctionStats> {
    let mut out: HashMap<String, FunctionStats> = HashMap::new();
    for p in &trace.processes {
        let syms = Symbols::load(p);
        let ns_per_tick = 1e9 / p.tsc_hz().max(1) as f64;
        for t in &p.threads {
            // (name, entry time, time spent in callees)
            let mut stack: Vec<(String, u64, u64)> = Vec::new();
            for e in &t.events {
                match e.kind() {
                    Some(EventKind::Entry) => {
                        let name = syms.name(e.addr());
                        out.entry(name.clone()).or_default().calls += 1;
                        stack.push((name, e.tsc, 0));
                    }
                    // A suspended function's time is the sum of the slices
                    // it ran (Entry or Resumed to its next close): the
                    // time its stack was switched out is not its own.
                    Some(EventKind::Resumed) => {
                        stack.push((syms.name(e.addr()), e.tsc, 0));
                    }
                    Some(_) => {
                        let Some((name, start, callees)) = stack.pop() else {
                            continue;
                        };
                        let ticks = e.tsc.saturating_sub(start);
                        let s = out.entry(name).or_default();
                        s.total_ns += ticks as f64 * ns_per_tick;
                        s.self_ns += ticks.saturating_sub(callees) as f64 * ns_per_tick;
                        if let Some(parent) = stack.last_mut() {
                            parent.2 += ticks;
                        }
                    }
                    None => {}
                }
            }
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
    /// Function name.
    Name,
}

/// The report as text: one line per function.
pub fn render(trace: &Trace, key: SortKey) -> String {
    let stats = stats(trace);
    let mut rows: Vec<(&String, &FunctionStats)> = stats.iter().collect();
    rows.sort_by(|a, b| {
        let by = match key {
            SortKey::Total => b.1.total_ns.total_cmp(&a.1.total_ns),
            SortKey::SelfTime => b.1.self_ns.total_cmp(&a.1.self_ns),
            SortKey::Calls => b.1.calls.cmp(&a.1.calls),
            SortKey::Name => a.0.cmp(b.0),
        };
        by.then_with(|| a.0.cmp(b.0))
    });
    let mut out = format!(
        "{:>12}  {:>12}  {:>10}  FUNCTION\n",
        "TOTAL TIME", "SELF TIME", "CALLS"
    );
    for (name, s) in rows {
        let _ = writeln!(
            out,
            "{:>12}  {:>12}  {:>10}  {name}",
            human(s.total_ns),
            human(s.self_ns),
            s.calls
        );
    }
    out
}

/// Nanoseconds with a unit, like uftrace.
fn human(ns: f64) -> String {
    let (v, unit) = crate::replay::scaled(ns);
    format!("{v:.3} {unit}")
}

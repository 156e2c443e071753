//! `ftail replay`: the call graph as text, in the style of uftrace and
//! ftrace's function_graph: one line per call, durations on the closing
//! line (or on the line of a call without traced callees).
//!
//! A function alive on a stack the thread switched away from (a
//! coroutine) shows as slices: `} /* f (switched out) */` ends one,
//! `f() { /* resumed */` opens the next where the stack ran again; each
//! slice's duration is its own.

use std::fmt::Write as _;

use ftail_abi::trace::EventKind;

use crate::trace::{Process, Symbols, Trace};

/// Renders every process and thread of `trace`.
pub fn render(trace: &Trace) -> String {
    let mut out = String::from("# DURATION     TID     FUNCTION\n");
    for p in &trace.processes {
        render_process(&mut out, p);
    }
    out
}

fn render_process(out: &mut String, p: &Process) {
    let syms = Symbols::load(p);
    let hz = p.tsc_hz() as f64;
    for t in &p.threads {
        let mut stack: Vec<(String, u64)> = Vec::new();
        let ev = &t.events;
        let mut i = 0;
        while i < ev.len() {
            let e = ev[i];
            let indent = "  ".repeat(stack.len());
            match e.kind() {
                Some(EventKind::Entry) => {
                    let name = syms.name(e.addr());
                    // A call whose next event is its own return: one line.
                    if let Some(next) = ev.get(i + 1) {
                        if next.kind() == Some(EventKind::Exit) {
                            let d = duration(next.tsc - e.tsc, hz);
                            let _ = writeln!(out, "{d} [{:>6}] | {indent}{name}();", t.tid);
                            i += 2;
                            continue;
                        }
                    }
                    let _ = writeln!(out, "{:>10} [{:>6}] | {indent}{name}() {{", "", t.tid);
                    stack.push((name, e.tsc));
                }
                // A function that was switched out runs again: a new slice
                // of it, where execution is now.
                Some(EventKind::Resumed) => {
                    let name = syms.name(e.addr());
                    let _ = writeln!(
                        out,
                        "{:>10} [{:>6}] | {indent}{name}() {{ /* resumed */",
                        "", t.tid
                    );
                    stack.push((name, e.tsc));
                }
                Some(kind) => {
                    let Some((name, start)) = stack.pop() else {
                        i += 1;
                        continue;
                    };
                    let indent = "  ".repeat(stack.len());
                    let how = match kind {
                        EventKind::TailExit => " (tail call)",
                        EventKind::Unwound => " (unwound)",
                        EventKind::Truncated => " (buffer full: exit not recorded)",
                        EventKind::Suspended => " (switched out)",
                        _ => "",
                    };
                    let d = duration(e.tsc.saturating_sub(start), hz);
                    let _ = writeln!(out, "{d} [{:>6}] | {indent}}} /* {name}{how} */", t.tid);
                }
                None => {}
            }
            i += 1;
        }
        if t.lost > 0 {
            let _ = writeln!(out, "# thread {}: {} events lost", t.tid, t.lost);
        }
        if let Some(d) = &t.damage {
            let _ = writeln!(out, "# thread {}: read up to damage: {d}", t.tid);
        }
    }
}

/// A duration formatted like uftrace: value and unit in 10 columns.
fn duration(ticks: u64, hz: f64) -> String {
    let (v, unit) = scaled(ticks as f64 * 1e9 / hz);
    format!("{v:7.3} {unit}")
}

/// Nanoseconds as a value and the unit uftrace would show it in.
pub(crate) fn scaled(ns: f64) -> (f64, &'static str) {
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

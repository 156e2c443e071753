//! The per-thread view (`report --task`, `graph --task`): per thread of
//! each process image, the time inside its shown calls and how many there
//! were, as uftrace's `--task` views show them.

use std::fmt::Write as _;

use rayon::prelude::*;

use crate::reader::calls::Calls;
use crate::reader::dir::{Image, ThreadFile, TraceDir};
use crate::reader::events::Events;
use crate::symbols::names::Names;
use crate::views::view::{Filters, Matches, Shown, Visible};

/// One thread's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// Its process image (pid, or `PID~N`).
    pub image: String,
    /// Its process id.
    pub pid: u32,
    /// The process's parent, as recorded.
    pub ppid: Option<u32>,
    /// Thread id.
    pub tid: u32,
    /// Thread name.
    pub name: String,
    /// Time inside its outermost shown calls.
    pub total_ns: f64,
    /// Time inside shown calls less their shown callees' (equal to
    /// `total_ns` unless calls hidden in between lose their time).
    pub self_ns: f64,
    /// Shown calls.
    pub calls: u64,
    /// From its first shown call's entry to its last one's exit.
    pub lifetime_ns: f64,
}

/// The figures of each selected thread of `trace` (`tids` empty: all),
/// through `filters`, read in parallel.
pub fn tasks(trace: &TraceDir, names: &[Names], filters: &Filters, tids: &[u32]) -> Vec<Task> {
    let jobs: Vec<(usize, &ThreadFile)> = trace
        .images
        .iter()
        .enumerate()
        .flat_map(|(i, img)| img.threads.iter().map(move |t| (i, t)))
        .filter(|(_, t)| tids.is_empty() || tids.contains(&t.tid))
        .collect();
    let matches: Vec<Matches> = names.iter().map(|n| Matches::new(filters, n)).collect();
    jobs.par_iter()
        .map(|&(i, t)| fold(&trace.images[i], t, &names[i], &matches[i], filters))
        .collect()
}

/// Streams one thread: memory is its call depth.
fn fold(image: &Image, t: &ThreadFile, names: &Names, m: &Matches, filters: &Filters) -> Task {
    let hz = image.tsc_hz().max(1) as f64;
    let mut task = Task {
        image: image.key.clone(),
        pid: image.pid,
        ppid: image.info.get("ppid").and_then(|p| p.parse().ok()),
        tid: t.tid,
        name: t.name().to_string(),
        total_ns: 0.0,
        self_ns: 0.0,
        calls: 0,
        lifetime_ns: 0.0,
    };
    let Ok((header, events)) = Events::open(&t.path) else {
        return task;
    };
    let visible = Visible::new(Calls::new(events, header.stopped), names, m, filters);
    // Per open shown call: the time of its shown callees, its start,
    // whether a new call (not a resumed slice).
    let mut open: Vec<(u64, u64, bool)> = Vec::new();
    let (mut total, mut own, mut first, mut last) = (0u64, 0u64, u64::MAX, 0u64);
    let mut count = |start: u64, new_call: bool| {
        first = first.min(start);
        task.calls += u64::from(new_call);
    };
    // `-t` is decided at each exit: no call waits.
    for item in visible {
        match item {
            Shown::Enter { tsc, resumed, .. } => open.push((0, tsc, !resumed)),
            Shown::Leave { start, end, .. } => {
                let Some((callees, _, new_call)) = open.pop() else {
                    continue;
                };
                if !filters.long_enough(start, end) {
                    continue;
                }
                count(start, new_call);
                let ticks = end.saturating_sub(start);
                own += ticks.saturating_sub(callees);
                match open.last_mut() {
                    Some(parent) => parent.0 += ticks,
                    None => total += ticks,
                }
                last = last.max(end);
            }
            // Never produced here (no leaf folding).
            Shown::Leaf { .. } => {}
        }
    }
    // Calls that never ended are long enough.
    for (_, start, new_call) in open {
        count(start, new_call);
    }
    let first = (first != u64::MAX).then_some(first);
    let ns = |ticks: u64| ticks as f64 * 1e9 / hz;
    task.total_ns = ns(total);
    task.self_ns = ns(own);
    task.lifetime_ns = ns(last.saturating_sub(first.unwrap_or(last)));
    task
}

/// `report --task`: one row per thread, most time first, in uftrace's
/// columns.
pub fn render_report(tasks: &[Task]) -> String {
    let mut rows: Vec<&Task> = tasks.iter().collect();
    rows.sort_by(|a, b| {
        b.total_ns
            .total_cmp(&a.total_ns)
            .then_with(|| (&a.image, a.tid).cmp(&(&b.image, b.tid)))
    });
    let mut out = format!(
        "{:>12}  {:>12}  {:>10}  {:>7}  {:>7}  TASK NAME\n",
        "TOTAL TIME", "SELF TIME", "NUM FUNCS", "PROCESS", "TID"
    );
    for t in rows {
        let _ = writeln!(
            out,
            "{:>12}  {:>12}  {:>10}  {:>7}  {:>7}  {}",
            crate::views::replay::format_ns(t.total_ns).trim_start(),
            crate::views::replay::format_ns(t.self_ns).trim_start(),
            t.calls,
            t.image,
            t.tid,
            t.name
        );
    }
    out
}

/// `graph --task`: the tree of processes, each child process under its
/// parent, each thread under its process, with each thread's lifetime
/// (first call to last return) and the time inside its calls.
pub fn render_graph(tasks: &[Task]) -> String {
    let mut out = format!(
        "# {:>12}  {:>12}  {:>9}  TASK NAME\n",
        "TOTAL TIME", "SELF TIME", "TID"
    );
    let pids: Vec<u32> = tasks.iter().map(|t| t.pid).collect();
    // Processes whose parent is not in the trace are roots, in order.
    let mut roots: Vec<&str> = Vec::new();
    for t in tasks {
        let orphan = t.ppid.is_none_or(|p| !pids.contains(&p));
        if orphan && !roots.contains(&t.image.as_str()) {
            roots.push(&t.image);
        }
    }
    let mut seen = Vec::new();
    for r in roots {
        process(&mut out, tasks, r, 0, &mut seen);
    }
    out
}

/// One process image's threads (its main thread first), then the
/// processes it started, one level deeper; `seen` guards against a
/// parent loop (pids reused).
fn process<'a>(
    out: &mut String,
    tasks: &'a [Task],
    image: &'a str,
    level: usize,
    seen: &mut Vec<&'a str>,
) {
    if seen.contains(&image) {
        return;
    }
    seen.push(image);
    let mut threads: Vec<&Task> = tasks.iter().filter(|t| t.image == image).collect();
    threads.sort_by_key(|t| (t.tid != t.pid, t.tid));
    for (i, t) in threads.iter().enumerate() {
        // As uftrace draws them: a process ` +----`, a thread ` +-`.
        let indent = match (i, level) {
            (0, 0) => String::new(),
            (0, _) => "      ".repeat(level - 1) + " +----",
            _ => "      ".repeat(level) + " +-",
        };
        let _ = writeln!(
            out,
            "  {:>12}  {:>12}  [{:>7}]  {indent}{}",
            crate::views::replay::format_ns(t.lifetime_ns).trim_start(),
            crate::views::replay::format_ns(t.total_ns).trim_start(),
            t.tid,
            if t.name.is_empty() { "?" } else { &t.name }
        );
    }
    let Some(pid) = threads.first().map(|t| t.pid) else {
        return;
    };
    let mut children: Vec<&str> = Vec::new();
    for t in tasks {
        if t.ppid == Some(pid) && t.pid != pid && !children.contains(&t.image.as_str()) {
            children.push(&t.image);
        }
    }
    for c in children {
        process(out, tasks, c, level + 1, seen);
    }
}

//! `ftail info`: what a trace is — like `uftrace info`: the program and
//! its arguments, when it ran and for how long, how it was recorded (tail
//! strategy, selection, clock rate), its threads (names, events, losses),
//! its modules (build ids, sites), sizes, and everything the runtime
//! skipped or lost and why ([`crate::losses`]). Reads metadata and event
//! headers only, plus each thread's events once to count them.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::printable::printable;

use crate::reader::dir::TraceDir;
use crate::reader::events::Events;

/// The text of `ftail info`.
pub fn render(trace: &TraceDir, trace_view: &crate::trace::Trace) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# trace: {}", printable(&trace.dir.to_string_lossy()));
    let total_bytes: u64 = std::fs::read_dir(&trace.dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.blocks() * 512
        })
        .sum();
    let _ = writeln!(out, "# size on disk: {}", bytes(total_bytes));
    if let Some(b) = &trace.budget {
        let _ = writeln!(
            out,
            "# maximum size: {} (--max-size), {} of it used",
            bytes(b.max_bytes),
            bytes(b.used_bytes)
        );
    }
    for image in &trace.images {
        let i = &image.info;
        // Every recorded string is printable before it is shown.
        let get = |k: &str| i.get(k).map_or(Cow::Borrowed("-"), |v| printable(v));
        let hz = image.tsc_hz().max(1) as f64;
        let _ = writeln!(out);
        let _ = writeln!(out, "process {} ({})", image.key, get("exe"));
        let _ = writeln!(out, "  command line     : {}", image.command_line());
        let _ = writeln!(out, "  parent pid       : {}", get("ppid"));
        if let Some(ns) = i
            .get("start_realtime_ns")
            .and_then(|v| v.parse::<u64>().ok())
        {
            let _ = writeln!(
                out,
                "  started          : {} (unix time, s)",
                ns as f64 / 1e9
            );
        }
        let _ = writeln!(
            out,
            "  recorded with    : tail={} filter={} exclude={} depth={} tracing={} control_agent={}",
            get("tail"),
            get("filter"),
            get("exclude"),
            match &*get("depth") {
                "0" => "unlimited",
                d => d,
            },
            get("tracing"),
            get("control_agent")
        );
        let per_thread = match &*get("buffer_events") {
            "unlimited" => "no limit per thread".to_string(),
            n => format!("at most {n} events per thread"),
        };
        let max = match i.get("max_size").map(|v| v.parse::<u64>()) {
            Some(Ok(n)) => format!("up to {} for the whole trace", crate::losses::size(n)),
            _ => "no limit for the whole trace".to_string(),
        };
        match i.get("ring").and_then(|v| v.parse::<u64>().ok()) {
            Some(ring) if ring > 0 => {
                let _ = writeln!(
                    out,
                    "  buffers          : a ring of {} per thread (flight recorder{}); {} \
                     trace-stack entries",
                    bytes(ring),
                    match &*get("snapshot_signal") {
                        "0" | "-" => String::new(),
                        n => format!(", snapshots on signal {n}"),
                    },
                    get("stack_entries")
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "  buffers          : grow {max}, {per_thread}; {} trace-stack entries",
                    get("stack_entries")
                );
            }
        }
        let _ = writeln!(
            out,
            "  clock            : {:.3} MHz time-stamp counter",
            hz / 1e6
        );
        let _ = writeln!(
            out,
            "  patched          : {} functions, {} sites ({} converted tail calls), {} sites skipped",
            get("patched_functions"),
            get("patched_sites"),
            get("converted_tails"),
            get("skipped_sites")
        );
        let (mut first, mut last, mut all, mut bytes_all) = (u64::MAX, 0u64, 0u64, 0u64);
        let _ = writeln!(out, "  threads          : {}", image.threads.len());
        for t in &image.threads {
            let (count, lost, range, damage) = match Events::open(&t.path) {
                Ok((h, mut events)) => {
                    let (mut n, mut lo, mut hi) = (0u64, u64::MAX, 0u64);
                    for e in events.by_ref() {
                        if e.kind() == Some(ftail_abi::trace::EventKind::Earlier) {
                            continue;
                        }
                        n += 1;
                        lo = lo.min(e.tsc);
                        hi = hi.max(e.tsc);
                    }
                    let note = match events.damage() {
                        Some(d) => format!("  (damaged: {d})"),
                        None if h.ring > 0 && h.laps > 0 => {
                            format!("  (the latest: the ring went round {} times)", h.laps)
                        }
                        None => String::new(),
                    };
                    bytes_all += events.consumed();
                    (n, h.lost, (lo, hi), note)
                }
                Err(e) => (0, 0, (u64::MAX, 0), format!("  (damaged: {e})")),
            };
            all += count;
            first = first.min(range.0);
            last = last.max(range.1);
            let name = t.name();
            let _ = writeln!(
                out,
                "    {:>8} {:<16} {:>12} events  {:>10} lost{}",
                t.tid,
                if name.is_empty() { "-" } else { name },
                count,
                lost,
                damage
            );
        }
        if first <= last {
            let _ = writeln!(
                out,
                "  duration         : {} ({} events, {} of them: {:.2} bytes each)",
                crate::replay::format_ns((last - first) as f64 * 1e9 / hz).trim(),
                all,
                bytes(bytes_all),
                bytes_all as f64 / all.max(1) as f64
            );
        }
        let _ = writeln!(out, "  modules          : {}", image.modules.len());
        for m in &image.modules {
            let _ = writeln!(
                out,
                "    {:#014x} {} sites={} skipped={} {}{}",
                m.base,
                m.build_id.as_deref().unwrap_or("(no build id)"),
                m.sites.0,
                m.sites.1,
                printable(&m.path.to_string_lossy()),
                if m.unloaded.is_some() {
                    " (unloaded)"
                } else {
                    ""
                }
            );
        }
    }
    let notes = crate::losses::notes(trace_view);
    if !notes.is_empty() {
        let _ = writeln!(out, "\nnot recorded:");
        for n in notes {
            let _ = writeln!(out, "  {n}");
        }
    }
    out
}

fn bytes(n: u64) -> String {
    let (v, unit) = if n >= 1 << 30 {
        (n as f64 / (1u64 << 30) as f64, "GiB")
    } else if n >= 1 << 20 {
        (n as f64 / (1u64 << 20) as f64, "MiB")
    } else if n >= 1 << 10 {
        (n as f64 / 1024.0, "KiB")
    } else {
        return format!("{n} B");
    };
    format!("{v:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::bytes;

    #[test]
    fn sizes_read_as_whole_bytes_or_one_decimal_of_a_unit() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(228), "228 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(bytes(30 << 30 | 200 << 20), "30.2 GiB");
    }
}

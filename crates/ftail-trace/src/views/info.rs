//! `ftail info`: what a trace is — like `uftrace info`: the program and
//! its arguments, when it ran and for how long, how it was recorded (tail
//! strategy, selection, clock rate), its threads (names, events, losses),
//! its modules (build ids, sites), sizes, and everything the runtime
//! skipped or lost and why ([`crate::views::losses`]). Reads metadata, event
//! headers and file sizes, and at most [`SAMPLE_BYTES`] of each thread's
//! events: a thread with more has its events estimated from its size
//! (`~`), and the duration is left out unless every event is counted
//! ([`render`]'s `count_events`, `ftail info --events`).

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::untrusted::printable::printable;

use crate::reader::dir::{ThreadFile, TraceDir};
use crate::reader::events::{written_bytes, Events};

/// Bytes of a thread's events that `info` reads to count them; past
/// that, the count is estimated from the bytes per event so far.
pub const SAMPLE_BYTES: u64 = 1 << 20;

/// What `info` says of a thread's events.
struct ThreadEvents {
    count: u64,
    /// `count` is exact, and `first..=last` the times of all events.
    exact: bool,
    first: u64,
    last: u64,
    bytes: u64,
    /// For a drained ring (`--drain`): the bytes its two files take.
    drained: Option<u64>,
    lost: u64,
    note: String,
}

impl ThreadEvents {
    /// Counts `t`'s events, all of them or up to [`SAMPLE_BYTES`].
    fn read(t: &ThreadFile, all: bool) -> ThreadEvents {
        let mut out = ThreadEvents {
            count: 0,
            exact: true,
            first: u64::MAX,
            last: 0,
            bytes: 0,
            drained: None,
            lost: 0,
            note: String::new(),
        };
        let laps_note = |laps: u64| format!("  (the latest: the ring went round {laps} times)");
        match &t.header {
            Ok(h) if !all && h.ring > 0 && h.laps > 0 => {
                // Finding a full ring's oldest event reads it all; its
                // events are 16 bytes each.
                out.bytes = h.ring;
                out.count = h.ring / 16;
                out.exact = false;
                out.lost = h.lost;
                out.note = laps_note(h.laps);
                return out;
            }
            _ => {}
        }
        let (header, mut events) = match Events::open(&t.path) {
            Ok(x) => x,
            Err(e) => {
                out.note = format!("  (damaged: {e})");
                return out;
            }
        };
        out.lost = header.lost;
        if header.drain != 0 {
            let len = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
            out.drained = Some(len(&t.path) + len(&crate::reader::drained::drained_path(&t.path)));
        }
        while let Some(e) = events.next() {
            if e.kind() == Some(ftail_abi::trace::EventKind::Earlier) {
                continue;
            }
            out.count += 1;
            out.first = out.first.min(e.tsc);
            out.last = out.last.max(e.tsc);
            if !all && events.consumed() >= SAMPLE_BYTES {
                out.exact = false;
                break;
            }
        }
        out.bytes = events.consumed();
        if !out.exact {
            if let Ok(size) = written_bytes(&t.path, &header) {
                let per_event = out.bytes as f64 / out.count.max(1) as f64;
                out.count = out.count.max((size as f64 / per_event) as u64);
                out.bytes = out.bytes.max(size);
            }
        }
        out.note = match events.damage() {
            Some(d) => format!("  (damaged: {d})"),
            None if header.ring > 0 && header.laps > 0 => laps_note(header.laps),
            None => String::new(),
        };
        out
    }
}

/// The text of `ftail info`; `count_events` reads every event, for exact
/// counts and the duration of each process.
pub fn render(trace: &TraceDir, trace_view: &crate::trace::Trace, count_events: bool) -> String {
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
    sched_lines(&mut out, &crate::reader::sched::Sched::load(&trace.dir));
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
                "  started          : {} (unix time {:.3} s)",
                utc_time(ns / 1_000_000_000),
                ns as f64 / 1e9
            );
        }
        let _ = writeln!(out, "  ended            : {}", ending(trace, image));
        let used = image.status.as_ref().and_then(resources);
        let _ = writeln!(
            out,
            "  resources        : {}",
            used.as_deref()
                .unwrap_or("not recorded (the runtime notes them at exit)")
        );
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
            Some(Ok(n)) => format!(
                "up to {} for the whole trace",
                crate::views::losses::size(n)
            ),
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
            _ => match i.get("drain").and_then(|v| v.parse::<u64>().ok()) {
                Some(ring) if ring > 0 => {
                    let _ = writeln!(
                        out,
                        "  buffers          : a drained ring of {} per thread, every event \
                         kept {max}; {} trace-stack entries",
                        bytes(ring),
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
            },
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
        let mut drained: Option<(u64, u64)> = None;
        let mut exact = true;
        let _ = writeln!(out, "  threads          : {}", image.threads.len());
        for t in &image.threads {
            let e = ThreadEvents::read(t, count_events);
            all += e.count;
            bytes_all += e.bytes;
            if let Some(d) = e.drained {
                let (b, n) = drained.unwrap_or_default();
                drained = Some((b + d, n + e.count));
            }
            exact &= e.exact;
            first = first.min(e.first);
            last = last.max(e.last);
            let name = t.name();
            let count = if e.exact {
                e.count.to_string()
            } else {
                format!("~{}", e.count)
            };
            let _ = writeln!(
                out,
                "    {:>8} {:<16} {:>12} events  {:>10} lost{}",
                t.tid,
                if name.is_empty() { "-" } else { name },
                count,
                e.lost,
                e.note
            );
        }
        if !exact {
            let _ = writeln!(
                out,
                "  events           : ~{all} ({}: ~{:.2} bytes each), estimated from the \
                 files' sizes; --events counts them all and gives the duration",
                bytes(bytes_all),
                bytes_all as f64 / all.max(1) as f64,
            );
        } else if first <= last {
            let _ = writeln!(
                out,
                "  duration         : {} ({} events, {} of them: {:.2} bytes each)",
                crate::views::replay::format_ns((last - first) as f64 * 1e9 / hz).trim(),
                all,
                bytes(bytes_all),
                bytes_all as f64 / all.max(1) as f64
            );
        }
        if let Some((b, n)) = drained {
            let _ = writeln!(
                out,
                "  drained          : {} on disk for {}{n} events of drained rings: {:.2} bytes each",
                bytes(b),
                if exact { "" } else { "~" },
                b as f64 / n.max(1) as f64
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
        library_functions(&mut out, &image.modules);
    }
    let notes = crate::views::losses::notes(trace_view);
    if !notes.is_empty() {
        let _ = writeln!(out, "\nnot recorded:");
        for n in notes {
            let _ = writeln!(out, "  {n}");
        }
    }
    out
}

/// The library functions the image's modules call, each with the module
/// that defines it, by name.
fn library_functions(out: &mut String, modules: &[crate::reader::dir::Module]) {
    let mut functions = std::collections::BTreeSet::new();
    for m in modules {
        for (entry, name) in &crate::symbols::library_calls(m) {
            let definer = m.libcall_modules.get(entry).map_or_else(
                || Cow::Borrowed("(module not recorded)"),
                |p| printable(&p.to_string_lossy()).into_owned().into(),
            );
            functions.insert((
                printable(&crate::trace::demangle(name)).into_owned(),
                definer,
            ));
        }
    }
    if functions.is_empty() {
        return;
    }
    let _ = writeln!(out, "  library functions: {}", functions.len());
    let width = functions.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (name, definer) in functions {
        let _ = writeln!(out, "    {name:<width$}  {definer}");
    }
}

/// What the trace holds of its threads' times off the CPU, and why not
/// where it does not.
fn sched_lines(out: &mut String, sched: &crate::reader::sched::Sched) {
    if sched.recorded {
        let _ = writeln!(
            out,
            "# scheduler events: {} times off the CPU, of {} thread{}",
            sched.slices(),
            sched.threads(),
            if sched.threads() == 1 { "" } else { "s" }
        );
    } else if sched.notes.is_empty() {
        let _ = writeln!(out, "# scheduler events: none (recorded with --no-sched)");
    }
    for n in &sched.notes {
        let _ = writeln!(out, "# {}", printable(n));
    }
}

/// How `image` ended: its exit status or signal where it was recorded.
fn ending(trace: &TraceDir, image: &crate::reader::dir::Image) -> String {
    use ftail_abi::trace::EXIT_RECORDED;
    let exit = image.status.as_ref().map_or(0, |s| s.exit);
    if exit & EXIT_RECORDED == 0 {
        // Images of a process are listed in exec order.
        let next = trace
            .images
            .iter()
            .skip_while(|i| i.key != image.key)
            .nth(1)
            .filter(|i| i.pid == image.pid);
        return match next {
            Some(n) => format!("replaced by exec (process image {})", n.key),
            None => "exit status unknown".to_string(),
        };
    }
    let status = exit as u32;
    let signal = status & 0x7f;
    if signal == 0 {
        return format!("exited with status {}", (status >> 8) & 0xff);
    }
    format!(
        "killed by signal {signal}{}{}",
        signal_name(signal).map_or(String::new(), |n| format!(" ({n})")),
        if status & 0x80 != 0 {
            ", core dumped"
        } else {
            ""
        }
    )
}

/// CPU time and largest resident set, where the runtime noted them at
/// exit.
fn resources(s: &ftail_abi::trace::ProcessStatus) -> Option<String> {
    if s.max_rss_kib == 0 && s.cpu_user_us == 0 && s.cpu_system_us == 0 {
        return None;
    }
    Some(format!(
        "{:.3} s CPU in user mode, {:.3} s in the kernel; at most {} resident",
        s.cpu_user_us as f64 / 1e6,
        s.cpu_system_us as f64 / 1e6,
        bytes(s.max_rss_kib.saturating_mul(1024))
    ))
}

fn signal_name(signal: u32) -> Option<&'static str> {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    NAMES.get(signal.checked_sub(1)? as usize).copied()
}

/// `secs` since the epoch as a UTC date and time: `2026-12-07 08:26:31
/// UTC` (days to a civil date as in Howard Hinnant's `civil_from_days`).
fn utc_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3_600,
        rem / 60 % 60,
        rem % 60
    )
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
    use super::{bytes, utc_time};

    #[test]
    fn start_times_read_as_utc_dates() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_time(1_796_631_649), "2026-12-07 08:20:49 UTC");
    }

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

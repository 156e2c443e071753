//! What a trace is missing, and why, in sentences: threads that recorded
//! nothing or stopped early, events lost, modules and sites left
//! untraced, a control agent that could not listen. `ftail record` prints
//! these when the program has ended, so that a partial trace never looks
//! whole.

use ftail_abi::trace::{
    AGENT_BIND_FAILED, AGENT_LOST_SOCKET, STOPPED_ADDRESS_SPACE, STOPPED_BUDGET_LOST,
    STOPPED_BUFFER_FULL, STOPPED_DISK_FULL, STOPPED_FILE_ERROR, STOPPED_MAX_SIZE,
};

use crate::trace::Trace;

/// Threads named one by one; the rest of a kind are added up.
const NAMED: usize = 10;

/// One sentence per thing not recorded (none for a whole trace). Works on
/// a trace read with or without its events (`trace::open_headers`).
pub fn notes(trace: &Trace) -> Vec<String> {
    let mut out = Vec::new();
    // Threads that lost events, by reason, in the order reasons appear.
    let mut by_reason: Vec<(String, Vec<(String, u64)>)> = Vec::new();
    for p in &trace.processes {
        let who = format!("process {}", p.key);
        process_notes(p, &who, &mut out);
        for th in p.threads.iter().filter(|th| th.lost > 0) {
            let place = format!("{who} thread {}", th.tid);
            let why = reason(trace, th.stopped);
            match by_reason.iter_mut().find(|(r, _)| *r == why) {
                Some((_, places)) => places.push((place, th.lost)),
                None => by_reason.push((why, vec![(place, th.lost)])),
            }
        }
    }
    for (why, places) in &by_reason {
        lost_lines(places, why, &mut out);
    }
    out
}

/// Why a thread with `stopped` in its header lost events, as the end of a
/// sentence that starts with "N events lost".
fn reason(trace: &Trace, stopped: u64) -> String {
    match stopped & 0xff {
        STOPPED_DISK_FULL => "events lost: the trace directory's filesystem was full".into(),
        STOPPED_MAX_SIZE => {
            let size = trace.budget.map_or(String::new(), |b| {
                let free = if b.free_bytes > 0 {
                    format!("; {} were free when recording began", size(b.free_bytes))
                } else {
                    String::new()
                };
                format!(" of {} (--max-size{free})", size(b.max_bytes))
            });
            if size.is_empty() {
                "events lost: the trace reached its maximum size (--max-size)".into()
            } else {
                format!("events lost: the trace reached its maximum size{size}")
            }
        }
        STOPPED_ADDRESS_SPACE => "events lost: the process had no address space left for its \
             buffer to grow into (too many threads at once, or a ulimit -v)"
            .into(),
        STOPPED_FILE_ERROR => format!(
            "events lost: its event file could not be made longer ({})",
            std::io::Error::from_raw_os_error((stopped >> 8) as i32)
        ),
        STOPPED_BUDGET_LOST => "events lost: the trace's budget file was truncated or replaced \
             while the program ran, so the trace's size could no longer be counted (--max-size)"
            .into(),
        STOPPED_BUFFER_FULL | 0 => {
            "events lost: its buffer was full (--buffer-events sets its size)".into()
        }
        _ => "events lost: its buffer was full".into(),
    }
}

/// A byte count for people: `512.0 MiB`.
pub fn size(n: u64) -> String {
    let (v, unit) = if n >= 1 << 40 {
        (n as f64 / (1u64 << 40) as f64, "TiB")
    } else if n >= 1 << 30 {
        (n as f64 / (1u64 << 30) as f64, "GiB")
    } else if n >= 1 << 20 {
        (n as f64 / (1u64 << 20) as f64, "MiB")
    } else if n >= 1 << 10 {
        (n as f64 / 1024.0, "KiB")
    } else {
        (n as f64, "B")
    };
    format!("{v:.1} {unit}")
}

fn process_notes(p: &crate::trace::Process, who: &str, out: &mut Vec<String>) {
    if let Some(s) = &p.status {
        if s.threads_failed > 0 {
            let (tid, errno) = (s.first_failure & 0xffff_ffff, s.first_failure >> 32);
            out.push(format!(
                "{who}: {} thread(s) recorded nothing: their event files could not be \
                 created (thread {tid}: {})",
                s.threads_failed,
                std::io::Error::from_raw_os_error(errno as i32)
            ));
        }
        if s.snapshots_refused > 0 {
            out.push(format!(
                "{who}: {} snapshot(s) not taken: the trace reached its maximum size \
                 (--max-size)",
                s.snapshots_refused
            ));
        }
        let errno = |v: u64| std::io::Error::from_raw_os_error((v >> 8) as i32);
        match s.agent & 0xff {
            AGENT_BIND_FAILED => out.push(format!(
                "{who}: no control agent: its socket name is taken by another process ({}); \
                 `ftail ctl` cannot reach this process",
                errno(s.agent)
            )),
            AGENT_LOST_SOCKET => out.push(format!(
                "{who}: the control agent stopped: the program closed its socket and it could \
                 not listen again ({})",
                errno(s.agent)
            )),
            _ => {}
        }
    }
    for (_, why, path) in &p.skipped_modules {
        out.push(format!(
            "{who}: {} left untraced: {}",
            crate::untrusted::printable::printable(&path.to_string_lossy()),
            crate::untrusted::printable::printable(why)
        ));
    }
    let skipped_sites: u64 = p
        .info
        .get("skipped_sites")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + p.status.map_or(0, |s| s.sites_skipped);
    if skipped_sites > 0 {
        out.push(format!(
            "{who}: {skipped_sites} site(s) left alone: they did not hold ftail's nop"
        ));
    }
}

/// One line per place up to [`NAMED`], then one for the rest.
fn lost_lines(places: &[(String, u64)], why: &str, out: &mut Vec<String>) {
    for (place, lost) in places.iter().take(NAMED) {
        out.push(format!("{place}: {lost} {why}"));
    }
    if places.len() > NAMED {
        let rest = &places[NAMED..];
        let lost: u64 = rest.iter().map(|(_, n)| n).sum();
        out.push(format!("{} more threads: {lost} {why}", rest.len()));
    }
}

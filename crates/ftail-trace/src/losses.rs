//! What a trace is missing, and why, in sentences: threads that recorded
//! nothing or stopped early, events lost, modules and sites left
//! untraced, a control agent that could not listen. `ftail record` prints
//! these when the program has ended, so that a partial trace never looks
//! whole.

use ftail_abi::trace::{
    AGENT_BIND_FAILED, AGENT_LOST_SOCKET, STOPPED_BUFFER_FULL, STOPPED_DISK_FULL,
};

use crate::trace::Trace;

/// Threads named one by one; the rest of a kind are added up.
const NAMED: usize = 10;

/// One sentence per thing not recorded (none for a whole trace). Works on
/// a trace read with or without its events (`trace::open_headers`).
pub fn notes(trace: &Trace) -> Vec<String> {
    let mut out = Vec::new();
    let mut full = Vec::new();
    let mut disk = Vec::new();
    for p in &trace.processes {
        let who = format!("process {}", p.key);
        process_notes(p, &who, &mut out);
        for th in p.threads.iter().filter(|th| th.lost > 0) {
            let place = format!("{who} thread {}", th.tid);
            match th.stopped {
                STOPPED_DISK_FULL => disk.push((place, th.lost)),
                STOPPED_BUFFER_FULL | 0 => full.push((place, th.lost)),
                _ => full.push((place, th.lost)),
            }
        }
    }
    lost_lines(
        &full,
        "events lost: its buffer was full (--buffer-events sets its size)",
        &mut out,
    );
    lost_lines(
        &disk,
        "events lost: the trace directory's filesystem was full",
        &mut out,
    );
    out
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
        out.push(format!("{who}: {} left untraced: {why}", path.display()));
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

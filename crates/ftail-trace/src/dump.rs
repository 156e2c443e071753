//! `ftail dump`: the raw events, one line each, thread after thread — for
//! debugging and scripts: time since the trace began (ns), thread, kind,
//! address, and the function an entry names. Streamed.

use std::io::{self, Write};

use ftail_abi::trace::EventKind;

use crate::names::Names;
use crate::reader::dir::TraceDir;
use crate::reader::events::Events;

/// Writes every selected thread's events (`tids` empty: all; `range` in
/// ticks: only events in it).
pub fn dump(
    trace: &TraceDir,
    names: &[Names],
    tids: &[u32],
    range: Option<(u64, u64)>,
    out: &mut impl Write,
) -> io::Result<()> {
    writeln!(out, "# TIME(ns)  PID  TID  KIND  ADDRESS  FUNCTION")?;
    for (image, n) in trace.images.iter().zip(names) {
        let hz = image.tsc_hz().max(1) as f64;
        let origin = image
            .info
            .get("start_tsc")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        for t in image
            .threads
            .iter()
            .filter(|t| tids.is_empty() || tids.contains(&t.tid))
        {
            let (_, mut events) = match Events::open(&t.path) {
                Ok(x) => x,
                Err(e) => {
                    writeln!(out, "# {e}")?;
                    continue;
                }
            };
            for e in events.by_ref() {
                if range.is_some_and(|(from, to)| e.tsc < from || e.tsc > to) {
                    continue;
                }
                let kind = e.kind().unwrap_or(EventKind::Exit);
                let ns = e.tsc.saturating_sub(origin) as f64 * 1e9 / hz;
                let func = if kind.opens() {
                    n.name(e.addr(), e.tsc).to_string()
                } else {
                    String::new()
                };
                writeln!(
                    out,
                    "{ns:.0} {} {} {:?} {:#x} {func}",
                    image.key,
                    t.tid,
                    kind,
                    e.addr()
                )?;
            }
            if let Some(d) = events.damage() {
                writeln!(out, "# read up to damage: {d}")?;
            }
        }
    }
    Ok(())
}

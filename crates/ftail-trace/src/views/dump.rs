//! `ftail dump`: the raw events, one line each, thread after thread — for
//! debugging and scripts: time since the trace began (ns), process image,
//! thread, kind, address, depth, and the function the event's frame
//! belongs to (an exit row names the function it ends, at the depth of
//! its entry). Streamed.
//!
//! With `-F`/`-N`/`-H`/`-C`/`-D`/`-t` the rows are those of the calls `replay`
//! shows with the same filters (a call's entry and its end, at the depth
//! replay shows it), so a script sees what a person sees; the ranges of
//! `--time-range` select events by their time either way.

use std::io::{self, Write};

use ftail_abi::trace::{Event, EventKind};

use crate::reader::calls::Calls;
use crate::reader::dir::{Image, TraceDir};
use crate::reader::events::Events;
use crate::symbols::names::Names;
use crate::views::view::{Filters, Matches, Shown, Threshold, Visible};

/// Writes every selected thread's events (`tids` empty: all), filtered
/// as `filters` say.
pub fn dump(
    trace: &TraceDir,
    names: &[Names],
    tids: &[u32],
    filters: &Filters,
    out: &mut impl Write,
) -> io::Result<()> {
    writeln!(out, "# TIME(ns)  PID  TID  KIND  ADDRESS  DEPTH  FUNCTION")?;
    // The time range selects raw events by their time; anything else
    // selects calls, as replay does.
    let shaped = Filters {
        range: None,
        ..filters.clone()
    }
    .select();
    for (image, n) in trace.images.iter().zip(names) {
        let row = Row::new(image, n);
        let matches = shaped.then(|| Matches::new(filters, n));
        for t in image
            .threads
            .iter()
            .filter(|t| tids.is_empty() || tids.contains(&t.tid))
        {
            let (header, mut events) = match Events::open(&t.path) {
                Ok(x) => x,
                Err(e) => {
                    writeln!(out, "# {e}")?;
                    continue;
                }
            };
            match &matches {
                None => raw(&row, t.tid, filters.range, events.by_ref(), out)?,
                Some(m) => {
                    let feed = events.values();
                    let calls = Calls::new(events.by_ref(), header.stopped).values(feed);
                    let visible = Visible::new(calls, n, m, filters);
                    shown(&row, t.tid, Threshold::new(visible, filters.min_ticks), out)?;
                }
            }
            if let Some(d) = events.damage() {
                writeln!(out, "# read up to damage: {d}")?;
            }
        }
    }
    Ok(())
}

/// Every event, each closing one naming the frame it ends (compact
/// closes do not carry their frame's address: the open frames do).
fn raw(
    row: &Row,
    tid: u32,
    range: Option<(u64, u64)>,
    events: impl Iterator<Item = Event>,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut open: Vec<u64> = Vec::new();
    for e in events {
        let kind = e.kind().unwrap_or(EventKind::Exit);
        let (addr, depth) = if kind.opens() {
            open.push(e.addr());
            (e.addr(), open.len() - 1)
        } else {
            let entry = open.pop().unwrap_or(0);
            (if e.addr() != 0 { e.addr() } else { entry }, open.len())
        };
        if range.is_some_and(|(from, to)| e.tsc < from || e.tsc > to) {
            continue;
        }
        row.write(out, tid, e.tsc, kind, addr, depth as u32)?;
    }
    Ok(())
}

/// The entries and ends of the calls `replay` shows.
fn shown(
    row: &Row,
    tid: u32,
    items: impl Iterator<Item = Shown>,
    out: &mut impl Write,
) -> io::Result<()> {
    let opening = |resumed: bool| {
        if resumed {
            EventKind::Resumed
        } else {
            EventKind::Entry
        }
    };
    for item in items {
        match item {
            Shown::Enter {
                addr,
                tsc,
                depth,
                resumed,
                ..
            } => row.write(out, tid, tsc, opening(resumed), addr, depth)?,
            Shown::Leave {
                addr,
                end,
                depth,
                how,
                ..
            } => row.write(out, tid, end, how, addr, depth)?,
            Shown::Leaf {
                addr,
                start,
                end,
                depth,
                how,
                ..
            } => {
                row.write(out, tid, start, EventKind::Entry, addr, depth)?;
                row.write(out, tid, end, how, addr, depth)?;
            }
        }
    }
    Ok(())
}

/// How one image's rows are written.
struct Row<'a> {
    key: &'a str,
    names: &'a Names,
    origin: u64,
    hz: f64,
}

impl<'a> Row<'a> {
    fn new(image: &'a Image, names: &'a Names) -> Row<'a> {
        Row {
            key: &image.key,
            names,
            origin: image
                .info
                .get("start_tsc")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0),
            hz: image.tsc_hz().max(1) as f64,
        }
    }

    /// One row; `addr` is the entry address of the event's frame.
    fn write(
        &self,
        out: &mut impl Write,
        tid: u32,
        tsc: u64,
        kind: EventKind,
        addr: u64,
        depth: u32,
    ) -> io::Result<()> {
        let ns = tsc.saturating_sub(self.origin) as f64 * 1e9 / self.hz;
        writeln!(
            out,
            "{ns:.0} {} {tid} {kind:?} {addr:#x} {depth} {}",
            self.key,
            self.names.name(addr, tsc)
        )
    }
}

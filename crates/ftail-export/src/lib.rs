//! ftail's exporters: a trace in the formats people look at traces in.
//!
//! One file per format, each fed by `ftail_trace`'s streaming reader:
//!
//! * [`perfetto`]: Perfetto's native protobuf trace (TrackEvent slices),
//!   for ui.perfetto.dev;
//! * [`chrome`]: Chrome's Trace Event JSON (`X` complete events);
//! * [`speedscope`]: speedscope's evented JSON format;
//! * [`folded`]: folded stacks (`flamegraph.pl`, `inferno`), and
//!   [`flame`]: the interactive SVG flame graph drawn from them;
//! * [`parquet`]: one row per call and a functions table, for SQL
//!   engines.
//!
//! Design choice: every export streams. A thread's events are read a
//! block at a time, paired into calls and filtered by the same pipeline as
//! `ftail replay` ([`ftail_trace::view`]), and each call is written out as
//! it ends (or begins). What an exporter keeps is bounded by the call
//! depth, the number of threads and the number of functions (call paths,
//! for flame graphs): never the trace's size. Heavy dependencies
//! (Parquet, the SVG renderer) live here so that `ftail-trace` stays a
//! small reader.
#![deny(missing_docs)]

pub mod chrome;
pub mod flame;
pub mod folded;
pub mod output;
pub mod parquet;
pub mod perfetto;
pub mod progress;
mod proto;
pub mod speedscope;

use std::io;

use ftail_abi::trace::{Event, EventKind};
use ftail_trace::names::{FuncId, Names};
use ftail_trace::reader::calls::Calls;
use ftail_trace::reader::dir::{Image, ThreadFile, TraceDir};
use ftail_trace::reader::events::{Events, Header};
use ftail_trace::view::{Filters, Matches, Shown, Threshold, Visible};

pub use progress::Progress;

/// What to export: a trace, its names, and the selection a user made.
#[derive(Clone, Copy)]
pub struct Input<'a> {
    /// The trace's listing.
    pub trace: &'a TraceDir,
    /// Names, one per image of `trace`.
    pub names: &'a [Names],
    /// The replay filters (-F, -N, -D, -t, --time-range).
    pub filters: &'a Filters,
    /// Only these threads (empty: all).
    pub tids: &'a [u32],
    /// Add each function's source file and line where the format has a
    /// place for them.
    pub srcline: bool,
    /// Counts the events read.
    pub progress: &'a Progress,
}

/// Something an export met and left out or cut short, one line each
/// (unreadable thread files, damage, modules without names).
pub type Notes = Vec<String>;

/// The trace's clock: ticks of the time-stamp counter to nanoseconds
/// since the trace began (the earliest image's start).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Ticks at time 0.
    pub origin: u64,
    /// Ticks per second.
    pub hz: f64,
}

impl Clock {
    /// The clock of `image` in `trace` (images share the origin).
    pub fn new(trace: &TraceDir, image: &Image) -> Clock {
        Clock {
            origin: origin(trace),
            hz: image.tsc_hz().max(1) as f64,
        }
    }

    /// Nanoseconds since the trace began.
    #[inline]
    pub fn ns(&self, tsc: u64) -> f64 {
        tsc.saturating_sub(self.origin) as f64 * 1e9 / self.hz
    }

    /// A duration in nanoseconds.
    #[inline]
    pub fn span(&self, ticks: u64) -> f64 {
        ticks as f64 * 1e9 / self.hz
    }
}

/// The time-stamp counter at the trace's start: the earliest image's.
pub fn origin(trace: &TraceDir) -> u64 {
    trace
        .images
        .iter()
        .filter_map(|i| i.info.get("start_tsc").and_then(|v| v.parse::<u64>().ok()))
        .min()
        .unwrap_or(0)
}

/// Wall-clock time (Unix ns) at the trace's start, when recorded.
pub fn start_realtime_ns(trace: &TraceDir) -> Option<u64> {
    let first = trace.images.iter().min_by_key(|i| {
        i.info
            .get("start_tsc")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    })?;
    first.info.get("start_realtime_ns")?.parse().ok()
}

/// The process image's name as the exports show it: its program and
/// arguments.
pub fn process_name(image: &Image) -> String {
    let args = image.args();
    let program = args
        .first()
        .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
        .unwrap_or_else(|| format!("process {}", image.pid));
    match image.key.split_once('~') {
        Some((_, n)) => format!("{program} (after exec #{n})"),
        None => program,
    }
}

/// A thread's name as the exports show it.
pub fn thread_name(thread: &ThreadFile) -> String {
    match thread.name() {
        "" => format!("thread {}", thread.tid),
        n => n.to_string(),
    }
}

/// A function's name, or the entry site's address when no table names
/// it.
pub fn function_name(names: &Names, func: Option<FuncId>, addr: u64) -> String {
    match func {
        Some(f) => names.function(f).name.to_string(),
        None => format!("{:#x}", addr.saturating_sub(5)),
    }
}

/// How a call ended, in words, for a call that did not simply return.
pub fn exit_note(how: EventKind) -> Option<&'static str> {
    match how {
        EventKind::TailExit => Some("tail call"),
        EventKind::Unwound => Some("unwound"),
        EventKind::Truncated => Some("buffer full"),
        EventKind::Suspended => Some("switched out"),
        _ => None,
    }
}

/// How a call ended, as one word (the Parquet `exit` column).
pub fn exit_word(how: EventKind) -> &'static str {
    match how {
        EventKind::TailExit => "tail",
        EventKind::Unwound => "unwound",
        EventKind::Truncated => "truncated",
        EventKind::Suspended => "suspended",
        _ => "return",
    }
}

/// One selected thread, as an export meets it.
pub struct Thread<'a> {
    /// Index of its image in the trace.
    pub image_index: usize,
    /// Its image.
    pub image: &'a Image,
    /// Its image's names.
    pub names: &'a Names,
    /// Its file.
    pub file: &'a ThreadFile,
    /// Its header.
    pub header: Header,
    /// The clock of its image.
    pub clock: Clock,
}

/// What a thread's stream left behind once read.
#[derive(Debug, Default, Clone)]
pub struct ThreadEnd {
    /// Time of the thread's last event (0: none).
    pub last_tsc: u64,
    /// Where reading stopped at damage, if it did.
    pub damage: Option<String>,
}

/// The selected threads of `input`, image after image (by pid), thread
/// after thread (by tid).
pub fn selected<'a>(input: &Input<'a>) -> Vec<(usize, &'a ThreadFile)> {
    input
        .trace
        .images
        .iter()
        .enumerate()
        .flat_map(|(i, img)| img.threads.iter().map(move |t| (i, t)))
        .filter(|(_, t)| input.tids.is_empty() || input.tids.contains(&t.tid))
        .collect()
}

/// Streams one thread through the filters: calls `f` with the thread and
/// its shown items (entries and exits, never merged into leaves), in
/// time order. Returns what the stream left behind, or `None` (with a
/// note) when the thread's file cannot be read.
///
/// # Errors
///
/// Only `f`'s.
pub fn stream_thread<E>(
    input: &Input,
    image_index: usize,
    matches: &Matches,
    file: &ThreadFile,
    notes: &mut Notes,
    f: impl FnOnce(&Thread, &mut dyn Iterator<Item = Shown>) -> Result<(), E>,
) -> Result<Option<ThreadEnd>, E> {
    let image = &input.trace.images[image_index];
    let names = &input.names[image_index];
    let (header, mut events) = match Events::open(&file.path) {
        Ok(x) => x,
        Err(e) => {
            notes.push(e);
            return Ok(None);
        }
    };
    let thread = Thread {
        image_index,
        image,
        names,
        file,
        header,
        clock: Clock::new(input.trace, image),
    };
    let mut last_tsc = 0;
    {
        let feed = events.values();
        let counted = Counted {
            events: &mut events,
            progress: input.progress,
            pending: 0,
            last: &mut last_tsc,
        };
        let visible = Visible::new(
            Calls::new(counted, thread.header.stopped).values(feed),
            names,
            matches,
            input.filters,
        );
        let mut items = Threshold::new(visible, input.filters.min_ticks);
        f(&thread, &mut items)?;
    }
    let damage = events.damage().map(str::to_string);
    if let Some(d) = &damage {
        notes.push(format!("read up to damage: {d}"));
    }
    Ok(Some(ThreadEnd { last_tsc, damage }))
}

/// Recorded values (`ftail record -A/-R/-a`) as the exports show them:
/// each argument on its own, the return value whole, both as `ftail
/// replay` writes them.
pub struct ValueText {
    enums: ftail_trace::values::Enums,
}

impl ValueText {
    /// For the trace of `input` (the enums' names of its spec file).
    pub fn new(input: &Input) -> ValueText {
        ValueText {
            enums: ftail_trace::values::Enums::load(&input.trace.dir),
        }
    }

    /// Each argument as text.
    pub fn args(&self, values: &[ftail_trace::values::Value]) -> Vec<String> {
        values.iter().map(|v| v.to_text(&self.enums)).collect()
    }

    /// The return value as text; `function` is the function's symbol,
    /// when known (an enum it returns is named by it); `None` when its
    /// rules ask for no return value (a tail chain's).
    pub fn ret(
        &self,
        values: &[ftail_trace::values::Value],
        function: Option<&str>,
    ) -> Option<String> {
        ftail_trace::values::ret_text(values, function, &self.enums)
    }
}

/// An argument's name in the exports: `arg1`, `arg2`…
pub fn arg_name(index: usize) -> String {
    format!("arg{}", index + 1)
}

/// Per image of `input`: whether `-F` and `-N` match each function.
pub fn matches(input: &Input) -> Vec<Matches> {
    input
        .names
        .iter()
        .map(|n| Matches::new(input.filters, n))
        .collect()
}

/// The diagnostics of every image's names (modules that could not be
/// named), once each.
pub fn name_notes(input: &Input) -> Notes {
    let mut notes: Notes = input
        .names
        .iter()
        .flat_map(|n| n.diagnostics().iter().cloned())
        .collect();
    notes.dedup();
    notes
}

/// Events counted into a [`Progress`] as they are read, and the time of
/// the last one kept.
struct Counted<'a, I> {
    events: I,
    progress: &'a Progress,
    pending: u64,
    last: &'a mut u64,
}

impl<I: Iterator<Item = Event>> Iterator for Counted<'_, I> {
    type Item = Event;

    #[inline]
    fn next(&mut self) -> Option<Event> {
        let e = self.events.next();
        match &e {
            Some(ev) => {
                *self.last = ev.tsc;
                self.pending += 1;
                if self.pending == 1 << 14 {
                    self.progress.add(self.pending);
                    self.pending = 0;
                }
            }
            None => {
                self.progress.add(self.pending);
                self.pending = 0;
            }
        }
        e
    }
}

/// Maps an I/O error on the output to a message naming the file.
pub(crate) fn named(path: &std::path::Path) -> impl Fn(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

//! Chrome's Trace Event format (JSON), which chrome://tracing, Perfetto's
//! UI and speedscope read.
//!
//! A `B` (begin) event per call entered and an `E` (end) event with the
//! same name per call ended, one event per line, at microseconds with
//! three decimals (nanosecond precision); `M` metadata events name each
//! process and thread. A call that did not simply return ends with
//! `args.exit`, a resumed slice begins with `args.resumed`. Calls still
//! open at the end of a thread (a killed process) have no `E`. Instant
//! events (`i`) mark where a buffer filled up and how many events a thread
//! lost. About 130 bytes a call.
//!
//! Recorded values (`ftail record -A/-R/-a`) go in the `args` of the
//! events, as `ftail replay` writes them (strings quoted, `NULL`, `(bad
//! pointer 0x…)`): the arguments in the `B` event as `arg1`, `arg2`…, the
//! return value in the `E` event as `retval` (viewers show a slice's `B`
//! and `E` args together).
//!
//! Begin/end pairs rather than `X` (complete) events: viewers rebuild
//! the nesting of `X` events from start + duration, sums that rounding
//! can put a callee's end after its caller's (a tail call ends both at
//! the same instant); a pair's times are written as read, in order.
//!
//! Serialized with `serde`, one event at a time: nothing but the open
//! calls of the thread being written is held.

use std::io::{self, Write};

use ftail_abi::trace::EventKind;
use serde::Serialize;

use crate::{Input, Notes};
use ftail_trace::view::Shown;

#[derive(Serialize)]
struct Event<'a> {
    name: &'a str,
    ph: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dur: Option<f64>,
    pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    tid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    s: Option<&'static str>,
    #[serde(skip_serializing_if = "Args::is_empty")]
    args: Args<'a>,
}

#[derive(Serialize, Default)]
struct Args<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resumed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    src: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    /// The call took the snapshot this trace is (`ftail record
    /// --snapshot-on`, `ftail_snapshot()`).
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot: Option<&'static str>,
    /// Recorded arguments, `arg1`, `arg2`…
    #[serde(flatten)]
    values: ArgValues<'a>,
    /// The recorded return value.
    #[serde(skip_serializing_if = "Option::is_none")]
    retval: Option<&'a str>,
}

/// Arguments as `"arg1": "…", "arg2": "…"`, flattened into [`Args`].
#[derive(Default)]
struct ArgValues<'a>(&'a [String]);

impl Serialize for ArgValues<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (i, v) in self.0.iter().enumerate() {
            m.serialize_entry(&crate::arg_name(i), v)?;
        }
        m.end()
    }
}

impl Args<'_> {
    fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.exit.is_none()
            && self.resumed.is_none()
            && self.src.is_none()
            && self.count.is_none()
            && self.snapshot.is_none()
            && self.values.0.is_empty()
            && self.retval.is_none()
    }
}

/// A function's name: shared with the names, or an address spelled out.
enum Name {
    Known(std::sync::Arc<str>),
    Address(String),
}

impl Name {
    fn as_str(&self) -> &str {
        match self {
            Name::Known(n) => n,
            Name::Address(a) => a,
        }
    }
}

/// Nanoseconds as microseconds with three decimals.
fn us(ns: f64) -> f64 {
    ns.round() / 1000.0
}

struct Out<'o, W: ?Sized> {
    out: &'o mut W,
    first: bool,
}

impl<W: Write + ?Sized> Out<'_, W> {
    fn event(&mut self, e: &Event) -> io::Result<()> {
        self.out
            .write_all(if self.first { b"\n" } else { b",\n" })?;
        self.first = false;
        serde_json::to_writer(&mut *self.out, e).map_err(io::Error::from)
    }
}

/// Writes `input` as Chrome Trace Event JSON to `out`; returns notes on
/// what could not be read.
///
/// # Errors
///
/// Only the writer's.
pub fn write<W: Write + ?Sized>(input: &Input, out: &mut W) -> io::Result<Notes> {
    let mut notes = crate::name_notes(input);
    out.write_all(b"{\"traceEvents\":[")?;
    let mut o = Out { out, first: true };
    for image in &input.trace.images {
        let name = crate::process_name(image);
        o.event(&Event {
            name: "process_name",
            ph: "M",
            ts: None,
            dur: None,
            pid: image.pid,
            tid: None,
            s: None,
            args: Args {
                name: Some(&name),
                ..Args::default()
            },
        })?;
    }
    let matches = crate::matches(input);
    let text = crate::ValueText::new(input);
    for (i, file) in crate::selected(input) {
        let mut mark = input
            .trace
            .mark
            .clone()
            .and_then(|m| ftail_trace::replay::resolve_mark(m, &input.trace.images[i]));
        let end = crate::stream_thread(input, i, &matches[i], file, &mut notes, |t, items| {
            let pid = t.image.pid;
            let tid = Some(t.file.tid);
            let tname = crate::thread_name(t.file);
            o.event(&Event {
                name: "thread_name",
                ph: "M",
                ts: None,
                dur: None,
                pid,
                tid,
                s: None,
                args: Args {
                    name: Some(&tname),
                    ..Args::default()
                },
            })?;
            // Per open call: its name (`B` and `E` carry the same, which
            // viewers match them by).
            let mut open: Vec<Name> = Vec::new();
            let mut srclines: Vec<Option<Option<Box<str>>>> = Vec::new();
            if input.srcline {
                srclines = vec![None; t.names.functions().len()];
            }
            let mut buffer_full = false;
            for item in items {
                match item {
                    Shown::Enter {
                        addr,
                        func,
                        tsc,
                        resumed,
                        args,
                        ..
                    } => {
                        let name = match func {
                            Some(f) => Name::Known(t.names.function(f).name.clone()),
                            None => Name::Address(crate::function_name(t.names, None, addr)),
                        };
                        let src = srcline(t, &mut srclines, func);
                        let args = args.map(|v| text.args(&v)).unwrap_or_default();
                        let snapshot = mark
                            .take_if(|m| m.is(t.file.tid, addr, tsc))
                            .map(|m| m.note());
                        o.event(&Event {
                            name: name.as_str(),
                            ph: "B",
                            ts: Some(us(t.clock.ns(tsc))),
                            dur: None,
                            pid,
                            tid,
                            s: None,
                            args: Args {
                                resumed: resumed.then_some(true),
                                src: src.as_deref(),
                                snapshot,
                                values: ArgValues(&args),
                                ..Args::default()
                            },
                        })?;
                        open.push(name);
                    }
                    Shown::Leave {
                        end,
                        how,
                        ret,
                        func,
                        ..
                    }
                    | Shown::Leaf {
                        end,
                        how,
                        ret,
                        func,
                        ..
                    } => {
                        let name = open.pop();
                        let function = func.map(|f| &*t.names.function(f).mangled);
                        let retval = ret.and_then(|v| text.ret(&v, function));
                        if how == EventKind::Truncated && !buffer_full {
                            buffer_full = true;
                            o.event(&Event {
                                name: "buffer full",
                                ph: "i",
                                ts: Some(us(t.clock.ns(end))),
                                dur: None,
                                pid,
                                tid,
                                s: Some("t"),
                                args: Args::default(),
                            })?;
                        }
                        o.event(&Event {
                            name: name.as_ref().map_or("", Name::as_str),
                            ph: "E",
                            ts: Some(us(t.clock.ns(end))),
                            dur: None,
                            pid,
                            tid,
                            s: None,
                            args: Args {
                                exit: crate::exit_note(how),
                                retval: retval.as_deref(),
                                ..Args::default()
                            },
                        })?;
                    }
                }
            }
            Ok::<(), io::Error>(())
        })?;
        if let (Some(end), Some(lost)) = (
            end,
            file.header.as_ref().ok().map(|h| h.lost).filter(|&l| l > 0),
        ) {
            let image = &input.trace.images[i];
            let clock = crate::Clock::new(input.trace, image);
            o.event(&Event {
                name: "events lost",
                ph: "i",
                ts: Some(us(clock.ns(end.last_tsc))),
                dur: None,
                pid: image.pid,
                tid: Some(file.tid),
                s: Some("t"),
                args: Args {
                    count: Some(lost),
                    ..Args::default()
                },
            })?;
        }
    }
    out_tail(o.out)?;
    Ok(notes)
}

fn out_tail<W: Write + ?Sized>(out: &mut W) -> io::Result<()> {
    out.write_all(b"\n],\"displayTimeUnit\":\"ns\",\"otherData\":{\"exporter\":\"ftail\"}}\n")?;
    out.flush()
}

/// `file:line` of a function, when asked and known (looked up once per
/// function).
fn srcline(
    t: &crate::Thread,
    cache: &mut [Option<Option<Box<str>>>],
    func: Option<ftail_trace::names::FuncId>,
) -> Option<Box<str>> {
    let f = func?;
    let slot = cache.get_mut(f.0 as usize)?;
    slot.get_or_insert_with(|| t.names.srcline(f).map(|s| s.to_string().into_boxed_str()))
        .clone()
}

//! Perfetto's native trace format: a stream of `TracePacket`s carrying
//! `TrackEvent`s, which ui.perfetto.dev and Perfetto's trace processor
//! read.
//!
//! Layout of what is written:
//!
//! * sequence 1: a `ClockSnapshot` (the trace's clock, ns since the trace
//!   began, against wall-clock time when recorded), then one process
//!   `TrackDescriptor` per process image (pid, command line, name);
//! * one sequence per thread (`trusted_packet_sequence_id`: interning is
//!   scoped to a sequence). Its first packet clears the incremental state
//!   and carries the thread's `TrackDescriptor` (pid, tid, name; its
//!   parent is the process track) and `TracePacketDefaults` naming that
//!   track, so events need not repeat it;
//! * then a `SLICE_BEGIN` per call entered and a `SLICE_END` per call
//!   ended, in the thread's time order. Function names (and, when asked,
//!   source locations) are interned: a name is sent once per sequence, in
//!   the `InternedData` of the packet that first uses it, and events refer
//!   to it by iid. A call that did not simply return ends with a debug
//!   annotation `exit` (`tail call`, `unwound`, `buffer full`, `switched
//!   out`); a resumed slice begins with `resumed: true`;
//! * recorded values (`ftail record -A/-R/-a`) are debug annotations as
//!   `ftail replay` writes them (strings quoted, `NULL`, `(bad pointer
//!   0x…)`): `arg1`, `arg2`… on the slice's begin, `retval` on its end
//!   (names interned once per sequence, with the first value sent);
//! * instant events mark where a thread's buffer filled up and, at its
//!   end, how many events it lost.
//!
//! About 33 bytes a call. The encoder is [`crate::proto`], written from
//! the schema's field numbers (`protos/perfetto/trace/`); the tests decode
//! the output with Perfetto's own generated schema.

use std::io::{self, Write};

use ftail_abi::trace::EventKind;
use rustc_hash::FxHashMap;

use crate::proto::{bytes, message, string, uint, varint};
use crate::{Input, Notes};
use ftail_trace::view::Shown;

/// `Trace.packet`.
const TRACE_PACKET: u32 = 1;

// TracePacket fields.
const TIMESTAMP: u32 = 8;
const CLOCK_SNAPSHOT: u32 = 6;
const TRUSTED_SEQUENCE_ID: u32 = 10;
const TRACK_EVENT: u32 = 11;
const INTERNED_DATA: u32 = 12;
const SEQUENCE_FLAGS: u32 = 13;
const TRACE_PACKET_DEFAULTS: u32 = 59;
const TRACK_DESCRIPTOR: u32 = 60;

/// `TracePacket.SequenceFlags`.
const SEQ_INCREMENTAL_STATE_CLEARED: u64 = 1;
const SEQ_NEEDS_INCREMENTAL_STATE: u64 = 2;

// ClockSnapshot and ClockSnapshot.Clock.
const CLOCKS: u32 = 1;
const PRIMARY_TRACE_CLOCK: u32 = 2;
const CLOCK_ID: u32 = 1;
const CLOCK_TIMESTAMP: u32 = 2;
const BUILTIN_CLOCK_REALTIME: u64 = 1;
const BUILTIN_CLOCK_BOOTTIME: u64 = 6;

// TracePacketDefaults / TrackEventDefaults.
const TRACK_EVENT_DEFAULTS: u32 = 11;
const DEFAULT_TRACK_UUID: u32 = 11;

// TrackDescriptor, ProcessDescriptor, ThreadDescriptor.
const TD_UUID: u32 = 1;
const TD_PROCESS: u32 = 3;
const TD_THREAD: u32 = 4;
const TD_PARENT_UUID: u32 = 5;
const PD_PID: u32 = 1;
const PD_CMDLINE: u32 = 2;
const PD_PROCESS_NAME: u32 = 6;
const THD_PID: u32 = 1;
const THD_TID: u32 = 2;
const THD_THREAD_NAME: u32 = 5;

// TrackEvent.
const TE_DEBUG_ANNOTATIONS: u32 = 4;
const TE_TYPE: u32 = 9;
const TE_NAME_IID: u32 = 10;
const TE_SOURCE_LOCATION_IID: u32 = 34;
const TYPE_SLICE_BEGIN: u64 = 1;
const TYPE_SLICE_END: u64 = 2;
const TYPE_INSTANT: u64 = 3;

// DebugAnnotation.
const DA_NAME_IID: u32 = 1;
const DA_BOOL_VALUE: u32 = 2;
const DA_UINT_VALUE: u32 = 3;
const DA_STRING_VALUE: u32 = 6;
const DA_NAME: u32 = 10;

// InternedData and its entries (EventName, DebugAnnotationName,
// SourceLocation).
const ID_EVENT_NAMES: u32 = 2;
const ID_DEBUG_ANNOTATION_NAMES: u32 = 3;
const ID_SOURCE_LOCATIONS: u32 = 4;
const IID: u32 = 1;
const NAME: u32 = 2;
const SL_FILE_NAME: u32 = 2;
const SL_FUNCTION_NAME: u32 = 3;
const SL_LINE_NUMBER: u32 = 4;

/// The sequence of the clock snapshot and the process descriptors.
const GLOBAL_SEQUENCE: u64 = 1;

/// Debug annotation names and instant event names, interned with fixed
/// iids on every thread's sequence.
const ANNOTATION_NAMES: [&str; 3] = ["exit", "resumed", "count"];
const EXIT: u64 = 1;
const RESUMED: u64 = 2;
const COUNT: u64 = 3;
/// The values' annotation names, interned on a sequence with its first
/// value: `retval`, then `arg1` to `arg12` (`MAX_ARGS`).
const RETVAL: u64 = ANNOTATION_NAMES.len() as u64 + 1;
const FIRST_ARG: u64 = RETVAL + 1;
const INTERNED_ARGS: usize = ftail_abi::argspec::MAX_ARGS;
const INSTANT_NAMES: [&str; 4] = ["buffer full", "events lost", "snapshot", "linux:schedule"];
const BUFFER_FULL: u64 = 1;
const EVENTS_LOST: u64 = 2;
/// At the entry of the call that took the snapshot this trace is.
const SNAPSHOT: u64 = 3;
/// A time off the CPU (scheduler events), a slice inside the call that
/// was running, named as uftrace names it.
const SCHEDULE: u64 = 4;

/// Writes `input` as a Perfetto trace to `out`; returns notes on what
/// could not be read.
///
/// # Errors
///
/// Only the writer's.
pub fn write<W: Write + ?Sized>(input: &Input, out: &mut W) -> io::Result<Notes> {
    let mut w = Writer {
        out,
        packet: Vec::with_capacity(256),
        body: Vec::with_capacity(128),
        inner: Vec::with_capacity(64),
        interned: Vec::with_capacity(128),
        text: crate::ValueText::new(input),
    };
    let mut notes = crate::name_notes(input);
    w.clock_snapshot(input)?;
    for (i, image) in input.trace.images.iter().enumerate() {
        w.process(i, image)?;
    }
    let matches = crate::matches(input);
    let sched = ftail_trace::reader::sched::Sched::load(&input.trace.dir);
    for (ordinal, (i, file)) in crate::selected(input).into_iter().enumerate() {
        let mut off_cpu = ftail_trace::reader::sched::OffCpuCursor::new(sched.thread(file.tid));
        let seq = GLOBAL_SEQUENCE + 1 + ordinal as u64;
        let track = thread_uuid(ordinal);
        let srclines = input.srcline;
        let mut mark = input
            .trace
            .mark
            .clone()
            .and_then(|m| ftail_trace::replay::resolve_mark(m, &input.trace.images[i]));
        crate::stream_thread(input, i, &matches[i], file, &mut notes, |t, items| {
            w.thread(t, seq, track)?;
            let mut state = ThreadState {
                seq,
                names: FxHashMap::default(),
                locations: FxHashMap::default(),
                next_iid: 1,
                next_location: 1,
                srclines,
                buffer_full: false,
                value_names: false,
            };
            // Shown calls open: a time off the CPU is drawn only inside one.
            let mut depth = 0u32;
            for item in items {
                for o in off_cpu.before(item.tsc()) {
                    if depth > 0 {
                        w.off_cpu(seq, t.clock.ns(o.start), t.clock.ns(o.end))?;
                    }
                }
                match item {
                    Shown::Enter { .. } => depth += 1,
                    Shown::Leave { .. } => depth = depth.saturating_sub(1),
                    Shown::Leaf { .. } => {}
                }
                w.item(t, &mut state, &item)?;
                if let Shown::Enter { addr, tsc, .. } = item {
                    if mark.take_if(|m| m.is(t.file.tid, addr, tsc)).is_some() {
                        w.instant(seq, t.clock.ns(tsc), SNAPSHOT, None)?;
                    }
                }
            }
            Ok::<(), io::Error>(())
        })
        .and_then(|end| {
            // Lost events: an instant at the thread's last event.
            let Some(end) = end else { return Ok(()) };
            let header = file.header.as_ref().ok();
            if let Some(lost) = header.map(|h| h.lost).filter(|&l| l > 0) {
                let clock = crate::Clock::new(input.trace, &input.trace.images[i]);
                w.instant(seq, clock.ns(end.last_tsc), EVENTS_LOST, Some(lost))?;
            }
            Ok(())
        })?;
    }
    w.out.flush()?;
    Ok(notes)
}

/// The uuid of a process image's track.
fn process_uuid(image_index: usize) -> u64 {
    1 + image_index as u64
}

/// The uuid of the `ordinal`-th selected thread's track.
fn thread_uuid(ordinal: usize) -> u64 {
    (1 << 32) + ordinal as u64
}

/// What a thread's sequence has interned.
struct ThreadState {
    seq: u64,
    /// Function (its id, or its address with the top bit set) to iid.
    names: FxHashMap<u64, u64>,
    /// Function id to source location iid (0: none known).
    locations: FxHashMap<u32, u64>,
    next_iid: u64,
    next_location: u64,
    srclines: bool,
    buffer_full: bool,
    /// The values' annotation names are interned.
    value_names: bool,
}

impl ThreadState {
    /// Interns the values' annotation names into `interned` the first
    /// time a value is sent on the sequence.
    fn value_names(&mut self, interned: &mut Vec<u8>, inner: &mut Vec<u8>) {
        if std::mem::replace(&mut self.value_names, true) {
            return;
        }
        let names =
            std::iter::once("retval".to_string()).chain((0..INTERNED_ARGS).map(crate::arg_name));
        for (i, n) in names.enumerate() {
            message(interned, ID_DEBUG_ANNOTATION_NAMES, inner, |e| {
                uint(e, IID, RETVAL + i as u64);
                string(e, NAME, &n);
            });
        }
    }
}

/// A string annotation: its name interned as `iid`, or spelled out when
/// past the interned ones.
fn annotation(b: &mut Vec<u8>, inner: &mut Vec<u8>, iid: u64, name: &str, value: &str) {
    message(b, TE_DEBUG_ANNOTATIONS, inner, |a| {
        if iid < FIRST_ARG + INTERNED_ARGS as u64 {
            uint(a, DA_NAME_IID, iid);
        } else {
            string(a, DA_NAME, name);
        }
        string(a, DA_STRING_VALUE, value);
    });
}

struct Writer<'o, W: ?Sized> {
    out: &'o mut W,
    /// The packet being built, then its body and nested bodies.
    packet: Vec<u8>,
    body: Vec<u8>,
    inner: Vec<u8>,
    interned: Vec<u8>,
    text: crate::ValueText,
}

impl<W: Write + ?Sized> Writer<'_, W> {
    /// Writes the packet built in `self.packet` as one `Trace.packet`.
    fn emit(&mut self) -> io::Result<()> {
        let mut head = Vec::with_capacity(12);
        varint(&mut head, u64::from(TRACE_PACKET << 3 | 2));
        varint(&mut head, self.packet.len() as u64);
        self.out.write_all(&head)?;
        self.out.write_all(&self.packet)
    }

    fn clock_snapshot(&mut self, input: &Input) -> io::Result<()> {
        let Some(realtime) = crate::start_realtime_ns(input.trace) else {
            return Ok(());
        };
        self.packet.clear();
        uint(&mut self.packet, TRUSTED_SEQUENCE_ID, GLOBAL_SEQUENCE);
        let (body, inner) = (&mut self.body, &mut self.inner);
        message(&mut self.packet, CLOCK_SNAPSHOT, body, |b| {
            for (id, ts) in [
                (BUILTIN_CLOCK_BOOTTIME, 0),
                (BUILTIN_CLOCK_REALTIME, realtime),
            ] {
                message(b, CLOCKS, inner, |c| {
                    uint(c, CLOCK_ID, id);
                    uint(c, CLOCK_TIMESTAMP, ts);
                });
            }
            uint(b, PRIMARY_TRACE_CLOCK, BUILTIN_CLOCK_BOOTTIME);
        });
        self.emit()
    }

    fn process(&mut self, index: usize, image: &ftail_trace::reader::dir::Image) -> io::Result<()> {
        self.packet.clear();
        uint(&mut self.packet, TRUSTED_SEQUENCE_ID, GLOBAL_SEQUENCE);
        let (body, inner) = (&mut self.body, &mut self.inner);
        message(&mut self.packet, TRACK_DESCRIPTOR, body, |b| {
            uint(b, TD_UUID, process_uuid(index));
            message(b, TD_PROCESS, inner, |p| {
                uint(p, PD_PID, u64::from(image.pid));
                for a in image.args() {
                    string(p, PD_CMDLINE, &a);
                }
                string(p, PD_PROCESS_NAME, &crate::process_name(image));
            });
        });
        self.emit()
    }

    /// The first packet of a thread's sequence.
    fn thread(&mut self, t: &crate::Thread, seq: u64, track: u64) -> io::Result<()> {
        self.packet.clear();
        uint(&mut self.packet, TRUSTED_SEQUENCE_ID, seq);
        uint(
            &mut self.packet,
            SEQUENCE_FLAGS,
            SEQ_INCREMENTAL_STATE_CLEARED,
        );
        let (body, inner) = (&mut self.body, &mut self.inner);
        message(&mut self.packet, TRACK_DESCRIPTOR, body, |b| {
            uint(b, TD_UUID, track);
            uint(b, TD_PARENT_UUID, process_uuid(t.image_index));
            message(b, TD_THREAD, inner, |th| {
                uint(th, THD_PID, u64::from(t.image.pid));
                uint(th, THD_TID, u64::from(t.file.tid));
                string(th, THD_THREAD_NAME, &crate::thread_name(t.file));
            });
        });
        message(&mut self.packet, TRACE_PACKET_DEFAULTS, body, |b| {
            message(b, TRACK_EVENT_DEFAULTS, inner, |d| {
                uint(d, DEFAULT_TRACK_UUID, track)
            });
        });
        // The names every sequence uses, with fixed iids.
        message(&mut self.packet, INTERNED_DATA, body, |b| {
            for (i, n) in ANNOTATION_NAMES.iter().enumerate() {
                message(b, ID_DEBUG_ANNOTATION_NAMES, inner, |e| {
                    uint(e, IID, i as u64 + 1);
                    string(e, NAME, n);
                });
            }
        });
        self.emit()
    }

    /// A time off the CPU: a slice on the thread's track, inside the
    /// call that was running.
    fn off_cpu(&mut self, seq: u64, start_ns: f64, end_ns: f64) -> io::Result<()> {
        let iid = u64::MAX / 2 + SCHEDULE;
        for (ns, kind) in [(start_ns, TYPE_SLICE_BEGIN), (end_ns, TYPE_SLICE_END)] {
            self.packet.clear();
            uint(&mut self.packet, TIMESTAMP, ns.round() as u64);
            uint(&mut self.packet, TRUSTED_SEQUENCE_ID, seq);
            uint(
                &mut self.packet,
                SEQUENCE_FLAGS,
                SEQ_NEEDS_INCREMENTAL_STATE,
            );
            let (body, inner) = (&mut self.body, &mut self.inner);
            if kind == TYPE_SLICE_BEGIN {
                message(&mut self.packet, INTERNED_DATA, body, |b| {
                    message(b, ID_EVENT_NAMES, inner, |e| {
                        uint(e, IID, iid);
                        string(e, NAME, INSTANT_NAMES[SCHEDULE as usize - 1]);
                    });
                });
            }
            message(&mut self.packet, TRACK_EVENT, body, |b| {
                uint(b, TE_TYPE, kind);
                if kind == TYPE_SLICE_BEGIN {
                    uint(b, TE_NAME_IID, iid);
                }
            });
            self.emit()?;
        }
        Ok(())
    }

    /// An instant event on a thread's track, with a count when given.
    fn instant(&mut self, seq: u64, ns: f64, name: u64, count: Option<u64>) -> io::Result<()> {
        // Instant names use iids above every function's: interned where
        // used, under iids of their own range.
        let iid = u64::MAX / 2 + name;
        self.packet.clear();
        uint(&mut self.packet, TIMESTAMP, ns.round() as u64);
        uint(&mut self.packet, TRUSTED_SEQUENCE_ID, seq);
        uint(
            &mut self.packet,
            SEQUENCE_FLAGS,
            SEQ_NEEDS_INCREMENTAL_STATE,
        );
        let (body, inner) = (&mut self.body, &mut self.inner);
        message(&mut self.packet, INTERNED_DATA, body, |b| {
            message(b, ID_EVENT_NAMES, inner, |e| {
                uint(e, IID, iid);
                string(e, NAME, INSTANT_NAMES[name as usize - 1]);
            });
        });
        message(&mut self.packet, TRACK_EVENT, body, |b| {
            uint(b, TE_TYPE, TYPE_INSTANT);
            uint(b, TE_NAME_IID, iid);
            if let Some(n) = count {
                message(b, TE_DEBUG_ANNOTATIONS, inner, |a| {
                    uint(a, DA_NAME_IID, COUNT);
                    uint(a, DA_UINT_VALUE, n);
                });
            }
        });
        self.emit()
    }

    fn item(&mut self, t: &crate::Thread, s: &mut ThreadState, item: &Shown) -> io::Result<()> {
        match *item {
            Shown::Enter {
                addr,
                func,
                tsc,
                resumed,
                ref args,
                ..
            } => {
                let key = func.map_or(addr | 1 << 63, |f| u64::from(f.0));
                self.interned.clear();
                let iid = match s.names.get(&key) {
                    Some(&iid) => iid,
                    None => {
                        let iid = s.next_iid;
                        s.next_iid += 1;
                        s.names.insert(key, iid);
                        let name = crate::function_name(t.names, func, addr);
                        message(&mut self.interned, ID_EVENT_NAMES, &mut self.inner, |e| {
                            uint(e, IID, iid);
                            string(e, NAME, &name);
                        });
                        iid
                    }
                };
                let location = match (s.srclines, func) {
                    (true, Some(f)) => match s.locations.get(&f.0) {
                        Some(&l) => l,
                        None => {
                            let l = match t.names.srcline(f) {
                                Some(line) => {
                                    let l = s.next_location;
                                    s.next_location += 1;
                                    let name = &t.names.function(f).name;
                                    message(
                                        &mut self.interned,
                                        ID_SOURCE_LOCATIONS,
                                        &mut self.inner,
                                        |e| {
                                            uint(e, IID, l);
                                            string(e, SL_FILE_NAME, &line.file);
                                            string(e, SL_FUNCTION_NAME, name);
                                            uint(e, SL_LINE_NUMBER, u64::from(line.line));
                                        },
                                    );
                                    l
                                }
                                None => 0,
                            };
                            s.locations.insert(f.0, l);
                            l
                        }
                    },
                    _ => 0,
                };
                let args = args.as_ref().map(|v| self.text.args(v)).unwrap_or_default();
                if !args.is_empty() {
                    s.value_names(&mut self.interned, &mut self.inner);
                }
                self.packet.clear();
                uint(&mut self.packet, TIMESTAMP, t.clock.ns(tsc).round() as u64);
                uint(&mut self.packet, TRUSTED_SEQUENCE_ID, s.seq);
                uint(
                    &mut self.packet,
                    SEQUENCE_FLAGS,
                    SEQ_NEEDS_INCREMENTAL_STATE,
                );
                if !self.interned.is_empty() {
                    bytes(&mut self.packet, INTERNED_DATA, &self.interned);
                }
                let inner = &mut self.inner;
                message(&mut self.packet, TRACK_EVENT, &mut self.body, |b| {
                    uint(b, TE_TYPE, TYPE_SLICE_BEGIN);
                    uint(b, TE_NAME_IID, iid);
                    if location != 0 {
                        uint(b, TE_SOURCE_LOCATION_IID, location);
                    }
                    if resumed {
                        message(b, TE_DEBUG_ANNOTATIONS, inner, |a| {
                            uint(a, DA_NAME_IID, RESUMED);
                            uint(a, DA_BOOL_VALUE, 1);
                        });
                    }
                    for (i, v) in args.iter().enumerate() {
                        annotation(b, inner, FIRST_ARG + i as u64, &crate::arg_name(i), v);
                    }
                });
                self.emit()
            }
            Shown::Leave {
                end,
                how,
                ref ret,
                func,
                ..
            }
            | Shown::Leaf {
                end,
                how,
                ref ret,
                func,
                ..
            } => {
                let ns = t.clock.ns(end);
                if how == EventKind::Truncated && !s.buffer_full {
                    s.buffer_full = true;
                    self.instant(s.seq, ns, BUFFER_FULL, None)?;
                }
                let retval = ret.as_ref().and_then(|v| {
                    let function = func.map(|f| &*t.names.function(f).mangled);
                    self.text.ret(v, function)
                });
                self.interned.clear();
                if retval.is_some() {
                    s.value_names(&mut self.interned, &mut self.inner);
                }
                self.packet.clear();
                uint(&mut self.packet, TIMESTAMP, ns.round() as u64);
                uint(&mut self.packet, TRUSTED_SEQUENCE_ID, s.seq);
                if retval.is_some() {
                    uint(
                        &mut self.packet,
                        SEQUENCE_FLAGS,
                        SEQ_NEEDS_INCREMENTAL_STATE,
                    );
                }
                if !self.interned.is_empty() {
                    bytes(&mut self.packet, INTERNED_DATA, &self.interned);
                }
                let inner = &mut self.inner;
                message(&mut self.packet, TRACK_EVENT, &mut self.body, |b| {
                    uint(b, TE_TYPE, TYPE_SLICE_END);
                    if let Some(note) = crate::exit_note(how) {
                        message(b, TE_DEBUG_ANNOTATIONS, inner, |a| {
                            uint(a, DA_NAME_IID, EXIT);
                            string(a, DA_STRING_VALUE, note);
                        });
                    }
                    if let Some(v) = &retval {
                        annotation(b, inner, RETVAL, "retval", v);
                    }
                });
                self.emit()
            }
        }
    }
}

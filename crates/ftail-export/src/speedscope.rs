//! speedscope's file format, evented profiles: one profile per thread,
//! whose `O` (open frame) and `C` (close frame) events map one to one onto
//! ftail's entries and exits, at nanoseconds since the trace began. Frames
//! (functions, with their file and line when asked) are shared by every
//! profile and listed once at the end of the file. About 80 bytes a call.
//!
//! Streamed: the events are written as they are read (JSON does not care
//! that `shared.frames` comes after the profiles that use it); what is
//! held is the frame list (one entry per function met) and the open calls
//! of the thread being written, which are closed at the thread's end
//! when its process was killed (speedscope wants every frame closed).

use std::io::{self, Write};

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::{Input, Notes};
use ftail_trace::view::Shown;

/// The format's schema, which speedscope checks the file against.
pub const SCHEMA: &str = "https://www.speedscope.app/file-format-schema.json";

#[derive(Serialize)]
struct Frame {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u32>,
}

/// Writes `input` in speedscope's format to `out`; returns notes on what
/// could not be read.
///
/// # Errors
///
/// Only the writer's.
pub fn write<W: Write + ?Sized>(input: &Input, out: &mut W) -> io::Result<Notes> {
    let mut notes = crate::name_notes(input);
    let title = input
        .trace
        .images
        .first()
        .map(crate::process_name)
        .unwrap_or_default();
    write!(
        out,
        "{{\"$schema\":\"{SCHEMA}\",\"exporter\":\"ftail\",\"name\":"
    )?;
    serde_json::to_writer(&mut *out, &title)?;
    out.write_all(b",\"activeProfileIndex\":0,\"profiles\":[")?;
    // (image, function id or address with the top bit set) -> frame.
    let mut index: FxHashMap<(usize, u64), usize> = FxHashMap::default();
    let mut frames: Vec<Frame> = Vec::new();
    let matches = crate::matches(input);
    let mut first_profile = true;
    for (i, file) in crate::selected(input) {
        crate::stream_thread(input, i, &matches[i], file, &mut notes, |t, items| {
            let name = format!(
                "{} [{}]: {} ({})",
                crate::process_name(t.image),
                t.image.pid,
                crate::thread_name(t.file),
                t.file.tid
            );
            out.write_all(if first_profile { b"\n" } else { b",\n" })?;
            first_profile = false;
            out.write_all(b"{\"type\":\"evented\",\"name\":")?;
            serde_json::to_writer(&mut *out, &name)?;
            out.write_all(b",\"unit\":\"nanoseconds\",\"events\":[")?;
            let mut open: Vec<usize> = Vec::new();
            let (mut start, mut at) = (None, 0u64);
            let mut sep = "\n";
            for item in items {
                let (kind, frame, tsc) = match item {
                    Shown::Enter {
                        addr, func, tsc, ..
                    } => {
                        let key = (i, func.map_or(addr | 1 << 63, |f| u64::from(f.0)));
                        let frame = *index.entry(key).or_insert_with(|| {
                            let src = func
                                .filter(|_| input.srcline)
                                .and_then(|f| t.names.srcline(f));
                            frames.push(Frame {
                                name: crate::function_name(t.names, func, addr),
                                file: src.as_ref().map(|s| s.file.clone()),
                                line: src.map(|s| s.line),
                            });
                            frames.len() - 1
                        });
                        open.push(frame);
                        ('O', frame, tsc)
                    }
                    Shown::Leave { end, .. } | Shown::Leaf { end, .. } => {
                        let Some(frame) = open.pop() else { continue };
                        ('C', frame, end)
                    }
                };
                // Times never go back, even through rounding.
                at = at.max(t.clock.ns(tsc).round() as u64);
                start.get_or_insert(at);
                write!(
                    out,
                    "{}{{\"type\":\"{kind}\",\"frame\":{frame},\"at\":{at}}}",
                    sep
                )?;
                sep = ",\n";
            }
            while let Some(frame) = open.pop() {
                write!(
                    out,
                    "{}{{\"type\":\"C\",\"frame\":{frame},\"at\":{at}}}",
                    sep
                )?;
                sep = ",\n";
            }
            write!(
                out,
                "\n],\"startValue\":{},\"endValue\":{at}}}",
                start.unwrap_or(at)
            )?;
            Ok::<(), io::Error>(())
        })?;
    }
    out.write_all(b"\n],\"shared\":{\"frames\":")?;
    serde_json::to_writer(&mut *out, &frames)?;
    out.write_all(b"}}\n")?;
    out.flush()?;
    Ok(notes)
}

//! Interactive SVG flame graphs, drawn by `inferno` (a Rust port of
//! Brendan Gregg's FlameGraph; CDDL-1.0) from [`crate::folded`] stacks:
//! frames show their function and weight in a tooltip, a click zooms into
//! a frame, Ctrl-F (or the "Search" button) highlights the functions
//! matching a pattern.
//!
//! A differential graph ([`write_diff`]) compares two runs: each frame is
//! drawn at its width in the second run, red where it grew since the
//! first, blue where it shrank.

use std::io::{self, Write};

use inferno::flamegraph;

use crate::folded::{fold, Weight};
use crate::{Input, Notes};

/// How to draw the graph.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The title at the top.
    pub title: String,
    /// What widths measure.
    pub weight: Weight,
}

fn inferno_options(opts: &Options) -> flamegraph::Options<'static> {
    let mut o = flamegraph::Options::default();
    o.title = opts.title.clone();
    o.count_name = opts.weight.unit().to_string();
    o.name_type = "Function:".to_string();
    o.deterministic = true;
    o.hash = true;
    o
}

fn to_text(lines: &std::collections::BTreeMap<String, u64>) -> String {
    let mut text = String::new();
    for (stack, w) in lines {
        text.push_str(stack);
        text.push(' ');
        text.push_str(&w.to_string());
        text.push('\n');
    }
    text
}

/// Draws `input`'s flame graph as SVG into `out`; returns notes on what
/// could not be read.
///
/// # Errors
///
/// The writer's, or a trace with nothing to draw (no call selected).
pub fn write<W: Write + ?Sized>(input: &Input, opts: &Options, out: &mut W) -> io::Result<Notes> {
    let (lines, notes) = fold(input, opts.weight);
    if lines.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no call to draw (nothing selected, or every weight is 0)",
        ));
    }
    let text = to_text(&lines);
    flamegraph::from_lines(&mut inferno_options(opts), text.lines(), &mut *out)?;
    out.flush()?;
    Ok(notes)
}

/// Draws the differential flame graph of `before` and `after` (frames as
/// wide as in `after`, coloured by the change from `before`).
///
/// # Errors
///
/// The writer's, or nothing to draw.
pub fn write_diff<W: Write + ?Sized>(
    before: &Input,
    after: &Input,
    opts: &Options,
    out: &mut W,
) -> io::Result<Notes> {
    let (a, mut notes) = fold(before, opts.weight);
    let (b, more) = fold(after, opts.weight);
    notes.extend(more);
    if a.is_empty() && b.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no call to draw in either trace",
        ));
    }
    let mut diff = Vec::new();
    inferno::differential::from_readers(
        inferno::differential::Options::default(),
        to_text(&a).as_bytes(),
        to_text(&b).as_bytes(),
        &mut diff,
    )?;
    let diff = String::from_utf8_lossy(&diff);
    flamegraph::from_lines(&mut inferno_options(opts), diff.lines(), &mut *out)?;
    out.flush()?;
    Ok(notes)
}

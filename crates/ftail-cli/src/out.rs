//! Writing to standard output and standard error without panicking.
//!
//! `println!` panics when the reader has gone (`ftail sites prog | head`);
//! every command writes through [`stdout`] instead, which reports a closed
//! pipe as [`ClosedPipe`], and `main` ends quietly with status 0 on that
//! error, as ripgrep does. Messages on standard error go through
//! [`stderr`], which ignores failures: there is nowhere left to report
//! them.

use std::fmt;
use std::io::{ErrorKind, Write};

use anyhow::{Context, Result};

/// The reader of standard output has gone; not a failure of ftail.
#[derive(Debug)]
pub struct ClosedPipe;

impl fmt::Display for ClosedPipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output is a closed pipe")
    }
}

impl std::error::Error for ClosedPipe {}

/// Writes `text` to standard output through the locked handle and flushes
/// it.
///
/// # Errors
///
/// [`ClosedPipe`] when the reader has gone; any other write error with
/// context.
pub fn stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Err(ClosedPipe.into()),
        Err(e) => Err(e).context("writing to standard output"),
    }
}

/// Writes one line to standard error; failures are ignored.
pub fn stderr(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err
        .write_all(line.as_bytes())
        .and_then(|()| err.write_all(b"\n"));
}

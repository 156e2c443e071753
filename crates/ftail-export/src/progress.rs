//! How far an export has got: events read out of an estimate of the
//! total. The exporters count; whoever shows a progress bar reads the
//! count from another thread.
//!
//! Event files are sparse, allocated ahead a chunk at a time, so the
//! total is estimated from the blocks the selected files occupy (16 bytes
//! an event): an upper bound, met by the end of a thread that filled its
//! last chunk.

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};

use ftail_trace::reader::dir::ThreadFile;

/// Events read so far, and about how many there are.
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    /// A count with no estimate yet.
    pub fn new() -> Progress {
        Progress::default()
    }

    /// Estimates the total from the files of `threads`.
    pub fn estimate<'a>(&self, threads: impl IntoIterator<Item = &'a ThreadFile>) {
        let bytes: u64 = threads
            .into_iter()
            .filter_map(|t| std::fs::metadata(&t.path).ok())
            .map(|m| (m.blocks() * 512).min(m.len()))
            .sum();
        self.total.store(bytes / 16, Ordering::Relaxed);
    }

    /// Counts `n` more events read.
    #[inline]
    pub fn add(&self, n: u64) {
        if n != 0 {
            self.done.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Events read so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// The estimated total (0: unknown).
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The fraction done, in [0, 1) until the end (the estimate is an
    /// upper bound).
    pub fn fraction(&self) -> f64 {
        match self.total() {
            0 => 0.0,
            t => (self.done() as f64 / t as f64).min(0.99),
        }
    }
}

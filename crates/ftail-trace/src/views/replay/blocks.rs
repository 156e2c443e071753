//! Where the fused path's full blocks of lines go: straight to the
//! writer, or to a second thread that writes them while the next block
//! is made ([`Options::overlap_writes`](super::Options::overlap_writes)).
//!
//! Writing a large replay to a file costs the kernel about as much time
//! as making its lines (copying them into the page cache); done by one
//! thread after the other, the two add up. The writing thread takes the
//! blocks over a bounded channel and hands each back once written, so a
//! few blocks are allocated once and recycled; a write error ends it,
//! and the formatting stops at its next block with that error.

use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use super::OUT_BLOCK;

/// Bytes of lines in a block handed to the writing thread: large enough
/// that a `write` per block costs little, small enough that the blocks
/// in flight stay in the caches (the kernel copying blocks of 1 MiB
/// from memory took about twice the system time).
const WRITE_BEHIND_BLOCK: usize = 1 << 17;

/// Blocks queued to the writing thread (made and not yet written).
const QUEUED: usize = 2;

/// Room past a block's size for the line that fills it.
const SLACK: usize = 4096;

/// Takes full blocks of lines.
pub(super) trait Blocks {
    /// Bytes gathered before a block is handed on.
    fn size(&self) -> usize;

    /// Hands `block` on; it comes back empty.
    fn hand_on(&mut self, block: &mut Vec<u8>) -> io::Result<()>;
}

/// Blocks written by the caller's thread.
pub(super) struct Direct<'w, W: Write>(pub(super) &'w mut W);

impl<W: Write> Blocks for Direct<'_, W> {
    fn size(&self) -> usize {
        OUT_BLOCK
    }

    fn hand_on(&mut self, block: &mut Vec<u8>) -> io::Result<()> {
        let written = self.0.write_all(block);
        block.clear();
        written
    }
}

/// Blocks written by a second thread.
pub(super) struct Behind {
    full: SyncSender<Vec<u8>>,
    empty: Receiver<Vec<u8>>,
}

impl Blocks for Behind {
    fn size(&self) -> usize {
        WRITE_BEHIND_BLOCK
    }

    fn hand_on(&mut self, block: &mut Vec<u8>) -> io::Result<()> {
        // Either fails only once the writing thread has stopped at an
        // error, which [`write_behind`] returns in place of this one.
        let gone = || io::Error::other("the writing thread stopped");
        self.full.send(std::mem::take(block)).map_err(|_| gone())?;
        *block = self.empty.recv().map_err(|_| gone())?;
        Ok(())
    }
}

/// Runs `make` with a [`Behind`] whose blocks a second thread writes to
/// `out`, in order; returns once all are written. The first write error
/// is returned (and stops `make` at its next block); else `make`'s
/// result. `block` is the caller's block, left for the caller to write
/// what remains in it.
pub(super) fn write_behind<W: Write + Send>(
    out: &mut W,
    block: &mut Vec<u8>,
    make: impl FnOnce(&mut Behind, &mut Vec<u8>) -> io::Result<()>,
) -> io::Result<()> {
    let (full, to_write) = sync_channel::<Vec<u8>>(QUEUED);
    let (written, empty) = sync_channel::<Vec<u8>>(QUEUED + 1);
    for _ in 0..QUEUED {
        // Cannot fail: the channel has room and its receiver is here.
        let _ = written.send(Vec::with_capacity(WRITE_BEHIND_BLOCK + SLACK));
    }
    block.reserve(WRITE_BEHIND_BLOCK + SLACK);
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> io::Result<()> {
            for mut b in to_write {
                out.write_all(&b)?;
                b.clear();
                // The formatting thread may have finished: nothing to
                // hand back to.
                let _ = written.send(b);
            }
            Ok(())
        });
        let mut behind = Behind { full, empty };
        let made = make(&mut behind, block);
        // Closes the channel: the writing thread ends once it has
        // written what was queued.
        drop(behind);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the writing thread panicked")));
        written.and(made)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes `room` bytes, then fails as a full disk does.
    struct Room {
        room: usize,
        got: Vec<u8>,
    }

    impl Write for Room {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.got.len() + b.len() > self.room {
                return Err(io::ErrorKind::StorageFull.into());
            }
            self.got.extend_from_slice(b);
            Ok(b.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Blocks of `n` bytes, each of one byte value counting up, handed
    /// on until `make` fails or `count` are made; how many were made.
    fn blocks(behind: &mut Behind, block: &mut Vec<u8>, count: u8) -> (io::Result<()>, u8) {
        for b in 0..count {
            block.resize(behind.size(), b);
            if let Err(e) = behind.hand_on(block) {
                return (Err(e), b + 1);
            }
            assert!(block.is_empty());
        }
        (Ok(()), count)
    }

    #[test]
    fn blocks_are_written_in_order_and_the_rest_is_left() {
        let mut out = Room {
            room: usize::MAX,
            got: Vec::new(),
        };
        let mut block = Vec::new();
        let made = write_behind(&mut out, &mut block, |behind, block| {
            let (made, _) = blocks(behind, block, 9);
            block.extend_from_slice(b"rest");
            made
        });
        made.unwrap();
        assert_eq!(block, b"rest");
        assert_eq!(out.got.len(), 9 * WRITE_BEHIND_BLOCK);
        for (i, chunk) in out.got.chunks(WRITE_BEHIND_BLOCK).enumerate() {
            assert!(chunk.iter().all(|&b| usize::from(b) == i), "block {i}");
        }
    }

    #[test]
    fn a_write_error_is_returned_and_stops_the_making() {
        let mut out = Room {
            room: 3 * WRITE_BEHIND_BLOCK,
            got: Vec::new(),
        };
        let mut made_blocks = 0;
        let made = write_behind(&mut out, &mut Vec::new(), |behind, block| {
            let (made, n) = blocks(behind, block, 100);
            made_blocks = n;
            made
        });
        assert_eq!(made.unwrap_err().kind(), io::ErrorKind::StorageFull);
        // Stopped a few blocks past the failed one: those queued, the
        // one being written.
        assert!(made_blocks <= 4 + QUEUED as u8, "{made_blocks}");
        assert_eq!(out.got.len(), 3 * WRITE_BEHIND_BLOCK);
    }
}

//! What turns a drained ring's chunks into the frames of its drained
//! file: zstd while the drainer keeps up, LZ4 or as they are when it
//! falls behind.

use ftail_abi::trace::drain::{CHUNK, FRAME_HEAD, FRAME_LZ4, FRAME_MAGIC, FRAME_STORED};

/// Makes every chunk drained while the program runs go as if the
/// drainer were behind: LZ4 and stored, in turn (tests of repacking).
const HASTE_ENV: &str = "FTAIL_TEST_DRAIN_HASTE";

/// zstd's level: the fastest of its usual ones compresses a chunk of
/// records about 7 to 10 times.
const LEVEL: i32 = 1;

/// How a chunk goes into the drained file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Codec {
    /// The smallest: about 0.6 to 0.9 bytes an event.
    Zstd,
    /// Faster to compress than zstd and about twice as fast to read back,
    /// about 1.0 to 1.5 bytes an event.
    Lz4,
    /// As it is: the drainer is so far behind that its thread would soon
    /// wait.
    Stored,
}

/// What compresses chunks into frames, with the buffers it reuses.
pub(super) struct Packer {
    zstd: zstd::bulk::Compressor<'static>,
    /// The codec of a drainer that keeps up (`FTAIL_DRAIN_CODEC=zstd` or
    /// `lz4`: that codec however far behind, short of storing).
    keeping_up: Codec,
    /// Whether the codec follows how far behind the drainer is.
    adaptive: bool,
    frame: Vec<u8>,
    /// Chunks written with each codec, in [`Codec`]'s order.
    counts: [u64; 3],
    /// [`HASTE_ENV`] is set.
    haste: bool,
}

impl Codec {
    /// The magic that starts a frame made with it.
    pub(super) fn magic(self) -> u32 {
        match self {
            Codec::Zstd => FRAME_MAGIC,
            Codec::Lz4 => FRAME_LZ4,
            Codec::Stored => FRAME_STORED,
        }
    }
}

impl Packer {
    pub(super) fn new() -> Option<Packer> {
        let choice = std::env::var("FTAIL_DRAIN_CODEC").unwrap_or_default();
        let (keeping_up, adaptive) = match choice.as_str() {
            "zstd" => (Codec::Zstd, false),
            "lz4" => (Codec::Lz4, false),
            _ => (Codec::Zstd, true),
        };
        let bound = zstd::zstd_safe::compress_bound(CHUNK as usize)
            .max(lz4_flex::block::get_maximum_output_size(CHUNK as usize))
            .max(CHUNK as usize);
        Some(Packer {
            zstd: zstd::bulk::Compressor::new(LEVEL).ok()?,
            keeping_up,
            adaptive,
            frame: vec![0; FRAME_HEAD + bound],
            counts: [0; 3],
            haste: std::env::var_os(HASTE_ENV).is_some(),
        })
    }

    /// The codec of a drainer that keeps up: the one a drained file's
    /// frames are repacked with.
    pub(super) fn settled(&self) -> Codec {
        self.keeping_up
    }

    /// The codec for a chunk when `behind` chunks of a ring of `slots`
    /// wait to be drained: zstd while the drainer keeps up, LZ4 once it
    /// falls behind by an eighth of the ring, storing past half (the
    /// thread spills when it catches up with the drainer).
    pub(super) fn codec(&self, behind: u64, slots: u64) -> Codec {
        if self.haste {
            let [_, lz4, stored] = self.counts;
            return if lz4 > stored {
                Codec::Stored
            } else {
                Codec::Lz4
            };
        }
        if behind * 2 > slots {
            Codec::Stored
        } else if self.adaptive && behind * 8 > slots {
            Codec::Lz4
        } else {
            self.keeping_up
        }
    }

    /// The frame that holds chunk `k`, whose bytes are `data`.
    pub(super) fn frame(&mut self, codec: Codec, k: u64, data: &[u8]) -> std::io::Result<&[u8]> {
        let body = &mut self.frame[FRAME_HEAD..];
        let packed = match codec {
            Codec::Zstd => self.zstd.compress_to_buffer(data, body)?,
            Codec::Lz4 => {
                lz4_flex::block::compress_into(data, body).map_err(std::io::Error::other)?
            }
            Codec::Stored => {
                body[..data.len()].copy_from_slice(data);
                data.len()
            }
        };
        let magic = codec.magic();
        self.counts[codec as usize] += 1;
        let crc = crc32fast::hash(&self.frame[FRAME_HEAD..FRAME_HEAD + packed]);
        let head = &mut self.frame[..FRAME_HEAD];
        head[0..4].copy_from_slice(&magic.to_le_bytes());
        head[4..8].copy_from_slice(&(data.len() as u32).to_le_bytes());
        head[8..16].copy_from_slice(&k.to_le_bytes());
        head[16..20].copy_from_slice(&(packed as u32).to_le_bytes());
        head[20..24].copy_from_slice(&crc.to_le_bytes());
        Ok(&self.frame[..FRAME_HEAD + packed])
    }

    /// With `FTAIL_DRAIN_STATS` set: how many chunks went each way and
    /// the drainer's CPU time, on standard error (for benchmarks).
    pub(super) fn report(&self) {
        if std::env::var_os("FTAIL_DRAIN_STATS").is_none() {
            return;
        }
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage fills the rusage it is given.
        let usage = unsafe {
            libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr());
            usage.assume_init()
        };
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let [z, l, s] = self.counts;
        crate::out::stderr(&format!(
            "ftail: drainer: {z} chunks zstd, {l} lz4, {s} stored; {:.3} s user, {:.3} s system",
            secs(usage.ru_utime),
            secs(usage.ru_stime)
        ));
    }
}

//! A drained ring's stream (`ftail record --drain`, `ftail_abi::trace::drain`):
//! the chunks `ftail record` compressed into `KEY-TID.drained`, then
//! those still in the ring (or written after it) in `KEY-TID.events`,
//! read a chunk at a time. A chunk is taken from the drained file when it
//! is there, else from the event file, and the drained file is looked at
//! again when the event file says the chunk was drained meanwhile (its
//! slot may then be zeroed or written over): a trace read while it is
//! drained reads whole.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ftail_abi::trace::drain::{
    chunk_at, Control, CHUNK, CONTROL_AT, DRAINED_MAGIC, DRAINED_SUFFIX, FRAME_HEAD, FRAME_LZ4,
    FRAME_MAGIC, FRAME_STORED, NO_SPILL,
};

/// Bytes of a drained file's header: the magic, then 8 bytes of zero.
pub const DRAINED_HEADER: u64 = 16;

/// The most bytes a chunk's compressed form may take (zstd's and LZ4's
/// bounds for a chunk that does not compress, with room to spare).
const MAX_FRAME: u64 = CHUNK + (CHUNK >> 7) + 1024;

/// The drained file that goes with the event file `events`.
pub fn drained_path(events: &Path) -> PathBuf {
    let stem = events
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(ftail_abi::trace::EVENTS_SUFFIX))
        .unwrap_or("");
    events.with_file_name(format!("{stem}{DRAINED_SUFFIX}"))
}

/// One frame of a drained file: the chunk's number and bytes.
pub struct Frame {
    /// The chunk's number in the thread's stream.
    pub chunk: u64,
    /// The chunk's bytes.
    pub data: Vec<u8>,
}

/// Reads the frame at `at` of `file` (named `path` in errors): None when
/// the file ends before the frame does (not written yet, or cut short by
/// a drainer that was killed); an error when it is damaged.
pub fn read_frame(file: &File, path: &Path, at: u64) -> std::io::Result<Option<(Frame, u64)>> {
    let damaged = |why: String| {
        std::io::Error::other(format!(
            "{}: the frame at byte {at} is damaged: {why}",
            path.display()
        ))
    };
    let mut head = [0u8; FRAME_HEAD];
    if !read_whole(file, &mut head, at)? {
        return Ok(None);
    }
    let u32_at = |o: usize| u32::from_le_bytes(head[o..o + 4].try_into().unwrap_or_default());
    let chunk = u64::from_le_bytes(head[8..16].try_into().unwrap_or_default());
    let (raw, packed, crc) = (u32_at(4), u32_at(16), u32_at(20));
    let magic = u32_at(0);
    if ![FRAME_MAGIC, FRAME_STORED, FRAME_LZ4].contains(&magic) {
        return Err(damaged("no frame starts there".into()));
    }
    if u64::from(raw) > CHUNK || u64::from(packed) > MAX_FRAME {
        return Err(damaged(format!(
            "it says {raw} bytes in {packed}, more than a chunk"
        )));
    }
    let mut body = vec![0u8; packed as usize];
    if !read_whole(file, &mut body, at + FRAME_HEAD as u64)? {
        return Ok(None);
    }
    if crc32fast::hash(&body) != crc {
        return Err(damaged(format!("chunk {chunk} fails its checksum")));
    }
    let data = match magic {
        FRAME_STORED => body,
        FRAME_LZ4 => {
            let mut data = vec![0u8; raw as usize];
            let n = lz4_flex::block::decompress_into(&body, &mut data)
                .map_err(|e| damaged(format!("chunk {chunk} does not decompress: {e}")))?;
            data.truncate(n);
            data
        }
        _ => zstd::bulk::decompress(&body, raw as usize)
            .map_err(|e| damaged(format!("chunk {chunk} does not decompress: {e}")))?,
    };
    if data.len() != raw as usize {
        return Err(damaged(format!(
            "chunk {chunk} decompresses to {} bytes, not {raw}",
            data.len()
        )));
    }
    Ok(Some((
        Frame { chunk, data },
        at + FRAME_HEAD as u64 + u64::from(packed),
    )))
}

/// Fills `buf` from `at`; false when the file ends first.
fn read_whole(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<bool> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => return Ok(false),
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The control words of a drained ring's event file.
pub fn read_control(file: &File) -> std::io::Result<Control> {
    let mut b = [0u8; std::mem::size_of::<Control>()];
    if !read_whole(file, &mut b, CONTROL_AT)? {
        return Err(std::io::Error::other("the header's page is cut short"));
    }
    let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default());
    Ok(Control {
        written: w(0),
        drained: w(1),
        freed: w(2),
        spill_from: w(3),
        heartbeat: w(4),
        finished: w(5),
        ended: w(6),
    })
}

/// A drained ring's stream of records, as one reader.
pub struct Stream {
    events: File,
    ring: u64,
    drained: Option<File>,
    drained_path: PathBuf,
    /// Where the next frame of the drained file starts.
    frame_at: u64,
    /// The number of the next chunk.
    next: u64,
    chunk: Vec<u8>,
    at: usize,
    ended: bool,
}

impl Stream {
    /// The stream of the event file `path` (open as `events`), whose
    /// drained ring has `ring` bytes.
    ///
    /// # Errors
    ///
    /// The drained file is there but is not one.
    pub fn open(path: &Path, events: File, ring: u64) -> Result<Stream, String> {
        let drained_path = drained_path(path);
        let drained = match File::open(&drained_path) {
            Ok(f) => {
                let mut magic = [0u8; DRAINED_HEADER as usize];
                let whole = read_whole(&f, &mut magic, 0).unwrap_or(false);
                if whole && magic[..8] != DRAINED_MAGIC {
                    return Err(format!(
                        "{}: not an ftail drained file (bad magic)",
                        drained_path.display()
                    ));
                }
                // A file cut before its header holds no frame yet.
                whole.then_some(f)
            }
            Err(_) => None,
        };
        if ring < 2 * CHUNK || !ring.is_multiple_of(CHUNK) {
            return Err(format!("a drained ring of {ring} bytes, not whole chunks"));
        }
        Ok(Stream {
            events,
            ring,
            drained,
            drained_path,
            frame_at: DRAINED_HEADER,
            next: 0,
            chunk: Vec::new(),
            at: 0,
            ended: false,
        })
    }

    /// The next chunk from the drained file, if it is there.
    fn drained_chunk(&mut self) -> std::io::Result<bool> {
        let Some(file) = &self.drained else {
            return Ok(false);
        };
        let Some((frame, after)) = read_frame(file, &self.drained_path, self.frame_at)? else {
            return Ok(false);
        };
        if frame.chunk != self.next {
            return Err(std::io::Error::other(format!(
                "{}: the frame at byte {} holds chunk {}, where chunk {} was due",
                self.drained_path.display(),
                self.frame_at,
                frame.chunk,
                self.next
            )));
        }
        self.frame_at = after;
        self.chunk = frame.data;
        Ok(true)
    }

    /// Loads the next chunk; false at the end of the stream.
    fn load(&mut self) -> std::io::Result<bool> {
        if self.drained_chunk()? {
            return self.took();
        }
        let missing = |s: &Stream| {
            std::io::Error::other(format!(
                "{}: chunk {} was drained but is not there",
                s.drained_path.display(),
                s.next
            ))
        };
        let control = read_control(&self.events)?;
        if control.drained > self.next {
            // Drained since the look above (reopened: it may have been
            // made meanwhile).
            if self.drained.is_none() {
                self.drained = File::open(&self.drained_path).ok();
            }
            return if self.drained_chunk()? {
                self.took()
            } else {
                Err(missing(self))
            };
        }
        if control.spill_from == NO_SPILL && self.next > control.written {
            return Ok(false);
        }
        let at = chunk_at(self.next, self.ring, control.spill_from);
        let mut data = vec![0u8; CHUNK as usize];
        let mut n = 0;
        while n < data.len() {
            match self.events.read_at(&mut data[n..], at + n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        data.truncate(n);
        if read_control(&self.events)?.drained > self.next {
            // Drained while it was read: its slot may be zeroed now.
            if self.drained.is_none() {
                self.drained = File::open(&self.drained_path).ok();
            }
            return if self.drained_chunk()? {
                self.took()
            } else {
                Err(missing(self))
            };
        }
        if data.is_empty() {
            return Ok(false);
        }
        self.chunk = data;
        self.took()
    }

    fn took(&mut self) -> std::io::Result<bool> {
        self.next += 1;
        self.at = 0;
        Ok(true)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.ended || !self.load()? {
                self.ended = true;
                return Ok(0);
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Bytes of records a drained ring's stream holds, found from the frames'
/// heads and the chunks left in the event file (whole chunks: the last
/// may be partly unwritten).
///
/// # Errors
///
/// A file cannot be read.
pub fn stream_bytes(path: &Path, events: &File, ring: u64) -> std::io::Result<u64> {
    let mut total = 0;
    let mut chunks = 0;
    if let Ok(file) = File::open(drained_path(path)) {
        let mut at = DRAINED_HEADER;
        let mut head = [0u8; FRAME_HEAD];
        while read_whole(&file, &mut head, at)? {
            let raw = u32::from_le_bytes(head[4..8].try_into().unwrap_or_default());
            let packed = u32::from_le_bytes(head[16..20].try_into().unwrap_or_default());
            total += u64::from(raw);
            chunks += 1;
            at += FRAME_HEAD as u64 + u64::from(packed);
        }
    }
    let control = read_control(events)?;
    if control.finished != 0 {
        return Ok(total);
    }
    let left = if control.spill_from == NO_SPILL {
        control.written.saturating_add(1).saturating_sub(chunks) * CHUNK
    } else {
        let spilled = events
            .metadata()?
            .len()
            .saturating_sub(ftail_abi::trace::drain::RING_AT + ring);
        let spilled_drained = chunks.saturating_sub(control.spill_from) * CHUNK;
        control.spill_from.saturating_sub(chunks) * CHUNK + spilled.saturating_sub(spilled_drained)
    };
    Ok(total + left)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(magic: u32, chunk: u64, data: &[u8]) -> Vec<u8> {
        let body = match magic {
            FRAME_STORED => data.to_vec(),
            FRAME_LZ4 => {
                let mut b = vec![0u8; lz4_flex::block::get_maximum_output_size(data.len())];
                let n = lz4_flex::block::compress_into(data, &mut b).unwrap();
                b.truncate(n);
                b
            }
            _ => zstd::bulk::compress(data, 1).unwrap(),
        };
        let mut f = Vec::new();
        f.extend_from_slice(&magic.to_le_bytes());
        f.extend_from_slice(&(data.len() as u32).to_le_bytes());
        f.extend_from_slice(&chunk.to_le_bytes());
        f.extend_from_slice(&(body.len() as u32).to_le_bytes());
        f.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        f.extend_from_slice(&body);
        f
    }

    #[test]
    fn stored_and_compressed_frames_read_alike_and_a_cut_one_is_not_there_yet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1-1.drained");
        let data: Vec<u8> = (0..5000u32).flat_map(|i| (i % 7).to_le_bytes()).collect();
        let mut bytes = frame(FRAME_MAGIC, 0, &data);
        let second = bytes.len() as u64;
        bytes.extend(frame(FRAME_STORED, 1, &data));
        let whole = bytes.len();
        bytes.extend(&frame(FRAME_MAGIC, 2, &data)[..30]);
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        let (a, next) = read_frame(&file, &path, 0).unwrap().unwrap();
        assert_eq!((a.chunk, next, &a.data), (0, second, &data));
        let (b, next) = read_frame(&file, &path, second).unwrap().unwrap();
        assert_eq!((b.chunk, next as usize, &b.data), (1, whole, &data));
        assert!(read_frame(&file, &path, next).unwrap().is_none());
    }

    #[test]
    fn lz4_frames_read_as_their_chunks_and_a_bad_one_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1-1.drained");
        let data: Vec<u8> = (0..16000u32).flat_map(|i| (i % 13).to_le_bytes()).collect();
        let mut bytes = frame(FRAME_LZ4, 0, &data);
        let second = bytes.len() as u64;
        // A block that claims more bytes than the chunk holds.
        let mut bad = frame(FRAME_LZ4, 1, &data);
        let n = u32::from_le_bytes(bad[4..8].try_into().unwrap());
        bad[4..8].copy_from_slice(&(n / 2).to_le_bytes());
        bytes.extend(bad);
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        let (a, _) = read_frame(&file, &path, 0).unwrap().unwrap();
        assert_eq!((a.chunk, &a.data), (0, &data));
        let e = read_frame(&file, &path, second).err().unwrap().to_string();
        assert!(
            e.starts_with(&format!(
                "{}: the frame at byte {second} is damaged: chunk 1 does not decompress",
                path.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn a_frame_that_fails_its_checksum_is_damage_named_by_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1-1.drained");
        let mut bytes = frame(FRAME_STORED, 0, &[1, 2, 3, 4]);
        bytes[FRAME_HEAD + 1] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        let e = read_frame(&file, &path, 0).err().unwrap().to_string();
        assert_eq!(
            e,
            format!(
                "{}: the frame at byte 0 is damaged: chunk 0 fails its checksum",
                path.display()
            )
        );
    }
}

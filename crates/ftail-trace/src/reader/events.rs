//! One thread's events, streamed from its event file: a block at a time,
//! in order, up to the first slot the runtime never wrote (its time is 0)
//! or the first damage. Memory stays one block whatever the file's size
//! (event files are sparse and may be gigabytes of unwritten room).

use std::io::Read;
use std::path::{Path, PathBuf};

use ftail_abi::trace::{Event, EventFileHeader, EVENTS_MAGIC, TRACE_VERSION};

/// Bytes read at a time.
const BLOCK: usize = 256 << 10;

/// Event bytes read so far by this process, over every thread's file: what
/// a progress display compares with the trace's size.
static BYTES_READ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Event bytes read so far by this process (for progress displays).
pub fn bytes_read() -> u64 {
    BYTES_READ.load(std::sync::atomic::Ordering::Relaxed)
}

/// The header fields of an event file that a reader uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// Thread name when recording began.
    pub name: String,
    /// Events the runtime had to drop.
    pub lost: u64,
    /// Why the thread stopped recording early, if it did
    /// (`STOPPED_BUFFER_FULL`, `STOPPED_DISK_FULL`).
    pub stopped: u64,
    /// Where the events start.
    pub header_size: u64,
}

/// Reads and checks an event file's header. Errors say what is wrong.
pub fn read_header(file: &mut impl Read) -> Result<Header, String> {
    let hsize = std::mem::size_of::<EventFileHeader>();
    let mut h = vec![0u8; hsize];
    if file.read_exact(&mut h).is_err() || h[..8] != EVENTS_MAGIC {
        return Err("not an ftail event file (bad magic)".into());
    }
    let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().unwrap_or_default());
    let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap_or_default());
    let version = u32_at(std::mem::offset_of!(EventFileHeader, version));
    if version != TRACE_VERSION {
        return Err(format!(
            "event file version {version}, this ftail reads version {TRACE_VERSION} \
             (record the trace again with this ftail)"
        ));
    }
    let name_at = std::mem::offset_of!(EventFileHeader, name);
    Ok(Header {
        name: String::from_utf8_lossy(&h[name_at..name_at + 16])
            .trim_end_matches('\0')
            .to_string(),
        lost: u64_at(std::mem::offset_of!(EventFileHeader, lost)),
        stopped: u64_at(std::mem::offset_of!(EventFileHeader, stopped)),
        header_size: u64::from(u32_at(std::mem::offset_of!(EventFileHeader, header_size)))
            .max(hsize as u64),
    })
}

/// A thread's events in order (an iterator); [`Events::damage`] says,
/// once it has ended, whether it stopped at damage rather than at the end
/// of what was written.
pub struct Events {
    path: PathBuf,
    file: Option<std::fs::File>,
    buf: Vec<u8>,
    /// Next byte of `buf` to decode, and how many it holds.
    at: usize,
    len: usize,
    /// File offset of `buf[0]`.
    offset: u64,
    count: u64,
    damage: Option<String>,
}

impl Events {
    /// Opens `path` and reads its header.
    ///
    /// # Errors
    ///
    /// A message naming the file when it cannot be opened or its header is
    /// not an event file's of this version.
    pub fn open(path: &Path) -> Result<(Header, Events), String> {
        let named = |e: String| format!("{}: {e}", path.display());
        let mut file = std::fs::File::open(path).map_err(|e| named(e.to_string()))?;
        let header = read_header(&mut file).map_err(named)?;
        let skip = header.header_size - std::mem::size_of::<EventFileHeader>() as u64;
        std::io::copy(&mut (&mut file).take(skip), &mut std::io::sink())
            .map_err(|e| named(e.to_string()))?;
        let events = Events {
            path: path.to_path_buf(),
            file: Some(file),
            buf: vec![0; BLOCK],
            at: 0,
            len: 0,
            offset: header.header_size,
            count: 0,
            damage: None,
        };
        Ok((header, events))
    }

    /// Where reading stopped early, as one line naming the file and the
    /// offset, if it did.
    pub fn damage(&self) -> Option<&str> {
        self.damage.as_deref()
    }

    /// Events read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    fn refill(&mut self) -> bool {
        let Some(file) = self.file.as_mut() else {
            return false;
        };
        self.offset += self.at as u64;
        let rest = self.len - self.at;
        self.buf.copy_within(self.at..self.len, 0);
        let mut n = rest;
        while n < self.buf.len() {
            match file.read(&mut self.buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.stop(Some(format!("read error: {e}")));
                    break;
                }
            }
        }
        BYTES_READ.fetch_add((n - rest) as u64, std::sync::atomic::Ordering::Relaxed);
        self.at = 0;
        self.len = n;
        if n < self.buf.len() {
            self.file = None; // end of file: nothing more to read
        }
        n >= 16
    }

    fn stop(&mut self, why: Option<String>) {
        self.file = None;
        self.len = self.at;
        if let Some(why) = why {
            self.damage = Some(format!(
                "{}: event {} at offset {}: {why}",
                self.path.display(),
                self.count,
                self.offset + self.at as u64
            ));
        }
    }
}

impl Iterator for Events {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        if self.len - self.at < 16 && !self.refill() {
            return None;
        }
        let b = &self.buf[self.at..self.at + 16];
        let ev = Event {
            tsc: u64::from_le_bytes(b[..8].try_into().unwrap_or_default()),
            word: u64::from_le_bytes(b[8..].try_into().unwrap_or_default()),
        };
        if ev.tsc == 0 {
            self.stop(None); // the first slot never written
            return None;
        }
        if ev.kind().is_none() {
            self.stop(Some(format!("unknown kind {}", ev.word >> 56)));
            return None;
        }
        self.at += 16;
        self.count += 1;
        Some(ev)
    }
}

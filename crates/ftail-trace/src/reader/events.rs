//! One thread's events, streamed from its event file: a block at a time,
//! in order, up to the first slot the runtime never wrote (its time is 0)
//! or the first damage. Memory stays one block whatever the file's size
//! (event files are sparse and may be gigabytes of unwritten room).
//!
//! A ring (`ftail record --ring`) that went round is read from its oldest
//! event, the one with the earliest time, to its newest, and starts with
//! an `Earlier` event (at its first event's time) for each function
//! already running when its window began: those whose close is in the
//! window without their entry, found in a first pass over the ring
//! (every close carries its frame's entry address), and those open
//! throughout.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use ftail_abi::trace::{
    compact, Event, EventFileHeader, EventKind, ADDR_MASK, EVENTS_HEADER_V5_SIZE, EVENTS_MAGIC,
    FORMAT_COMPACT, FORMAT_WIDE, KIND_SHIFT, TRACE_VERSION,
};

/// Bytes read at a time.
const BLOCK: usize = 256 << 10;

/// Where a thread's records come from: its event file, or a drained
/// ring's stream.
enum Source {
    File(std::fs::File),
    Drained(Box<super::drained::Stream>),
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Source::File(f) => f.read(buf),
            Source::Drained(d) => d.read(buf),
        }
    }
}

impl std::io::Seek for Source {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        match self {
            Source::File(f) => f.seek(to),
            Source::Drained(_) => Err(std::io::Error::other("a drained ring is read in order")),
        }
    }
}

/// Event bytes read so far by this process, over every thread's file: what
/// a progress display compares with the trace's size.
static BYTES_READ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Event bytes read so far by this process (for progress displays).
pub fn bytes_read() -> u64 {
    BYTES_READ.load(std::sync::atomic::Ordering::Relaxed)
}

/// How many bytes of records an event file holds, found without reading
/// them: a ring's whole ring once it went round, else up to its last
/// non-zero word (the runtime grows a file ahead of what its thread has
/// written, and what is not written yet is zero). Written records never
/// hold [`PROBE`] bytes of zeros in a row, so a binary search over
/// blocks finds the end in a few reads, however large the file and
/// however much room lies beyond what was written.
///
/// # Errors
///
/// The file cannot be read.
pub fn written_bytes(path: &Path, header: &Header) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    if header.ring != 0 && header.laps > 0 {
        return Ok(header.ring);
    }
    let file = std::fs::File::open(path)?;
    if header.drain != 0 {
        return super::drained::stream_bytes(path, &file, header.drain);
    }
    let start = header.header_size;
    let mut end = file.metadata()?.len();
    if header.ring != 0 {
        // The ring's trace stack follows it.
        end = end.min(start + header.ring);
    }
    // Records are whole 4-byte words from `start`.
    let end = start + (end.saturating_sub(start) & !3);
    let mut buf = vec![0u8; 2 * PROBE as usize];
    // The end of the last non-zero word in [from, to), if any.
    let mut last_word = |from: u64, to: u64| -> std::io::Result<Option<u64>> {
        let block = &mut buf[..(to - from) as usize];
        file.read_exact_at(block, from)?;
        Ok(block
            .chunks_exact(4)
            .rposition(|w| w != [0; 4])
            .map(|i| from + 4 * (i as u64 + 1)))
    };
    // The block at `lo` holds a record (or `lo` is the start); the one
    // at `hi` holds none (or `hi` is the end).
    let (mut lo, mut hi) = (start, end);
    while hi - lo > PROBE {
        let mid = lo + (((hi - lo) / 2) & !3);
        if last_word(mid, end.min(mid + PROBE))?.is_some() {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let to = end.min(hi + PROBE);
    Ok(last_word(lo, to)?.map_or(0, |e| e - start))
}

/// Bytes [`written_bytes`] reads at a time: more than written records
/// can hold of zeros in a row.
const PROBE: u64 = 16 << 10;

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
    /// Bytes of the ring when the file is one (0: it is not).
    pub ring: u64,
    /// How many times the ring went round.
    pub laps: u64,
    /// For a ring: one more than the frames open at its end, when known.
    pub open_at_end: u64,
    /// `FORMAT_WIDE` or `FORMAT_COMPACT`.
    pub format: u64,
    /// Exits written of functions entered before tracing began (0 in
    /// files from before the field).
    pub before_tracing: u64,
    /// When tracing was switched on before the file was made (0:
    /// unknown).
    pub traced_since: u64,
    /// Bytes of the file's drained ring (0: none; `super::drained`).
    pub drain: u64,
    /// When tracing was last switched on again while the file existed
    /// (0: never).
    pub rejoined: u64,
    /// Bytes of the header read.
    read: u64,
}

/// Bytes of records the event file `path` holds, whatever its format (a
/// drained ring's event file is one page once drained): what
/// [`written_bytes`] finds after its header; `None` if it cannot be read.
pub fn record_bytes(path: &Path) -> Option<u64> {
    let header = read_header(&mut std::fs::File::open(path).ok()?).ok()?;
    written_bytes(path, &header).ok()
}

/// Reads and checks an event file's header. Errors say what is wrong.
pub fn read_header(file: &mut impl Read) -> Result<Header, String> {
    let hsize = EVENTS_HEADER_V5_SIZE;
    let mut h = vec![0u8; std::mem::size_of::<EventFileHeader>()];
    if file.read_exact(&mut h[..hsize]).is_err() || h[..8] != EVENTS_MAGIC {
        return Err("not an ftail event file (bad magic)".into());
    }
    let declared = u32::from_le_bytes(
        h[std::mem::offset_of!(EventFileHeader, header_size)..][..4]
            .try_into()
            .unwrap_or_default(),
    ) as usize;
    // A header as long as this version's has the fields added to it;
    // an older one stops before them (read as 0).
    let read = if declared >= h.len() {
        if file.read_exact(&mut h[hsize..]).is_err() {
            return Err("the event file's header is cut short".into());
        }
        h.len()
    } else {
        hsize
    };
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
        // The program names its threads as it likes: printable here, once.
        name: crate::untrusted::printable::printable(
            String::from_utf8_lossy(&h[name_at..name_at + 16]).trim_end_matches('\0'),
        )
        .into_owned(),
        lost: u64_at(std::mem::offset_of!(EventFileHeader, lost)),
        stopped: u64_at(std::mem::offset_of!(EventFileHeader, stopped)),
        header_size: u64::from(u32_at(std::mem::offset_of!(EventFileHeader, header_size)))
            .max(hsize as u64),
        ring: u64_at(std::mem::offset_of!(EventFileHeader, ring)) / 16 * 16,
        laps: u64_at(std::mem::offset_of!(EventFileHeader, laps)),
        open_at_end: u64_at(std::mem::offset_of!(EventFileHeader, open_at_end)),
        format: u64_at(std::mem::offset_of!(EventFileHeader, format)),
        before_tracing: u64_at(std::mem::offset_of!(EventFileHeader, before_tracing)),
        traced_since: u64_at(std::mem::offset_of!(EventFileHeader, traced_since)),
        drain: if read >= std::mem::size_of::<EventFileHeader>() {
            u64_at(std::mem::offset_of!(EventFileHeader, drain))
        } else {
            0
        },
        rejoined: u64_at(std::mem::offset_of!(EventFileHeader, rejoined)),
        read: read as u64,
    })
}

/// Refuses a header whose sizes the file's `len` bytes cannot hold: a
/// damaged or crafted one would otherwise have the reader go through
/// room that is not there (a ring of 64 GiB in a file of 1 MB).
fn check_sizes(header: &Header, len: u64) -> Result<(), String> {
    if header.header_size > len {
        return Err(format!(
            "the header says events start at byte {}, past the file's end ({len} bytes)",
            header.header_size
        ));
    }
    if header.ring > len - header.header_size {
        return Err(format!(
            "the header says the ring holds {} bytes, more than the file's {len} bytes",
            header.ring
        ));
    }
    Ok(())
}

/// What takes a thread's events one by one from [`Events::each_event`]:
/// a fold whose step the decoding loop inlines (its `event` is best
/// marked `#[inline(always)]`).
pub trait EventSink {
    /// The next event.
    fn event(&mut self, e: Event);
}

/// A thread's events in order (an iterator); [`Events::damage`] says,
/// once it has ended, whether it stopped at damage rather than at the end
/// of what was written.
pub struct Events {
    path: PathBuf,
    file: Option<Source>,
    buf: Vec<u8>,
    /// Next byte of `buf` to decode, and how many it holds.
    at: usize,
    len: usize,
    /// File offset of `buf[0]`.
    offset: u64,
    count: u64,
    damage: Option<String>,
    /// File offset where the current stretch of events ends (a ring is
    /// read in two), and where the next one starts and ends.
    stretch_end: u64,
    next_stretch: Option<(u64, u64)>,
    /// Events to yield before the file's (a ring's `Earlier` frames).
    pending: std::collections::VecDeque<Event>,
    /// Events to yield before the first of the file's at or after a time:
    /// the `Earlier` frames of the session tracing was last switched on
    /// again for ([`EventFileHeader::rejoined`]).
    later: Option<(u64, std::collections::VecDeque<Event>)>,
    /// The compact decoder, for a file of that format.
    compact: Option<compact::Decoder>,
    /// Bytes of records read (the file's events, however written).
    consumed: u64,
    /// A payload read and not yet given to the event it precedes.
    payload: Option<crate::values::Values>,
    /// Where payloads go once their event is read ([`Events::values`]).
    feed: std::sync::Arc<ValueFeed>,
}

/// Values recorded with events (`ftail record -A/-R`), handed from an
/// [`Events`] to whoever pairs its events ([`super::calls::Calls`]): each
/// with the index of the event it belongs to (an argument payload goes
/// with the entry it precedes, a return value with the close).
#[derive(Debug, Default)]
pub struct ValueFeed {
    waiting: std::sync::atomic::AtomicUsize,
    queue: std::sync::Mutex<std::collections::VecDeque<(u64, crate::values::Values)>>,
}

impl ValueFeed {
    fn put(&self, index: u64, v: crate::values::Values) {
        if let Ok(mut q) = self.queue.lock() {
            q.push_back((index, v));
            self.waiting
                .store(q.len(), std::sync::atomic::Ordering::Release);
        }
    }

    /// The values of event `index` (events counted from 0), if any;
    /// values of earlier events are dropped.
    #[inline]
    pub fn take(&self, index: u64) -> Option<crate::values::Values> {
        if self.waiting.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return None;
        }
        self.take_waiting(index)
    }

    fn take_waiting(&self, index: u64) -> Option<crate::values::Values> {
        let mut q = self.queue.lock().ok()?;
        let mut found = None;
        while let Some(&(i, _)) = q.front() {
            if i > index {
                break;
            }
            let (i, v) = q.pop_front()?;
            if i == index {
                found = Some(v);
            }
        }
        self.waiting
            .store(q.len(), std::sync::atomic::Ordering::Release);
        found
    }
}

impl Events {
    /// Opens `path` and reads its header.
    ///
    /// # Errors
    ///
    /// A message naming the file when it cannot be opened or its header is
    /// not an event file's of this version.
    pub fn open(path: &Path) -> Result<(Header, Events), String> {
        Self::open_scanning(path, true)
    }

    /// [`Events::open`]; `scan` false leaves out the frames that began
    /// before tracing (the scan that finds them reads the file this way).
    fn open_scanning(path: &Path, scan: bool) -> Result<(Header, Events), String> {
        let named = |e: String| format!("{}: {e}", path.display());
        let mut file = std::fs::File::open(path).map_err(|e| named(e.to_string()))?;
        let header = read_header(&mut file).map_err(named)?;
        let len = file.metadata().map_err(|e| named(e.to_string()))?.len();
        check_sizes(&header, len).map_err(named)?;
        let source = if header.drain != 0 {
            if header.format != FORMAT_COMPACT || header.ring != 0 {
                return Err(named(
                    "a drained ring that is not compact, or is a ring".into(),
                ));
            }
            Source::Drained(Box::new(super::drained::Stream::open(
                path,
                file,
                header.drain,
            )?))
        } else {
            let skip = header.header_size - header.read;
            std::io::copy(&mut (&mut file).take(skip), &mut std::io::sink())
                .map_err(|e| named(e.to_string()))?;
            Source::File(file)
        };
        let mut events = Events {
            path: path.to_path_buf(),
            file: Some(source),
            buf: vec![0; BLOCK],
            at: 0,
            len: 0,
            offset: header.header_size,
            count: 0,
            damage: None,
            stretch_end: u64::MAX,
            next_stretch: None,
            pending: std::collections::VecDeque::new(),
            later: None,
            compact: (header.format == FORMAT_COMPACT).then(compact::Decoder::default),
            consumed: 0,
            payload: None,
            feed: Default::default(),
        };
        if header.format != FORMAT_COMPACT && header.format != FORMAT_WIDE {
            return Err(named(format!("unknown event format {}", header.format)));
        }
        if header.ring != 0 {
            let start = header.header_size;
            let end = start + header.ring;
            events.stretch_end = end;
            if header.laps > 0 {
                let head = oldest(path, start, end).map_err(named)?;
                if head != start {
                    use std::io::{Seek, SeekFrom};
                    if let Some(f) = events.file.as_mut() {
                        f.seek(SeekFrom::Start(head))
                            .map_err(|e| named(e.to_string()))?;
                    }
                    events.offset = head;
                    events.stretch_end = end;
                    events.next_stretch = Some((start, head));
                }
                events.pending = earlier(path, &header, head).map_err(named)?;
            } else if scan && header.before_tracing > 0 {
                let start = header.header_size;
                events.pending = earlier(path, &header, start).map_err(named)?;
                since_tracing(&mut events.pending, header.traced_since);
            }
        } else if scan && header.before_tracing > 0 {
            let (first, later) = before_tracing(path)?;
            events.pending = first;
            events.later = later;
        }
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

    /// Bytes of the file's records read so far (for bytes per event).
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Where the values recorded with the events go as they are read
    /// (`ftail record -A/-R`); give it to [`super::calls::Calls::values`].
    pub fn values(&self) -> std::sync::Arc<ValueFeed> {
        self.feed.clone()
    }

    fn refill(&mut self) -> bool {
        let Some(file) = self.file.as_mut() else {
            return false;
        };
        self.offset += self.at as u64;
        let mut rest = self.len - self.at;
        if self.offset + rest as u64 >= self.stretch_end {
            // The end of a ring's first stretch: on to its second.
            match self.next_stretch.take() {
                Some((start, end)) => {
                    use std::io::{Seek, SeekFrom};
                    if let Err(e) = file.seek(SeekFrom::Start(start)) {
                        self.stop(Some(format!("seek error: {e}")));
                        return false;
                    }
                    self.offset = start;
                    self.stretch_end = end;
                    self.at = 0;
                    self.len = 0;
                    rest = 0;
                }
                None => {
                    self.file = None;
                    return false;
                }
            }
        }
        let Some(file) = self.file.as_mut() else {
            return false;
        };
        self.buf.copy_within(self.at..self.len, 0);
        let room = (self.stretch_end - self.offset)
            .min(self.buf.len() as u64)
            .max(rest as u64) as usize;
        let mut n = rest;
        while n < room {
            match file.read(&mut self.buf[n..room]) {
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
        if n < room {
            self.file = None; // end of file: nothing more to read
        }
        if n < 16 && self.next_stretch.is_some() && self.file.is_some() {
            return self.refill();
        }
        n > rest
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
        if !self.pending.is_empty() {
            return self.pending.pop_front();
        }
        let e = self.next_read()?;
        match self.later.take() {
            Some((since, mut later)) if e.tsc >= since => {
                later.push_back(e);
                self.pending = later;
                self.pending.pop_front()
            }
            kept => {
                self.later = kept;
                Some(e)
            }
        }
    }
}

impl Events {
    /// The file's next event.
    fn next_read(&mut self) -> Option<Event> {
        if self.compact.is_some() {
            return self.next_compact();
        }
        if self.len - self.at < 16 {
            self.refill();
            if self.len - self.at < 16 {
                return None;
            }
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
        if ev.kind().is_none() || ev.kind() == Some(EventKind::Earlier) {
            self.stop(Some(format!("unknown kind {}", ev.word >> 56)));
            return None;
        }
        self.at += 16;
        self.count += 1;
        self.consumed += 16;
        Some(ev)
    }
}

impl Events {
    /// Hands each event to `each`, in order: what iterating yields, but
    /// the entries, closes and time records of a compact file decoded in
    /// one loop over a block rather than a call and an `Option` per
    /// event (a fold over a whole thread spends most of its time here).
    /// Ends early once `stop` is set (looked at every few thousand
    /// events).
    pub fn each_event(&mut self, stop: &AtomicBool, each: &mut impl EventSink) {
        while let Some(e) = self.pending.pop_front() {
            each.event(e);
        }
        // A wide file's events one by one, the stop flag looked at every
        // 4096; a compact file's in runs, each ended by a record that is
        // read the general way.
        let batch = if self.compact.is_some() { 1 } else { 4096 };
        while !stop.load(Ordering::Relaxed) {
            // Frames open when tracing was switched on again go before the
            // first event at that time: until they are placed, and while
            // they are handed on, events go the general way.
            if self.pending.is_empty() && self.later.is_none() {
                self.compact_run(each, self.len);
            }
            for _ in 0..batch {
                let Some(e) = self.next() else { return };
                each.event(e);
            }
        }
    }

    /// Appends the next events to `out`, up to `max` in all: what
    /// iterating yields, a compact file's decoded as
    /// [`Events::each_event`] decodes them, for a reader that pulls
    /// events (merging threads) rather than folding them. False when
    /// there are none left.
    pub fn next_events(&mut self, out: &mut Vec<Event>, max: usize) -> bool {
        struct Push<'a>(&'a mut Vec<Event>);
        impl EventSink for Push<'_> {
            #[inline(always)]
            fn event(&mut self, e: Event) {
                self.0.push(e);
            }
        }
        let had = out.len();
        while out.len() < max {
            let before = out.len();
            if self.pending.is_empty() && self.later.is_none() {
                // Records are 4 bytes or more: no more events than room.
                let end = self.len.min(self.at + (max - before) * 4);
                self.compact_run(&mut Push(out), end);
            }
            if out.len() == before {
                // A record of another kind, the end of the block, or
                // events to place before the file's: the general way.
                match self.next() {
                    Some(e) => out.push(e),
                    None => break,
                }
            }
        }
        out.len() > had
    }

    /// Decodes the entry, close and time records from `at` into `each`,
    /// up to `end` (at most the end of the block) or the first record of
    /// another kind, which [`Events::next_compact`] reads: the same
    /// events, times and counts.
    #[inline(always)]
    fn compact_run(&mut self, each: &mut impl EventSink, end: usize) {
        let Some(mut base) = self.compact.and_then(|d| d.base) else {
            return;
        };
        if self.payload.is_some() {
            // It goes with the next event, which the general way hands on.
            return;
        }
        let buf = &self.buf[..end];
        let start = self.at;
        let mut at = start;
        let mut events = 0u64;
        let word = |kind: EventKind| (kind as u64) << KIND_SHIFT;
        // Every record read here is whole: 8 bytes ahead are enough for
        // an entry or a close, a time record is checked for its 12.
        while at + 8 <= buf.len() {
            let r = u64::from_le_bytes(buf[at..at + 8].try_into().unwrap_or_default());
            let head = r as u32;
            let kind = match head & 7 {
                compact::TAG_ENTRY => {
                    let offset = (r >> 3) & (compact::ENTRY_SPAN - 1);
                    each.event(Event {
                        tsc: base.wrapping_add(offset).max(1),
                        word: word(EventKind::Entry) | ((r >> 17) & ADDR_MASK),
                    });
                    at += 8;
                    events += 1;
                    continue;
                }
                2 => EventKind::Exit,
                3 => EventKind::TailExit,
                4 => EventKind::Unwound,
                5 => EventKind::Truncated,
                6 => EventKind::Suspended,
                compact::TAG_EXT
                    if (head >> 3) & 31 == compact::SUB_TIME
                        && (head >> 8) & 0xff >= 3
                        && at + ((head >> 8) & 0xff) as usize * 4 <= buf.len() =>
                {
                    base = u64::from_le_bytes(buf[at + 4..at + 12].try_into().unwrap_or_default());
                    at += ((head >> 8) & 0xff) as usize * 4;
                    continue;
                }
                _ => break,
            };
            each.event(Event {
                tsc: base.wrapping_add(u64::from(head >> 3)).max(1),
                word: word(kind),
            });
            at += 4;
            events += 1;
        }
        if let Some(d) = self.compact.as_mut() {
            d.base = Some(base);
        }
        self.consumed += (at - start) as u64;
        self.count += events;
        self.at = at;
    }

    /// The next event of a compact file: records decoded until one is an
    /// event, the first unwritten word, or damage.
    fn next_compact(&mut self) -> Option<Event> {
        loop {
            let decoder = self.compact.as_mut()?;
            let (record, size) = decoder.next(&self.buf[self.at..self.len]);
            match record {
                compact::Record::Event(e) => {
                    self.at += size;
                    self.consumed += size as u64;
                    if let Some(v) = self.payload.take() {
                        // Kept only for a reader that asked for them: no
                        // one would take them out again.
                        if std::sync::Arc::strong_count(&self.feed) > 1 {
                            self.feed.put(self.count, v);
                        }
                    }
                    self.count += 1;
                    return Some(e);
                }
                compact::Record::Other => {
                    let record = &self.buf[self.at..self.at + size];
                    let sub = (u32::from_le_bytes([record[0], record[1], record[2], record[3]])
                        >> 3)
                        & 31;
                    if sub == compact::SUB_ARGS || sub == compact::SUB_RETVAL {
                        self.payload = crate::values::decode(record);
                    }
                    self.at += size;
                    self.consumed += size as u64;
                }
                compact::Record::End => {
                    self.stop(None);
                    return None;
                }
                compact::Record::Need(n) => {
                    let had = self.len - self.at;
                    if !self.refill() || self.len - self.at < n {
                        if self.len - self.at > 0 && had > 0 {
                            // A record cut short by the end of the file.
                            self.stop(Some("a record cut short by the end of the file".into()));
                        }
                        return None;
                    }
                }
                compact::Record::Bad(why) => {
                    self.stop(Some(why.to_string()));
                    return None;
                }
            }
        }
    }
}

/// A ring's events, slot by slot, from `from` to `to` (file offsets),
/// read a block at a time. Holes in the file (never written, all zero:
/// no event) are skipped, so the time spent is bounded by the data the
/// file really holds, not by the sizes its header claims.
fn ring_slots(
    path: &Path,
    from: u64,
    to: u64,
    mut each: impl FnMut(u64, Event),
) -> Result<(), String> {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; BLOCK];
    let mut at = from;
    while at < to {
        at = match next_data(&file, at) {
            // Past the last data: only holes, no event.
            None => break,
            Some(data) => from + (data.max(at) - from) / 16 * 16,
        };
        if at >= to {
            break;
        }
        file.seek(SeekFrom::Start(at)).map_err(|e| e.to_string())?;
        let want = ((to - at) as usize).min(BLOCK);
        let mut n = 0;
        while n < want {
            match file.read(&mut buf[n..want]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        if n < 16 {
            break;
        }
        for slot in buf[..n / 16 * 16].chunks_exact(16) {
            let e = Event {
                tsc: u64::from_le_bytes(slot[..8].try_into().unwrap_or_default()),
                word: u64::from_le_bytes(slot[8..].try_into().unwrap_or_default()),
            };
            each(at, e);
            at += 16;
        }
        if n < want {
            break;
        }
    }
    Ok(())
}

/// The first offset at or after `at` that holds data (`SEEK_DATA`),
/// `None` past the last; `at` itself where the filesystem cannot say.
fn next_data(file: &std::fs::File, at: u64) -> Option<u64> {
    match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(at)) {
        Ok(data) => Some(data),
        Err(rustix::io::Errno::NXIO) => None,
        Err(_) => Some(at),
    }
}

/// The file offset of a ring's oldest event: the slot with the earliest
/// time (the writer overwrites the oldest next).
fn oldest(path: &Path, start: u64, end: u64) -> Result<u64, String> {
    let (mut best, mut at) = (u64::MAX, start);
    ring_slots(path, start, end, |offset, e| {
        if e.tsc != 0 && e.tsc < best {
            best = e.tsc;
            at = offset;
        }
    })?;
    Ok(at)
}

/// The `Earlier` events a file that keeps every event starts with: one
/// per close found at depth 0 (the exit of a function entered before
/// tracing began), innermost last, at the time tracing was switched on
/// (or the first event's, when that is not known or later). Those of the
/// closes after tracing was last switched on again
/// ([`Header::rejoined`]) come second, with that time: they open where
/// the file's events reach it.
type BeforeTracing = (
    std::collections::VecDeque<Event>,
    Option<(u64, std::collections::VecDeque<Event>)>,
);

fn before_tracing(path: &Path) -> Result<BeforeTracing, String> {
    let (header, events) = Events::open_scanning(path, false)?;
    let (mut depth, mut first) = (0u64, 0u64);
    let (mut found, mut found_later) = (Vec::new(), Vec::new());
    let rejoined = header.rejoined;
    for e in events {
        if first == 0 {
            first = e.tsc;
        }
        match e.kind() {
            Some(k) if k.opens() => depth += 1,
            Some(_) if depth > 0 => depth -= 1,
            Some(_) if rejoined != 0 && e.tsc >= rejoined => found_later.push(e.addr()),
            Some(_) => found.push(e.addr()),
            None => {}
        }
    }
    let earlier = |found: Vec<u64>, tsc: u64| -> std::collections::VecDeque<Event> {
        let word = |addr: u64| ((EventKind::Earlier as u64) << KIND_SHIFT) | addr;
        found
            .into_iter()
            .rev()
            .map(|addr| Event {
                tsc,
                word: word(addr),
            })
            .collect()
    };
    let mut pending = earlier(found, first);
    since_tracing(&mut pending, header.traced_since);
    let later = (!found_later.is_empty()).then(|| (rejoined, earlier(found_later, rejoined)));
    Ok((pending, later))
}

/// Moves the start of frames that began before tracing back to when it
/// was switched on, `since` (0: unknown), when that is earlier.
fn since_tracing(pending: &mut std::collections::VecDeque<Event>, since: u64) {
    for e in pending.iter_mut() {
        if since != 0 && since < e.tsc {
            e.tsc = since;
        }
    }
}

/// The `Earlier` events a ring whose oldest event is at `head` starts
/// with, outermost first, at the window's first time: the frames open
/// all through the window, the outermost of the trace stack kept after
/// the ring (when the header says how deep it was at the end), then one
/// per close found at depth 0 in the window, innermost last.
fn earlier(
    path: &Path,
    header: &Header,
    head: u64,
) -> Result<std::collections::VecDeque<Event>, String> {
    let (start, end) = (header.header_size, header.header_size + header.ring);
    let (mut depth, mut opens, mut closes) = (0u64, 0u64, 0u64);
    let mut first = 0u64;
    let mut found = Vec::new();
    let mut visit = |_: u64, e: Event| {
        if e.tsc == 0 {
            return;
        }
        if first == 0 {
            first = e.tsc;
        }
        match e.kind() {
            Some(k) if k.opens() => {
                opens += 1;
                depth += 1;
            }
            Some(_) => {
                closes += 1;
                if depth > 0 {
                    depth -= 1;
                } else {
                    found.push(e.addr());
                }
            }
            None => {}
        }
    };
    ring_slots(path, head, end, &mut visit)?;
    ring_slots(path, start, head, &mut visit)?;
    let mut outer = Vec::new();
    if header.open_at_end > 0 {
        let at_end = header.open_at_end - 1;
        let at_start = (at_end + closes).saturating_sub(opens);
        let through = at_start.saturating_sub(found.len() as u64).min(at_end);
        // A damaged count reads no further than the frames really kept:
        // the trace stack ends at its first empty slot (the rest of its
        // reserve was never written).
        let mut kept = true;
        ring_slots(
            path,
            end,
            end.saturating_add(through.saturating_mul(16)),
            |_, slot| {
                let addr = slot.word & ftail_abi::trace::ADDR_MASK;
                kept &= addr != 0;
                if kept {
                    outer.push(addr);
                }
            },
        )?;
    }
    let word = |addr: u64| ((EventKind::Earlier as u64) << KIND_SHIFT) | addr;
    Ok(outer
        .into_iter()
        .chain(found.into_iter().rev())
        .map(|addr| Event {
            tsc: first,
            word: word(addr),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(tsc: u64, kind: EventKind, addr: u64) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&tsc.to_le_bytes());
        b[8..].copy_from_slice(&(((kind as u64) << KIND_SHIFT) | addr).to_le_bytes());
        b
    }

    /// A wide event file whose header is `size` bytes, saying it holds
    /// `before` exits of frames begun before tracing, switched on at
    /// `since`.
    fn wide_file(size: usize, before: u64, since: u64, events: &[[u8; 16]]) -> Vec<u8> {
        let mut v = vec![0u8; size];
        let mut put = |at: usize, b: &[u8]| v[at..at + b.len()].copy_from_slice(b);
        put(0, &EVENTS_MAGIC);
        put(
            std::mem::offset_of!(EventFileHeader, version),
            &TRACE_VERSION.to_le_bytes(),
        );
        put(
            std::mem::offset_of!(EventFileHeader, header_size),
            &(size as u32).to_le_bytes(),
        );
        if size >= std::mem::size_of::<EventFileHeader>() {
            let at = std::mem::offset_of!(EventFileHeader, before_tracing);
            put(at, &before.to_le_bytes());
            let at = std::mem::offset_of!(EventFileHeader, traced_since);
            put(at, &since.to_le_bytes());
        }
        for e in events {
            v.extend_from_slice(e);
        }
        v
    }

    fn read_all(bytes: &[u8]) -> Vec<(EventKind, u64, u64)> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1-1.events");
        std::fs::write(&path, bytes).unwrap();
        let (_, events) = Events::open(&path).unwrap();
        events
            .map(|e| (e.kind().unwrap(), e.addr(), e.tsc))
            .collect()
    }

    /// A file written before the header had its fields on frames begun
    /// before tracing (96 bytes) reads as before.
    #[test]
    fn a_file_with_the_older_header_still_reads() {
        use EventKind::*;
        let events = [ev(10, Entry, 0x10), ev(20, Exit, 0x10)];
        let got = read_all(&wide_file(EVENTS_HEADER_V5_SIZE, 0, 0, &events));
        assert_eq!(got, [(Entry, 0x10, 10), (Exit, 0x10, 20)]);
    }

    /// Exits at depth 0 of a file that counts frames begun before
    /// tracing are paired with frames opened at its start, outermost
    /// first, at the time tracing was switched on.
    #[test]
    fn frames_begun_before_tracing_open_at_the_start() {
        use EventKind::*;
        let events = [
            ev(10, Exit, 0x20),
            ev(11, Entry, 0x30),
            ev(12, Exit, 0x30),
            ev(13, Exit, 0x10),
        ];
        let size = std::mem::size_of::<EventFileHeader>();
        let got = read_all(&wide_file(size, 2, 5, &events));
        assert_eq!(
            got,
            [
                (Earlier, 0x10, 5),
                (Earlier, 0x20, 5),
                (Exit, 0x20, 10),
                (Entry, 0x30, 11),
                (Exit, 0x30, 12),
                (Exit, 0x10, 13),
            ]
        );
        // Not counted in the header: read as written.
        assert_eq!(read_all(&wide_file(size, 0, 5, &events)).len(), 4);
    }

    /// A ring that went round is read from its oldest event, after the
    /// frames that were running when its window began: those open all
    /// through it (from the trace stack kept after the ring, as deep as
    /// the header says) and those whose close is in it.
    #[test]
    fn a_ring_reads_from_its_oldest_event_with_the_frames_before_it() {
        use EventKind::*;
        let (window, got) = ring_with_its_frames_before(3 + 1, 0);
        let mut want = vec![
            (Earlier, 0x10, 100),
            (Earlier, 0x20, 100),
            (Earlier, 0x30, 100),
        ];
        want.extend(
            window
                .iter()
                .enumerate()
                .map(|(j, &(k, a))| (k, a, 100 + j as u64)),
        );
        assert_eq!(got, want);
    }

    /// A damaged count of frames open at the end reads no more frames
    /// than the trace stack after the ring really kept (before: every
    /// slot of its reserve became a frame, 65,536 of them).
    #[test]
    fn a_damaged_open_count_adds_no_phantom_frames() {
        let (_, got) = ring_with_its_frames_before(65_536 + 1, 64);
        let earlier: Vec<u64> = got
            .iter()
            .filter(|e| e.0 == EventKind::Earlier)
            .map(|e| e.1)
            .collect();
        // The 3 frames kept, and the 2 whose close is in the window.
        assert_eq!(earlier, [0x10, 0x50, 0x70, 0x20, 0x30]);
    }

    type Window = [(EventKind, u64); 8];

    /// Reads a ring holding a window of events, with a trace stack of 3
    /// frames after it then `empty` never-written slots, whose header
    /// says `open_at_end`: the window, and what was read.
    fn ring_with_its_frames_before(
        open_at_end: u64,
        empty: usize,
    ) -> (Window, Vec<(EventKind, u64, u64)>) {
        use EventKind::*;
        let window = [
            (Exit, 0x30),
            (Entry, 0x40),
            (Exit, 0x40),
            (TailExit, 0x20),
            (Entry, 0x50),
            (Entry, 0x60),
            (Exit, 0x60),
            (Entry, 0x70),
        ];
        let hsize = std::mem::size_of::<EventFileHeader>();
        let mut file = vec![0u8; hsize];
        file[..8].copy_from_slice(&EVENTS_MAGIC);
        let mut put =
            |field: usize, v: u64| file[field..field + 8].copy_from_slice(&v.to_le_bytes());
        put(std::mem::offset_of!(EventFileHeader, ring), 8 * 16);
        put(std::mem::offset_of!(EventFileHeader, laps), 3);
        put(
            std::mem::offset_of!(EventFileHeader, open_at_end),
            open_at_end,
        );
        file[8..12].copy_from_slice(&TRACE_VERSION.to_le_bytes());
        file[12..16].copy_from_slice(&(hsize as u32).to_le_bytes());
        let mut ring = [[0u8; 16]; 8];
        for (j, &(kind, addr)) in window.iter().enumerate() {
            ring[(3 + j) % 8] = ev(100 + j as u64, kind, addr);
        }
        file.extend(ring.iter().flatten());
        // The trace stack after the ring: main, 0x50, 0x70 (cfa, word).
        for addr in [0x10u64, 0x50, 0x70] {
            file.extend(0x7ff0u64.to_le_bytes());
            file.extend((addr | 1 << 63).to_le_bytes());
        }
        file.resize(file.len() + 16 * empty, 0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1-1.events");
        std::fs::write(&path, &file).unwrap();
        let (h, events) = Events::open(&path).unwrap();
        assert_eq!((h.ring, h.laps), (128, 3));
        let got = events
            .map(|e| (e.kind().unwrap(), e.addr(), e.tsc))
            .collect();
        (window, got)
    }

    /// Payloads go with the event that follows them: arguments with an
    /// entry, a return value with a close and the tail exits right after
    /// it (one tail chain); a payload of no known subtype is skipped.
    #[test]
    fn payloads_go_with_the_events_they_precede() {
        use crate::reader::calls::{Calls, Step};
        let dir = tempfile::tempdir().unwrap();
        let path = payload_file(dir.path());
        let (h, events) = Events::open(&path).unwrap();
        let feed = events.values();
        let shown: Vec<String> = Calls::new(events, h.stopped)
            .values(feed)
            .map(|s| {
                let list = |v: &Option<crate::values::Values>| {
                    let mut out = String::new();
                    if let Some(v) = v {
                        crate::values::write_list(&mut out, v, &Default::default());
                    }
                    out
                };
                match s {
                    Step::Enter { addr, args, .. } => format!("{addr:x}({})", list(&args)),
                    Step::Leave { addr, ret, .. } => format!("{addr:x} = {}", list(&ret)),
                }
            })
            .collect();
        assert_eq!(
            shown,
            [
                "1005()",
                "2005(7, -2)",
                "3005()",
                "3005 = 42",
                "2005 = 42",
                "1005 = ",
            ]
        );
    }

    /// A compact event file with argument and return payloads.
    fn payload_file(dir: &Path) -> PathBuf {
        use compact::*;
        use ftail_abi::argspec::{class, value, Ty};
        let int = |ty: Ty, v: u64| {
            let mut b = value::desc(ty.0, 0, 8).to_le_bytes().to_vec();
            b.extend(v.to_le_bytes());
            b
        };
        let i32t = Ty::new(class::SIGNED, 4);
        let mut file = header(FORMAT_COMPACT);
        file.extend(ext_head(SUB_TIME, 3, 0).to_le_bytes());
        file.extend(1_000_000u64.to_le_bytes());
        file.extend(entry(1, 0x1005).to_le_bytes()); // outer
        file.extend(ext_head(SUB_ARGS, 7, 2).to_le_bytes());
        file.extend(int(i32t, 7));
        file.extend(int(i32t, -2i64 as u64));
        file.extend(entry(2, 0x2005).to_le_bytes()); // a(7, -2)
        file.extend(entry(3, 0x3005).to_le_bytes()); // its tail callee b
        file.extend(ext_head(SUB_PAYLOAD + 9, 2, 0).to_le_bytes());
        file.extend(0u32.to_le_bytes());
        file.extend(ext_head(SUB_RETVAL, 4, 1).to_le_bytes());
        file.extend(int(i32t, 42));
        file.extend(close(close_tag(EventKind::Exit).unwrap(), 4).to_le_bytes());
        file.extend(close(close_tag(EventKind::TailExit).unwrap(), 4).to_le_bytes());
        file.extend(close(close_tag(EventKind::Exit).unwrap(), 5).to_le_bytes());
        file.extend([0u8; 16]);
        let path = dir.join("1-1.events");
        std::fs::write(&path, &file).unwrap();
        path
    }

    /// A reader that did not ask for the values (a view without them)
    /// keeps none: they would pile up for the whole file.
    #[test]
    fn values_nobody_asked_for_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut events) = Events::open(&payload_file(dir.path())).unwrap();
        assert_eq!(events.by_ref().count(), 6);
        let feed = events.values();
        assert_eq!(feed.queue.lock().unwrap().len(), 0);
    }

    fn header(format: u64) -> Vec<u8> {
        let hsize = std::mem::size_of::<EventFileHeader>();
        let mut file = vec![0u8; hsize];
        file[..8].copy_from_slice(&EVENTS_MAGIC);
        file[8..12].copy_from_slice(&TRACE_VERSION.to_le_bytes());
        file[12..16].copy_from_slice(&(hsize as u32).to_le_bytes());
        let at = std::mem::offset_of!(EventFileHeader, format);
        file[at..at + 8].copy_from_slice(&format.to_le_bytes());
        file
    }

    /// A compact file reads as the events it holds: times from the base,
    /// padding and payloads skipped by their length, up to the first
    /// unwritten word; damage is named with its offset.
    #[test]
    fn a_compact_file_reads_record_by_record() {
        use compact::*;
        let mut file = header(FORMAT_COMPACT);
        let hsize = file.len();
        file.extend(ext_head(SUB_TIME, 3, 0).to_le_bytes());
        file.extend(1_000_000u64.to_le_bytes());
        file.extend(entry(5, 0x1005).to_le_bytes());
        file.extend(ext_head(SUB_PAD, 2, 0).to_le_bytes());
        file.extend(0u32.to_le_bytes());
        file.extend(ext_head(SUB_PAYLOAD, 3, 0).to_le_bytes());
        file.extend(0u64.to_le_bytes());
        file.extend(close(close_tag(EventKind::Suspended).unwrap(), 70).to_le_bytes());
        file.extend(ext_head(SUB_EVENT, 5, EventKind::Resumed as u32).to_le_bytes());
        file.extend(2_000_000u64.to_le_bytes());
        file.extend(0x1005u64.to_le_bytes());
        file.extend(close(close_tag(EventKind::Exit).unwrap(), 80).to_le_bytes());
        file.extend([0u8; 64]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1-1.events");
        std::fs::write(&path, &file).unwrap();
        let (_, mut events) = Events::open(&path).unwrap();
        let got: Vec<(EventKind, u64, u64)> = events
            .by_ref()
            .map(|e| (e.kind().unwrap(), e.tsc, e.addr()))
            .collect();
        assert_eq!(
            got,
            [
                (EventKind::Entry, 1_000_005, 0x1005),
                (EventKind::Suspended, 1_000_070, 0),
                (EventKind::Resumed, 2_000_000, 0x1005),
                (EventKind::Exit, 1_000_080, 0),
            ]
        );
        assert_eq!(events.damage(), None);
        assert_eq!(events.consumed(), 12 + 8 + 8 + 12 + 4 + 20 + 4);

        // A close before any time record is damage, named.
        let mut bad = header(FORMAT_COMPACT);
        bad.extend(close(2, 1).to_le_bytes());
        std::fs::write(&path, &bad).unwrap();
        let (_, mut events) = Events::open(&path).unwrap();
        assert_eq!(events.next(), None);
        let damage = events.damage().unwrap();
        assert!(
            damage.ends_with(&format!(
                "event 0 at offset {hsize}: a close before any time record"
            )),
            "{damage}"
        );
        // An unknown format is refused.
        std::fs::write(&path, header(7)).unwrap();
        let err = Events::open(&path).err().unwrap();
        assert!(err.ends_with("unknown event format 7"), "{err}");
    }

    /// A frame that began before tracing was switched on again closes
    /// after an `Earlier` event placed where the file reaches the time of
    /// the switch, whichever way the events are read: the loop over a
    /// block's records must not run past it.
    #[test]
    fn frames_open_at_a_rejoin_are_placed_at_it_by_every_way_of_reading() {
        use compact::*;
        let mut file = header(FORMAT_COMPACT);
        let set = |file: &mut Vec<u8>, at: usize, v: u64| {
            file[at..at + 8].copy_from_slice(&v.to_le_bytes());
        };
        set(
            &mut file,
            std::mem::offset_of!(EventFileHeader, before_tracing),
            1,
        );
        set(
            &mut file,
            std::mem::offset_of!(EventFileHeader, rejoined),
            1_000_100,
        );
        file.extend(ext_head(SUB_TIME, 3, 0).to_le_bytes());
        file.extend(1_000_000u64.to_le_bytes());
        file.extend(entry(5, 0x1005).to_le_bytes());
        file.extend(close(close_tag(EventKind::Exit).unwrap(), 10).to_le_bytes());
        // Tracing off, then on again at 1_000_100 inside a call.
        file.extend(close(close_tag(EventKind::Exit).unwrap(), 200).to_le_bytes());
        file.extend(entry(300, 0x2005).to_le_bytes());
        file.extend(close(close_tag(EventKind::Exit).unwrap(), 310).to_le_bytes());
        file.extend([0u8; 64]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1-1.events");
        std::fs::write(&path, &file).unwrap();
        let (iterated, folded) = read_both_ways(&path);
        let kinds: Vec<(EventKind, u64)> = iterated
            .0
            .iter()
            .map(|e| (e.kind().unwrap(), e.tsc))
            .collect();
        assert_eq!(
            kinds,
            [
                (EventKind::Entry, 1_000_005),
                (EventKind::Exit, 1_000_010),
                (EventKind::Earlier, 1_000_100),
                (EventKind::Exit, 1_000_200),
                (EventKind::Entry, 1_000_300),
                (EventKind::Exit, 1_000_310),
            ]
        );
        assert_eq!(folded, iterated);
    }

    /// What [`Events::each_event`] hands on, and the reader's state after:
    /// the events, the count, the bytes consumed, the damage, and the
    /// events the values fed went with.
    type Read = (Vec<Event>, u64, u64, Option<String>, Vec<u64>);

    struct Collect(Vec<Event>);

    impl EventSink for Collect {
        fn event(&mut self, e: Event) {
            self.0.push(e);
        }
    }

    fn read_both_ways(path: &Path) -> (Read, Read) {
        let state = |events: &Events, got: Vec<Event>, feed: &ValueFeed| -> Read {
            let fed = feed.queue.lock().unwrap().iter().map(|v| v.0).collect();
            let damage = events.damage().map(str::to_string);
            (got, events.count(), events.consumed(), damage, fed)
        };
        let (_, mut events) = Events::open(path).unwrap();
        let feed = events.values();
        let got: Vec<Event> = events.by_ref().collect();
        let iterated = state(&events, got, &feed);
        let (_, mut events) = Events::open(path).unwrap();
        let feed = events.values();
        let mut sink = Collect(Vec::new());
        events.each_event(&AtomicBool::new(false), &mut sink);
        let folded = state(&events, sink.0, &feed);
        // Pulled in batches of a few sizes: the same again.
        for max in [1, 3, 1000, 4096] {
            let (_, mut events) = Events::open(path).unwrap();
            let feed = events.values();
            let mut got = Vec::new();
            let mut batch = Vec::new();
            while events.next_events(&mut batch, max) {
                assert!(batch.len() <= max);
                got.append(&mut batch);
            }
            assert_eq!(state(&events, got, &feed), iterated, "batches of {max}");
        }
        (iterated, folded)
    }

    /// The loop over a block's records yields what iterating yields, over
    /// blocks, time records, payloads, events with their own time, padding
    /// and records cut by a block's end, up to damage.
    #[test]
    fn each_event_hands_on_what_iterating_yields() {
        use compact::*;
        use ftail_abi::argspec::{class, value, Ty};
        let mut file = header(FORMAT_COMPACT);
        file.extend(ext_head(SUB_TIME, 3, 0).to_le_bytes());
        file.extend(1_000_000u64.to_le_bytes());
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let arg = {
            let mut b = value::desc(Ty::new(class::SIGNED, 4).0, 0, 8)
                .to_le_bytes()
                .to_vec();
            b.extend(7u64.to_le_bytes());
            b
        };
        // About 3 blocks of records, every kind the writer makes.
        while file.len() < 3 * BLOCK + 1000 {
            let r = next();
            match r % 16 {
                0..=6 => {
                    file.extend(entry(r >> 40 & (ENTRY_SPAN - 1), r >> 8 & 0xffff).to_le_bytes())
                }
                7..=12 => {
                    let tag = 2 + (r >> 4) as u32 % 5;
                    file.extend(close(tag, r >> 20 & (CLOSE_SPAN - 1)).to_le_bytes());
                }
                13 if r >> 8 & 7 == 0 => {
                    // A clock at 0: events at time 0 read as 1.
                    file.extend(ext_head(SUB_TIME, 3, 0).to_le_bytes());
                    file.extend(0u64.to_le_bytes());
                    file.extend(entry(0, 0x3005).to_le_bytes());
                    file.extend(close(2, 0).to_le_bytes());
                }
                13 => {
                    file.extend(ext_head(SUB_TIME, 3, 0).to_le_bytes());
                    file.extend((r >> 20).to_le_bytes());
                }
                14 => {
                    file.extend(ext_head(SUB_ARGS, 4, 1).to_le_bytes());
                    file.extend(&arg);
                }
                _ => match r >> 8 & 3 {
                    0 => {
                        file.extend(
                            ext_head(SUB_EVENT, 5, EventKind::Resumed as u32).to_le_bytes(),
                        );
                        file.extend((r >> 24).to_le_bytes());
                        file.extend(0x1005u64.to_le_bytes());
                    }
                    1 => {
                        file.extend(
                            ext_head(SUB_EVENT, 3, EventKind::Suspended as u32).to_le_bytes(),
                        );
                        file.extend((r >> 24).to_le_bytes());
                    }
                    2 => {
                        file.extend(ext_head(SUB_PAD, 2, 0).to_le_bytes());
                        file.extend(0u32.to_le_bytes());
                    }
                    _ => {
                        file.extend(ext_head(SUB_RETVAL, 4, 1).to_le_bytes());
                        file.extend(&arg);
                    }
                },
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1-1.events");
        let mut ended = file.clone();
        ended.extend([0u8; 16]);
        std::fs::write(&path, &ended).unwrap();
        let (iterated, folded) = read_both_ways(&path);
        assert!(
            iterated.0.len() > 50_000 && !iterated.4.is_empty(),
            "{} {}",
            iterated.0.len(),
            iterated.4.len()
        );
        assert_eq!(iterated.3, None);
        assert_eq!(iterated, folded);
        // Damage: a record with tag 0 that is not the end.
        let mut damaged = file.clone();
        damaged.extend(8u32.to_le_bytes());
        std::fs::write(&path, &damaged).unwrap();
        let (iterated, folded) = read_both_ways(&path);
        assert!(iterated.3.is_some());
        assert_eq!(iterated, folded);
        // Cut short in the middle of an entry.
        let mut cut = file;
        cut.extend(&entry(1, 0x2005).to_le_bytes()[..6]);
        std::fs::write(&path, &cut).unwrap();
        let (iterated, folded) = read_both_ways(&path);
        assert_eq!(iterated, folded);
        // A wide file, with a frame begun before tracing.
        let wide: Vec<[u8; 16]> = (1..10_000u64)
            .map(|t| ev(t, [EventKind::Entry, EventKind::Exit][t as usize % 2], 0x10))
            .chain([ev(10_000, EventKind::Exit, 0x20)])
            .collect();
        std::fs::write(
            &path,
            wide_file(std::mem::size_of::<EventFileHeader>(), 1, 0, &wide),
        )
        .unwrap();
        let (iterated, folded) = read_both_ways(&path);
        assert!(iterated.0.len() >= 10_000);
        assert_eq!(iterated, folded);
    }
}

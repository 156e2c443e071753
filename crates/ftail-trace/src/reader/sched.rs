//! A trace's scheduler events (`sched.PID`, [`ftail_abi::trace::SchedHeader`]):
//! each time a thread spent off the CPU, by thread, in time order.
//! `ftail record` writes them beside the event files, from the kernel's
//! context-switch records.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ftail_abi::trace::{SchedHeader, SCHED_MAGIC, SCHED_PREEMPTED, SCHED_PREFIX};

/// The largest scheduler-event file read (8 M switches).
pub const SCHED_LIMIT: u64 = 256 << 20;

/// A time off the CPU, in time-stamp counter ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffCpu {
    /// Switched out.
    pub start: u64,
    /// Switched back in.
    pub end: u64,
    /// Preempted (it could have run on), not blocked.
    pub preempted: bool,
}

/// The scheduler events of a trace.
#[derive(Debug, Default)]
pub struct Sched {
    /// Off-CPU times by thread id, in time order.
    threads: HashMap<u32, Vec<OffCpu>>,
    /// What is known of how they were recorded, one line each: a refusal
    /// and its reason, records the kernel lost, files not readable.
    pub notes: Vec<String>,
    /// Whether any file held events (not a refusal).
    pub recorded: bool,
}

impl Sched {
    /// Reads every `sched.*` file of trace directory `dir`; a trace
    /// recorded without them has none.
    pub fn load(dir: &Path) -> Sched {
        let mut sched = Sched::default();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return sched;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(SCHED_PREFIX))
            .map(|e| e.path())
            .collect();
        paths.sort();
        for path in paths {
            if let Err(e) = sched.read(&path) {
                sched.notes.push(format!(
                    "{}: {e}; its scheduler events are not shown",
                    path.display()
                ));
            }
        }
        for slices in sched.threads.values_mut() {
            slices.sort_by_key(|s| s.start);
        }
        sched
    }

    fn read(&mut self, path: &Path) -> Result<(), String> {
        let bytes =
            crate::untrusted::files::read_regular(path, SCHED_LIMIT).map_err(|e| e.to_string())?;
        let head = std::mem::size_of::<SchedHeader>();
        if bytes.len() < head || bytes[..8] != SCHED_MAGIC {
            return Err("not a scheduler-event file (bad magic or too short)".into());
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let size = (u32_at(12) as usize).max(head);
        let refused = u32_at(16) as i32;
        let paranoid = u32_at(20) as i32;
        let lost = u64_at(24);
        if refused != 0 {
            self.notes.push(refusal(refused, paranoid));
            return Ok(());
        }
        self.recorded = true;
        if lost > 0 {
            self.notes.push(format!(
                "{lost} context switches were lost (the kernel's ring was full)"
            ));
        }
        let mut at = size;
        while at + 32 <= bytes.len() {
            let (tid, start, end, flags) = (
                u32_at(at + 4),
                u64_at(at + 8),
                u64_at(at + 16),
                u64_at(at + 24),
            );
            if end >= start {
                self.threads.entry(tid).or_default().push(OffCpu {
                    start,
                    end,
                    preempted: flags & SCHED_PREEMPTED != 0,
                });
            }
            at += 32;
        }
        Ok(())
    }

    /// How many times off the CPU there are, of all threads.
    pub fn slices(&self) -> usize {
        self.threads.values().map(Vec::len).sum()
    }

    /// How many threads have times off the CPU.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Thread `tid`'s times off the CPU, in time order.
    pub fn thread(&self, tid: u32) -> &[OffCpu] {
        self.threads.get(&tid).map_or(&[], Vec::as_slice)
    }
}

/// A thread's times off the CPU handed out in time order, each inside
/// the gap between two of the thread's events it fell in.
///
/// A thread does nothing while it is off the CPU, so a true time off the
/// CPU never holds one of its events. But the slices' times come from
/// the kernel's clock, turned into the counter's by `ftail record`, and
/// may miss by a little: a slice that reaches over an event is cut at
/// it, and one that lies mostly after it starts there instead. So no
/// view shows a time off the CPU longer than the call holding it, in the
/// wrong call, or out of order.
#[derive(Debug, Clone)]
pub struct OffCpuCursor<'a> {
    /// The next slice, its start moved past what was handed out.
    next: Option<OffCpu>,
    /// The ones after it.
    rest: &'a [OffCpu],
}

impl<'a> OffCpuCursor<'a> {
    /// A cursor over `slices`, in time order ([`Sched::thread`]).
    pub fn new(slices: &'a [OffCpu]) -> Self {
        let mut cursor = OffCpuCursor {
            next: None,
            rest: slices,
        };
        cursor.step(0);
        cursor
    }

    /// Whether every slice was handed out.
    pub fn is_empty(&self) -> bool {
        self.next.is_none()
    }

    /// Whether [`OffCpuCursor::before`] `until` would hand out a slice.
    pub fn any_before(&self, until: u64) -> bool {
        self.next.is_some_and(|s| cut(s, until).is_some())
    }

    /// The slices that began before `until`, the time of the thread's
    /// next event, each ended by it at the latest.
    pub fn before(&mut self, until: u64) -> impl Iterator<Item = OffCpu> + use<'_, 'a> {
        std::iter::from_fn(move || {
            let next = self.next?;
            match cut(next, until) {
                Some(piece) => {
                    self.step(piece.end);
                    Some(piece)
                }
                None => {
                    // It begins at `until` or later, or lies mostly after.
                    self.next = Some(OffCpu {
                        start: next.start.max(until),
                        ..next
                    });
                    None
                }
            }
        })
    }

    /// Moves to the slice after the current one, starting at `from` at
    /// the earliest; one that ends by then is left out.
    fn step(&mut self, from: u64) {
        self.next = None;
        while let Some((&s, rest)) = self.rest.split_first() {
            self.rest = rest;
            if s.end > from || s.start >= from {
                self.next = Some(OffCpu {
                    start: s.start.max(from),
                    ..s
                });
                return;
            }
        }
    }
}

/// What of `slice` lies before the event at `until`: all of it, its part
/// before `until` where that is most of it, or nothing.
fn cut(slice: OffCpu, until: u64) -> Option<OffCpu> {
    if slice.start >= until {
        return None;
    }
    if slice.end <= until {
        return Some(slice);
    }
    (until - slice.start >= slice.end - until).then_some(OffCpu {
        end: until,
        ..slice
    })
}

/// Why scheduler events were not recorded: the kernel's answer, and what
/// would change it.
pub fn refusal(errno: i32, paranoid: i32) -> String {
    let reason = std::io::Error::from_raw_os_error(errno);
    let setting = match paranoid {
        -9 => String::new(),
        p => format!(" (kernel.perf_event_paranoid is {p})"),
    };
    let hint = if matches!(errno, libc::EACCES | libc::EPERM) {
        "; a value of 2 or less lets a user record their own processes' context switches"
    } else {
        ""
    };
    format!(
        "scheduler events were not recorded: perf_event_open refused them: {reason}{setting}{hint}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(start: u64, end: u64) -> OffCpu {
        OffCpu {
            start,
            end,
            preempted: false,
        }
    }

    #[test]
    fn a_slice_reaching_over_an_event_is_cut_or_moved_behind_it() {
        // Events at 100 and 200; the first slice reaches 10 past the
        // event at 100, the second begins 10 before the one at 200.
        let slices = [slice(40, 110), slice(190, 260)];
        let mut c = OffCpuCursor::new(&slices);
        assert!(c.any_before(100));
        assert_eq!(c.before(100).collect::<Vec<_>>(), [slice(40, 100)]);
        assert!(!c.any_before(200));
        assert_eq!(c.before(200).count(), 0);
        assert_eq!(c.before(300).collect::<Vec<_>>(), [slice(200, 260)]);
        assert!(c.is_empty());
    }

    #[test]
    fn slices_handed_out_never_overlap_or_go_back() {
        let slices = [slice(10, 50), slice(30, 40), slice(45, 90)];
        let mut c = OffCpuCursor::new(&slices);
        let got: Vec<OffCpu> = c.before(1000).collect();
        assert_eq!(got, [slice(10, 50), slice(50, 90)]);
    }

    #[test]
    fn a_refusal_says_which_setting_decides() {
        let line = refusal(libc::EACCES, 3);
        assert!(line.contains("perf_event_paranoid is 3"), "{line}");
        assert!(line.contains("2 or less"), "{line}");
    }
}

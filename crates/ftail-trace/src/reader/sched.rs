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

    #[test]
    fn a_refusal_says_which_setting_decides() {
        let line = refusal(libc::EACCES, 3);
        assert!(line.contains("perf_event_paranoid is 3"), "{line}");
        assert!(line.contains("2 or less"), "{line}");
    }
}

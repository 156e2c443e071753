//! Triggers (`ftail record -T/--trigger`, `--snapshot-on`): what a
//! function's calls set off, decided while the program runs.
//!
//! `ftail record` passes the rules (`ftail_abi::trigger`) in
//! `FTAIL_TRIGGERS`; [`init`] reads them once. A function that a rule
//! matches gets a spec stub (`args.rs`) whose last bytes hold its
//! [`Actions`], so its entry always takes the spec's slow path, which
//! finds them from the stub with no lookup, lock or allocation; functions
//! without triggers pay nothing.
//!
//! The actions work through the thread's [`ThreadState::max_depth`], the
//! depth up to which the trampolines write events: `trace_off` and
//! `finish` make it 0, `depth=N`, `filter` and `notrace` set it for the
//! call's subtree (their call is flagged [`TRIGGER`] on entry, so that its
//! exit takes the slow path and puts the depth back). A frame keeps the
//! decision made at its entry: when the depth changes under open calls,
//! those whose entry was written but whose close now would not be are
//! flagged [`SHOWN`], the others [`HIDDEN`] ([`reflag`]), so every
//! thread's file stays balanced. Which calls are recorded is decided per
//! thread: a thread changes only its own trace stack, never another's.
//!
//! Snapshots (`snapshot`, `snapshot>NS`, and the program's
//! [`ftail_snapshot`]) copy the rings as `ftail ctl PID snapshot` does,
//! from the calling thread, and name the call that took them in the
//! snapshot's `trigger` file. At most one is taken per interval
//! (`--snapshot-interval`); the others are skipped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use ftail_abi::trace::ADDR_MASK;
use ftail_abi::trigger::{Actions, Rule, WHY_CALLED, WHY_LASTED, WHY_PROGRAM};

use crate::record::state::{
    written, StackEntry, ThreadState, TrigSave, FTAIL_MAX_DEPTH, HIDDEN, MAX_TRIG, SHOWN, TRIGGER,
    TRIG_FINISHED, TRIG_OFF,
};

/// The rules, in the order given.
static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
/// Counter ticks per second.
static HZ: AtomicU64 = AtomicU64::new(0);
/// Least ticks between two snapshots taken by triggers.
static INTERVAL: AtomicU64 = AtomicU64::new(0);
/// Time of the last snapshot taken by a trigger (0: none yet).
static LAST: AtomicU64 = AtomicU64::new(0);
/// Whether a rule has `filter`: threads then start recording nothing.
static ANY_FILTER: AtomicU64 = AtomicU64::new(0);
/// Whether the threads keep rings (a snapshot has something to copy).
static RING: AtomicU64 = AtomicU64::new(0);

/// The default least time between two snapshots taken by triggers.
const DEFAULT_INTERVAL_NS: u64 = 1_000_000_000;

/// Reads the rules, at start-up; `hz` is the counter's frequency.
pub fn init(hz: u64, ring: bool, cfg: &crate::process::config::Config) {
    HZ.store(hz, Ordering::Relaxed);
    RING.store(u64::from(ring), Ordering::Relaxed);
    let ns = cfg.snapshot_interval.unwrap_or(DEFAULT_INTERVAL_NS);
    INTERVAL.store(ticks(ns), Ordering::Relaxed);
    let rules: Vec<Rule> = cfg
        .triggers
        .as_deref()
        .map(|text| text.lines().filter_map(Rule::parse_line).collect())
        .unwrap_or_default();
    if rules.iter().any(|r| r.actions.filter) {
        ANY_FILTER.store(1, Ordering::Relaxed);
    }
    let _ = RULES.set(rules);
}

/// `ns` nanoseconds in counter ticks (at least 1 for a nonzero time).
fn ticks(ns: u64) -> u64 {
    let hz = u128::from(HZ.load(Ordering::Relaxed));
    let t = (u128::from(ns) * hz / 1_000_000_000).min(u128::from(u64::MAX)) as u64;
    if ns == 0 {
        0
    } else {
        t.max(1)
    }
}

/// The actions of the function `name`: every rule that matches it,
/// merged in order; `None` when none does.
pub fn actions_for(name: &str) -> Option<Actions> {
    let mut actions = Actions::default();
    for rule in RULES.get()? {
        if crate::process::config::glob(&rule.glob, name) {
            actions.merge(&rule.actions);
        }
    }
    (!actions.is_empty()).then_some(actions)
}

/// Bytes of [`Actions`] in a spec stub.
pub const ACTION_BYTES: usize = 16;

/// The actions as a spec stub holds them: a byte of flags, the depth at
/// 4, the snapshot's threshold in nanoseconds at 8.
pub fn to_bytes(a: &Actions) -> [u8; ACTION_BYTES] {
    let mut out = [0u8; ACTION_BYTES];
    let flags = [
        a.trace_on,
        a.trace_off,
        a.finish,
        a.filter,
        a.notrace,
        a.snapshot,
    ];
    out[0] = flags
        .iter()
        .enumerate()
        .fold(0, |f, (i, &on)| f | (u8::from(on) << i));
    out[4..8].copy_from_slice(&a.depth.to_le_bytes());
    out[8..16].copy_from_slice(&a.snapshot_after_ns.to_le_bytes());
    out
}

/// See [`to_bytes`].
pub fn from_bytes(b: &[u8; ACTION_BYTES]) -> Actions {
    let bit = |i: u32| b[0] & (1 << i) != 0;
    Actions {
        trace_on: bit(0),
        trace_off: bit(1),
        finish: bit(2),
        filter: bit(3),
        notrace: bit(4),
        snapshot: bit(5),
        depth: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        snapshot_after_ns: u64::from_le_bytes(b[8..16].try_into().unwrap_or_default()),
    }
}

/// A thread starts recording: the depth that `-D` and the rules give it.
/// A thread forked with open calls keeps its parent's.
pub fn thread_start(st: &mut ThreadState) {
    if st.depth != 0 {
        return;
    }
    st.trig_off = 0;
    st.trig_len = 0;
    st.scope_max = if ANY_FILTER.load(Ordering::Relaxed) != 0 {
        0
    } else {
        FTAIL_MAX_DEPTH.load(Ordering::Relaxed)
    };
    st.max_depth = st.scope_max;
}

/// The depth the thread records up to now.
fn effective(st: &ThreadState) -> u64 {
    if st.trig_off != 0 {
        0
    } else {
        st.scope_max
    }
}

/// Makes [`ThreadState::max_depth`] what the thread's triggers say, and
/// keeps each open call's decision ([`reflag`]).
fn apply(st: &mut ThreadState) {
    let (old, new) = (st.max_depth, effective(st));
    if old != new {
        reflag(st, old, new);
        st.max_depth = new;
    }
}

/// The depth goes from `old` to `new` under the open calls: each keeps
/// whether its entry was written, [`SHOWN`] or [`HIDDEN`] where the new
/// depth decides otherwise.
fn reflag(st: &mut ThreadState, old: u64, new: u64) {
    for i in 0..st.depth.min(st.stack_cap) {
        // SAFETY: i < depth <= stack_cap entries of this thread's trace
        // stack, which only this thread (and its signal handlers, which
        // finish before it goes on) changes.
        let e = unsafe { &mut *(st.stack as *mut StackEntry).add(i as usize) };
        let was = written(i, e.word, old);
        let will = i < new;
        e.word &= !(HIDDEN | SHOWN);
        if was != will {
            e.word |= if was { SHOWN } else { HIDDEN };
        }
    }
}

/// A function with triggers is entered at `cfa`, its frame not yet
/// pushed (it will be at index `st.depth`): applies what acts on entry
/// and returns the flags for its trace-stack word.
pub fn on_entry(st: &mut ThreadState, cfa: u64, addr: u64, now: u64, a: &Actions) -> u64 {
    if st.trig_off != TRIG_FINISHED {
        if a.trace_on {
            st.trig_off = 0;
        }
        if a.trace_off {
            st.trig_off = TRIG_OFF;
        }
    }
    let mut flags = 0;
    if a.at_exit() && (st.trig_len as usize) < MAX_TRIG {
        let index = st.depth;
        st.trig[st.trig_len as usize] = TrigSave {
            cfa,
            addr: addr & ADDR_MASK,
            scope_before: st.scope_max,
            entry_tsc: now,
            finish: u64::from(a.finish),
            snapshot_after: ticks(a.snapshot_after_ns),
        };
        st.trig_len += 1;
        if a.notrace {
            st.scope_max = index;
        } else if a.depth != 0 {
            st.scope_max = index.saturating_add(u64::from(a.depth));
        } else if a.filter {
            st.scope_max = index.saturating_add(FTAIL_MAX_DEPTH.load(Ordering::Relaxed));
        }
        flags = TRIGGER;
    }
    apply(st);
    flags
}

/// After the entry of a function with triggers was pushed: the snapshot
/// its call takes.
pub fn after_entry(st: &ThreadState, addr: u64, now: u64, a: &Actions) {
    if a.snapshot {
        snapshot(st, WHY_CALLED, addr & ADDR_MASK, now);
    }
}

/// The frame `t` of a call whose triggers act at its exit was closed
/// (`returned`: by its return, not by a longjmp or an exception): puts
/// the depth back, ends the thread's recording for `finish`, takes the
/// snapshot of a call that lasted too long.
pub fn on_exit(st: &mut ThreadState, t: StackEntry, returned: bool, now: u64) {
    let addr = t.word & ADDR_MASK;
    let len = st.trig_len as usize;
    let Some(at) = (0..len)
        .rev()
        .find(|&i| st.trig[i].cfa == t.cfa && st.trig[i].addr == addr)
    else {
        return;
    };
    let save = st.trig[at];
    st.trig.copy_within(at + 1..len, at);
    st.trig_len -= 1;
    st.scope_max = save.scope_before;
    if save.finish != 0 {
        st.trig_off = TRIG_FINISHED;
    }
    apply(st);
    if returned
        && save.snapshot_after != 0
        && now.wrapping_sub(save.entry_tsc) > save.snapshot_after
    {
        snapshot(st, WHY_LASTED, addr, save.entry_tsc);
    }
}

/// Takes a snapshot for a trigger, unless one was taken less than the
/// interval ago: names the call (`addr`, entered at `tsc`, on this
/// thread) in the snapshot's mark.
fn snapshot(st: &ThreadState, why: &str, addr: u64, tsc: u64) {
    if RING.load(Ordering::Relaxed) == 0 || !crate::record::state::recording(st.status) {
        return;
    }
    let now = crate::record::write::rdtsc();
    let last = LAST.load(Ordering::Relaxed);
    if last != 0 && now.wrapping_sub(last) < INTERVAL.load(Ordering::Relaxed) {
        return;
    }
    if LAST
        .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    let mut mark = crate::process::files::NameBuf::new();
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u64;
    mark.push(b"tid ")
        .push_num(tid)
        .push(b"\naddr ")
        .push_num(addr)
        .push(b"\ntime ")
        .push_num(tsc)
        .push(b"\nwhy ")
        .push(why.as_bytes())
        .push(b"\n");
    let _ = crate::record::snapshot::take_marked(Some(mark.bytes()));
}

/// Takes a snapshot of the rings now, naming the innermost traced call
/// of the calling thread; for programs that know when something went
/// wrong. Declared weak in `include/ftail.h`, so that a program links
/// and runs without ftail. Returns 0 when a snapshot was taken or
/// skipped by the interval, -1 when there is nothing to snapshot (not
/// recorded by `ftail record --ring`).
#[no_mangle]
pub extern "C" fn ftail_snapshot() -> libc::c_int {
    let _errno = crate::record::write::KeepErrno::save();
    // SAFETY: the current thread's own state; the slow paths that also
    // use it are not running on this thread now (this is a plain call).
    let st = unsafe { &*crate::record::state::current() };
    if RING.load(Ordering::Relaxed) == 0 || !crate::record::state::recording(st.status) {
        return -1;
    }
    let addr = if st.depth == 0 || st.depth > st.stack_cap {
        0
    } else {
        // SAFETY: depth - 1 < stack_cap entries of this thread's stack.
        unsafe { (*(st.stack as *const StackEntry).add(st.depth as usize - 1)).word & ADDR_MASK }
    };
    snapshot(st, WHY_PROGRAM, addr, crate::record::write::rdtsc());
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_survive_their_stub_bytes() {
        for text in [
            "trace_on,depth=7",
            "trace_off,finish",
            "filter,notrace,snapshot>5000000",
        ] {
            let a = ftail_abi::trigger::parse_actions(text).unwrap();
            assert_eq!(from_bytes(&to_bytes(&a)), a, "{text}");
        }
    }
}

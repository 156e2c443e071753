//! Triggers: actions a traced function's calls set off while the program
//! is recorded (`ftail record -T/--trigger`, `--snapshot-on`).
//!
//! `ftail record` checks what the user wrote (uftrace's syntax,
//! `GLOB@ACTION[,ACTION...]`), and passes the rules to the runtime in the
//! environment variable [`TRIGGERS_ENV`], one rule a line, each written by
//! [`Rule::to_line`] and read back by [`Rule::parse_line`]: the glob, a
//! tab, the actions as [`parse_actions`] reads them.
//!
//! Actions ([`Actions`]):
//! * `trace_on` / `trace_off` (`traceon`, `traceoff`): the calling thread
//!   records from this call on / stops recording from this call on (the
//!   call itself is recorded by `trace_on`, not by `trace_off`);
//! * `depth=N`: while the call runs, the thread records it and N − 1
//!   levels of calls below it (N ≥ 1);
//! * `finish`: once the call returns, the thread records nothing more;
//! * `filter`: the thread records only inside calls of such functions
//!   (as `-F` would, but decided while the program runs);
//! * `notrace`: the call and everything below it is not recorded;
//! * `snapshot`, `snapshot>NS` (`--snapshot-on`, with `--ring`): a
//!   snapshot of the rings when the function is called, or when one of
//!   its calls returns after lasting more than NS nanoseconds.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// The environment variable that carries the rules to the runtime.
pub const TRIGGERS_ENV: &str = "FTAIL_TRIGGERS";
/// The environment variable that carries the least time between two
/// snapshots that triggers take, in nanoseconds.
pub const SNAPSHOT_INTERVAL_ENV: &str = "FTAIL_SNAPSHOT_INTERVAL";
/// The file a snapshot that a trigger took holds, naming the call that
/// took it: `tid TID\naddr ADDR\ntime TSC\nwhy WHY\n` (`WHY`:
/// [`WHY_CALLED`], [`WHY_LASTED`] or [`WHY_PROGRAM`]; ADDR the function's
/// entry address as the trace's closes carry it, in decimal; TSC the
/// time of the call's entry, for a call that lasted, or of the trigger).
pub const MARK_FILE: &str = "trigger";
/// [`MARK_FILE`]: the function was called (`--snapshot-on FUNC`).
pub const WHY_CALLED: &str = "called";
/// [`MARK_FILE`]: a call lasted longer than asked
/// (`--snapshot-on 'FUNC>TIME'`).
pub const WHY_LASTED: &str = "lasted";
/// [`MARK_FILE`]: the program called `ftail_snapshot()`.
pub const WHY_PROGRAM: &str = "program";

/// A snapshot's [`MARK_FILE`]: the call that took it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// The thread that made the call.
    pub tid: u32,
    /// The function's entry address, as the trace's closes carry it (0:
    /// no traced call was open, for [`WHY_PROGRAM`]).
    pub addr: u64,
    /// The call's entry time, or the time of `ftail_snapshot()`: the
    /// marked call is the innermost call of `addr` on `tid` running then.
    pub time: u64,
    /// [`WHY_CALLED`], [`WHY_LASTED`] or [`WHY_PROGRAM`].
    pub why: String,
}

impl Mark {
    /// Reads a [`MARK_FILE`]'s text; `None` when it is not one.
    pub fn parse(text: &str) -> Option<Mark> {
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        };
        let why = field("why")?;
        [WHY_CALLED, WHY_LASTED, WHY_PROGRAM]
            .contains(&why)
            .then_some(())?;
        Some(Mark {
            tid: field("tid")?.parse().ok()?,
            addr: field("addr")?.parse().ok()?,
            time: field("time")?.parse().ok()?,
            why: why.to_string(),
        })
    }

    /// What replay and the exports say of the marked call.
    pub fn note(&self) -> &'static str {
        match self.why.as_str() {
            WHY_CALLED => "snapshot: called",
            WHY_LASTED => "snapshot: lasted too long",
            _ => "snapshot: ftail_snapshot()",
        }
    }

    /// Whether the call of `addr` on `tid` entered at `start` is the
    /// marked one (for [`WHY_PROGRAM`], once `time` is made its entry's:
    /// [`Mark::entered_at`]).
    pub fn is(&self, tid: u32, addr: u64, start: u64) -> bool {
        tid == self.tid && addr == self.addr && start == self.time
    }

    /// The mark with `time` the entry time `start` of its call.
    pub fn entered_at(&self, start: u64) -> Mark {
        Mark {
            time: start,
            ..self.clone()
        }
    }
}

/// What a function's calls set off. Several rules matching one function
/// add up ([`Actions::merge`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Actions {
    /// `trace_on`.
    pub trace_on: bool,
    /// `trace_off`.
    pub trace_off: bool,
    /// `depth=N`: N (0: none).
    pub depth: u32,
    /// `finish`.
    pub finish: bool,
    /// `filter`.
    pub filter: bool,
    /// `notrace`.
    pub notrace: bool,
    /// `snapshot`: when called.
    pub snapshot: bool,
    /// `snapshot>NS`: NS (0: none).
    pub snapshot_after_ns: u64,
}

impl Actions {
    /// Whether nothing is asked for.
    pub fn is_empty(&self) -> bool {
        *self == Actions::default()
    }

    /// Whether anything happens when a call returns (the frame is
    /// flagged on entry so that its exit takes the slow path).
    pub fn at_exit(&self) -> bool {
        self.depth != 0 || self.finish || self.filter || self.notrace || self.snapshot_after_ns != 0
    }

    /// Adds `other`'s actions; a later `depth` or threshold replaces an
    /// earlier one.
    pub fn merge(&mut self, other: &Actions) {
        self.trace_on |= other.trace_on;
        self.trace_off |= other.trace_off;
        self.finish |= other.finish;
        self.filter |= other.filter;
        self.notrace |= other.notrace;
        self.snapshot |= other.snapshot;
        if other.depth != 0 {
            self.depth = other.depth;
        }
        if other.snapshot_after_ns != 0 {
            self.snapshot_after_ns = other.snapshot_after_ns;
        }
    }

    /// The actions as [`parse_actions`] reads them.
    pub fn to_text(&self) -> String {
        let mut out: Vec<String> = Vec::new();
        let flags = [
            (self.trace_on, "trace_on"),
            (self.trace_off, "trace_off"),
            (self.finish, "finish"),
            (self.filter, "filter"),
            (self.notrace, "notrace"),
            (self.snapshot, "snapshot"),
        ];
        out.extend(flags.iter().filter(|f| f.0).map(|f| f.1.to_string()));
        if self.depth != 0 {
            out.push(format!("depth={}", self.depth));
        }
        if self.snapshot_after_ns != 0 {
            out.push(format!("snapshot>{}", self.snapshot_after_ns));
        }
        out.join(",")
    }
}

/// Reads `ACTION[,ACTION...]` (see the module's documentation; a
/// `snapshot>` threshold in nanoseconds).
pub fn parse_actions(text: &str) -> Result<Actions, String> {
    let mut a = Actions::default();
    for action in text.split(',') {
        match action.trim() {
            "trace_on" | "traceon" => a.trace_on = true,
            "trace_off" | "traceoff" => a.trace_off = true,
            "finish" => a.finish = true,
            "filter" => a.filter = true,
            "notrace" => a.notrace = true,
            "snapshot" => a.snapshot = true,
            other => {
                if let Some(n) = other.strip_prefix("depth=") {
                    a.depth = match n.parse::<u32>() {
                        Ok(n) if n >= 1 => n,
                        _ => return Err(format!("depth={n}: the depth must be 1 or more")),
                    };
                } else if let Some(ns) = other.strip_prefix("snapshot>") {
                    a.snapshot_after_ns = match ns.parse::<u64>() {
                        Ok(n) if n >= 1 => n,
                        _ => return Err(format!("snapshot>{ns}: not a time in nanoseconds")),
                    };
                } else {
                    return Err(format!(
                        "unknown action '{other}' (trace_on, trace_off, depth=N, finish, \
                         filter or notrace)"
                    ));
                }
            }
        }
    }
    if a.trace_on && a.trace_off {
        return Err("trace_on and trace_off together".into());
    }
    Ok(a)
}

/// One rule: the functions a glob matches, and their actions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Shell-style glob of function names.
    pub glob: String,
    /// What their calls set off.
    pub actions: Actions,
}

impl Rule {
    /// The rule's line in [`TRIGGERS_ENV`].
    pub fn to_line(&self) -> String {
        format!("{}\t{}", self.glob, self.actions.to_text())
    }

    /// Reads a line of [`TRIGGERS_ENV`]; `None` for anything else.
    pub fn parse_line(line: &str) -> Option<Rule> {
        let (glob, actions) = line.split_once('\t')?;
        let actions = parse_actions(actions).ok()?;
        (!glob.is_empty() && !actions.is_empty()).then(|| Rule {
            glob: glob.to_string(),
            actions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_survive_their_line() {
        for text in [
            "trace_on",
            "trace_off,depth=3",
            "finish",
            "filter,notrace",
            "snapshot",
            "snapshot>5000000",
        ] {
            let rule = Rule {
                glob: "a*".into(),
                actions: parse_actions(text).unwrap(),
            };
            assert_eq!(Rule::parse_line(&rule.to_line()), Some(rule), "{text}");
        }
    }

    #[test]
    fn marks_read_as_the_runtime_writes_them() {
        let m = Mark::parse("tid 42\naddr 4198405\ntime 123456\nwhy lasted\n").unwrap();
        assert_eq!(
            (m.tid, m.addr, m.time, m.why.as_str()),
            (42, 4198405, 123456, "lasted")
        );
        assert!(m.is(42, 4198405, 123456));
        assert!(!m.is(42, 4198405, 123457));
        assert!(!m.is(43, 4198405, 123456));
        assert!(m.entered_at(100).is(42, 4198405, 100));
        assert_eq!(Mark::parse("tid 42\naddr 1\ntime 2\nwhy because\n"), None);
        assert_eq!(Mark::parse("tid x\naddr 1\ntime 2\nwhy called\n"), None);
    }

    #[test]
    fn bad_actions_say_what_is_wrong() {
        assert!(parse_actions("depth=0").unwrap_err().contains("1 or more"));
        assert!(parse_actions("depth=x").is_err());
        assert!(parse_actions("trace")
            .unwrap_err()
            .contains("unknown action 'trace'"));
        assert!(parse_actions("trace_on,trace_off").is_err());
        assert!(parse_actions("snapshot>").is_err());
        assert_eq!(Rule::parse_line("main"), None);
        assert_eq!(Rule::parse_line("\ttrace_on"), None);
    }

    #[test]
    fn merged_actions_add_up_and_later_numbers_win() {
        let mut a = parse_actions("depth=2,trace_on").unwrap();
        a.merge(&parse_actions("depth=5,finish").unwrap());
        assert_eq!(a.to_text(), "trace_on,finish,depth=5");
        assert!(a.at_exit());
        assert!(!parse_actions("trace_on").unwrap().at_exit());
        assert!(!parse_actions("snapshot").unwrap().at_exit());
    }
}

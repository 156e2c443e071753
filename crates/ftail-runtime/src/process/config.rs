//! What `ftail record` asked for, passed in the environment.

use std::ffi::OsString;

/// How tail calls are traced (`--tail`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TailMode {
    /// Per site: `mark` where the target is a traced function or must see
    /// its real caller, `convert` elsewhere.
    Auto,
    /// A hook at the tail site marks the caller complete; it ends when its
    /// callee returns (exact only when the callee is traced).
    Mark,
    /// A per-site thunk turns the tail jump into a call (exact always).
    Convert,
}

/// The runtime's configuration.
#[derive(Debug)]
pub struct Config {
    /// Trace directory, NUL-terminated for system calls made without
    /// allocating.
    pub dir_c: std::ffi::CString,
    /// The trace directory's identity (device, inode) when the recording
    /// started: a directory found at [`Config::dir_c`] later is used
    /// only if it is that one.
    pub dir_id: Option<(u64, u64)>,
    /// `DIR.old`, where `ftail record` moves a trace when it records into
    /// `DIR` again: the runtime follows its trace there.
    pub dir_old_c: std::ffi::CString,
    /// Include globs (empty: everything).
    pub include: Vec<String>,
    /// Exclude globs.
    pub exclude: Vec<String>,
    /// Maximum recorded depth.
    pub depth: u64,
    /// Tail strategy.
    pub tail: TailMode,
    /// Whether calls into modules without site tables (library calls)
    /// are recorded (`--no-libcall` turns it off).
    pub libcall: bool,
    /// The most events one thread's buffer may grow to
    /// ([`MAX_BUFFER_EVENTS`] unless `--buffer-events` lowers it).
    pub buffer_events: u64,
    /// Whether `--buffer-events` set [`Config::buffer_events`].
    pub buffer_events_set: bool,
    /// The most bytes the trace's event files may take together, when
    /// no budget file says so (`FTAIL_MAX_SIZE`; `u64::MAX`: no limit).
    pub max_size: u64,
    /// Trace-stack entries per thread.
    pub stack_entries: u64,
    /// Bytes of each thread's ring (`--ring`; 0: no ring, the buffers
    /// grow and keep everything).
    pub ring: u64,
    /// The signal that takes a snapshot of the rings (`--snapshot-signal`;
    /// 0: none).
    pub snapshot_signal: i32,
    /// Start with tracing off (`--off`).
    pub off: bool,
    /// Start the control agent (`--ctl`, implied by `--off`).
    pub ctl: bool,
    /// The watcher of `ftail record` to tell of the exit, if any.
    pub watch: Option<Watch>,
    /// The user who started the recording: the one the control agent
    /// answers (with root), whatever user the program has become since.
    pub owner_uid: u32,
    /// Experiment (`FTAIL_HUGEPAGE=1`): event files that keep every event
    /// are mapped with `MADV_HUGEPAGE`, so that a filesystem with large
    /// folios may map them 2 MiB at a time (`bench/keep-cost.sh`).
    pub hugepage: bool,
    /// Whether the trace directory holds the rules of `-A`, `-R` and `-a`
    /// (`FTAIL_ARGSPEC=1`).
    pub argspec: bool,
    /// Bytes of each thread's drained ring (`--drain`; 0: none): a
    /// whole number of chunks, at least two.
    pub drain: u64,
    /// The trigger rules of `-T` and `--snapshot-on`, one a line
    /// ([`ftail_abi::trigger::TRIGGERS_ENV`]).
    pub triggers: Option<String>,
    /// Least time between two snapshots triggers take, in ns
    /// ([`ftail_abi::trigger::SNAPSHOT_INTERVAL_ENV`]).
    pub snapshot_interval: Option<u64>,
}

/// Most events a thread's buffer may grow to (2^36: 0.5 to 1 TiB);
/// larger values are clamped, and `KEY.info` says what was used. The
/// buffer grows as the thread writes; `--max-size` bounds the whole
/// trace.
pub const MAX_BUFFER_EVENTS: u64 = 1 << 36;
/// The largest drained ring per thread (`--drain`).
const MAX_DRAIN: u64 = 1 << 30;

/// The smallest and largest ring per thread (`--ring`).
pub const MIN_RING: u64 = 4 << 10;
/// See [`MIN_RING`].
pub const MAX_RING: u64 = 1 << 36;
/// Most trace-stack entries per thread (frames deeper than this are
/// counted as lost); each costs 64 bytes of reserved address space.
pub const MAX_STACK_ENTRIES: u64 = 1 << 20;

/// Environment variable: trace directory; without it the runtime is idle.
pub const DIR_ENV: &str = "FTAIL_DIR";
/// Environment variable: the trace directory's `DEVICE:INODE` when
/// `ftail record` created it (carried to children, so that a program
/// `exec`ed after the trace was moved to `DIR.old` finds it there).
pub const DIR_ID_ENV: &str = "FTAIL_DIR_ID";

/// Environment variable: the user who started the recording (`ftail
/// record`'s effective uid); without it, the process's effective uid at
/// start-up.
pub const OWNER_UID_ENV: &str = "FTAIL_CTL_UID";

/// `DEVICE:INODE` as `ftail record` writes it.
fn parse_dir_id(text: &str) -> Option<(u64, u64)> {
    let (dev, ino) = text.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// The identity of the directory at `path` now, not through a link.
fn dir_id_now(path: &std::ffi::CStr) -> Option<(u64, u64)> {
    // SAFETY: a zeroed stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated; lstat fills `st`.
    let found = unsafe { libc::lstat(path.as_ptr(), &mut st) } == 0;
    (found && st.st_mode & libc::S_IFMT == libc::S_IFDIR).then_some((st.st_dev, st.st_ino))
}

/// `DIR.old` for `DIR` (`trace/` gives `trace.old`), as `ftail record`
/// names it.
fn old_path(dir: &[u8]) -> std::ffi::CString {
    let end = dir
        .iter()
        .rposition(|&b| b != b'/')
        .map_or(dir.len(), |i| i + 1);
    let mut old = dir[..end].to_vec();
    old.extend_from_slice(b".old");
    std::ffi::CString::new(old).unwrap_or_default()
}

/// `ftail record`'s watcher, from `FTAIL_WATCH=PID:NAME`: the process
/// that tells it of its exit, and its abstract socket's name.
#[derive(Debug)]
pub struct Watch {
    /// The process `ftail record` started.
    pub pid: u32,
    name: [u8; 64],
    len: usize,
}

impl Watch {
    fn parse(text: &str) -> Option<Watch> {
        let (pid, name) = text.split_once(':')?;
        let mut w = Watch {
            pid: pid.parse().ok()?,
            name: [0; 64],
            len: name.len(),
        };
        if name.is_empty() || name.len() > w.name.len() {
            return None;
        }
        w.name[..name.len()].copy_from_slice(name.as_bytes());
        Some(w)
    }

    /// The socket's name, without the abstract namespace's NUL.
    pub fn name(&self) -> &[u8] {
        &self.name[..self.len]
    }
}

fn env_var(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

fn globs(text: Option<String>) -> Vec<String> {
    text.map(|v| {
        v.split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

/// The value of `name` in a file of `NAME=VALUE` lines: the values of
/// every line that names it, joined with line breaks; `None` when none
/// does.
pub fn file_lines(text: &[u8], name: &str) -> Option<Vec<u8>> {
    let mut lines = text.split(|&b| b == b'\n').filter_map(|line| {
        let eq = line.iter().position(|&b| b == b'=')?;
        (&line[..eq] == name.as_bytes()).then(|| &line[eq + 1..])
    });
    let mut value = lines.next()?.to_vec();
    for more in lines {
        value.push(b'\n');
        value.extend_from_slice(more);
    }
    Some(value)
}

impl Config {
    /// Reads the configuration; `None` when no trace directory is set.
    pub fn from_env() -> Option<Config> {
        Config::from_vars(env_var)
    }

    /// Reads the configuration from a file of `NAME=VALUE` lines with the
    /// environment's names (`attach`: a running process's environment
    /// cannot be set); `None` when it names no trace directory. A value
    /// of several lines (the trigger rules) is written as one `NAME=LINE`
    /// line per line, in order ([`file_lines`]).
    pub fn from_file(text: &[u8]) -> Option<Config> {
        use std::os::unix::ffi::OsStrExt;
        Config::from_vars(|name| {
            file_lines(text, name).map(|v| std::ffi::OsStr::from_bytes(&v).to_os_string())
        })
    }

    fn from_vars(lookup: impl Fn(&str) -> Option<OsString>) -> Option<Config> {
        let var = |name: &str| {
            lookup(name)
                .map(|v: OsString| v.to_string_lossy().into_owned())
                .filter(|v| !v.is_empty())
        };
        let dir_c = std::ffi::CString::new(lookup(DIR_ENV)?.into_encoded_bytes()).ok()?;
        if dir_c.is_empty() {
            return None;
        }
        let num = |n: &str, default: u64| var(n).and_then(|v| v.parse().ok()).unwrap_or(default);
        let dir_id = match var(DIR_ID_ENV) {
            Some(text) => parse_dir_id(&text),
            None => dir_id_now(&dir_c),
        };
        Some(Config {
            dir_old_c: old_path(dir_c.as_bytes()),
            dir_id,
            dir_c,
            include: globs(var("FTAIL_FILTER")),
            exclude: globs(var("FTAIL_EXCLUDE")),
            depth: num("FTAIL_DEPTH", u64::MAX),
            tail: match var("FTAIL_TAIL").as_deref() {
                Some("mark") => TailMode::Mark,
                Some("convert") => TailMode::Convert,
                _ => TailMode::Auto,
            },
            libcall: var("FTAIL_LIBCALL").is_none_or(|v| v != "0"),
            buffer_events: num("FTAIL_BUFFER_EVENTS", MAX_BUFFER_EVENTS)
                .clamp(16, MAX_BUFFER_EVENTS),
            buffer_events_set: var("FTAIL_BUFFER_EVENTS").is_some(),
            max_size: num("FTAIL_MAX_SIZE", u64::MAX).max(1 << 20),
            ring: match num("FTAIL_RING", 0) {
                0 => 0,
                n => n.clamp(MIN_RING, MAX_RING) / 16 * 16,
            },
            snapshot_signal: match num("FTAIL_SNAPSHOT_SIGNAL", 0) {
                // Not those the runtime or the loader need for themselves.
                n @ 1..=64 if ![9, 19, 5].contains(&n) => n as i32,
                _ => 0,
            },
            stack_entries: num("FTAIL_STACK_ENTRIES", 1 << 16).clamp(16, MAX_STACK_ENTRIES),
            off: var("FTAIL_OFF").is_some_and(|v| v == "1"),
            ctl: var("FTAIL_CTL").is_some_and(|v| v == "1"),
            watch: var("FTAIL_WATCH").and_then(|v| Watch::parse(&v)),
            owner_uid: var(OWNER_UID_ENV)
                .and_then(|v| v.parse().ok())
                // SAFETY: geteuid has no preconditions.
                .unwrap_or_else(|| unsafe { libc::geteuid() }),
            hugepage: var("FTAIL_HUGEPAGE").is_some_and(|v| v == "1"),
            argspec: var("FTAIL_ARGSPEC").is_some_and(|v| v == "1"),
            drain: match num("FTAIL_DRAIN", 0) {
                0 => 0,
                n => {
                    let chunk = ftail_abi::trace::drain::CHUNK;
                    n.clamp(2 * chunk, MAX_DRAIN) / chunk * chunk
                }
            },
            triggers: var(ftail_abi::trigger::TRIGGERS_ENV),
            snapshot_interval: var(ftail_abi::trigger::SNAPSHOT_INTERVAL_ENV)
                .and_then(|v| v.parse().ok()),
        })
    }
}

/// Shell-style glob: `*` any run, `?` one character.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::{file_lines, glob, old_path, parse_dir_id, Config, Watch};

    #[test]
    fn the_old_trace_is_named_as_ftail_record_names_it() {
        assert_eq!(old_path(b"/t/trace").as_bytes(), b"/t/trace.old");
        assert_eq!(old_path(b"trace//").as_bytes(), b"trace.old");
        assert_eq!(parse_dir_id("2049:131"), Some((2049, 131)));
        assert_eq!(parse_dir_id("2049"), None);
    }

    #[test]
    fn globs_match_like_a_shell() {
        assert!(glob("*", "main"));
        assert!(glob("lua_*", "lua_pushnil"));
        assert!(!glob("lua_*", "luaV_execute"));
        assert!(glob("*exec*", "luaV_execute"));
        assert!(glob("f?o", "foo"));
        assert!(!glob("f?o", "fooo"));
        assert!(glob("a*b*c", "a_x_b_y_c"));
        assert!(!glob("a*b*c", "a_x_b_y"));
    }

    #[test]
    fn a_configuration_file_reads_like_the_environment() {
        let text = b"FTAIL_DIR=/t/trace dir\nFTAIL_FILTER=a*,b\nFTAIL_DEPTH=\nFTAIL_RING=8192\n\
                     FTAIL_TRIGGERS=work@depth=1\nnot a line\nFTAIL_TRIGGERS=step@notrace\n";
        let value = |name| file_lines(text, name);
        assert_eq!(value("FTAIL_DIR").as_deref(), Some(&b"/t/trace dir"[..]));
        // A value of several lines is one line of the name per line.
        assert_eq!(
            value("FTAIL_TRIGGERS").as_deref(),
            Some(&b"work@depth=1\nstep@notrace"[..])
        );
        assert_eq!(value("FTAIL_DEPTH").as_deref(), Some(&b""[..]));
        assert_eq!(value("FTAIL_OFF"), None);
        let cfg = Config::from_file(text).unwrap();
        assert_eq!(cfg.dir_c.to_bytes(), b"/t/trace dir");
        assert_eq!(cfg.include, ["a*", "b"]);
        assert_eq!(cfg.triggers.as_deref(), Some("work@depth=1\nstep@notrace"));
        assert_eq!((cfg.depth, cfg.ring), (u64::MAX, 8192));
        assert!(
            Config::from_file(b"FTAIL_FILTER=x\n").is_none(),
            "no directory"
        );
    }

    #[test]
    fn the_watcher_is_named_by_pid_and_socket() {
        let w = Watch::parse("4242:ftail-watch-4242-00ff").unwrap();
        assert_eq!((w.pid, w.name()), (4242, &b"ftail-watch-4242-00ff"[..]));
        for bad in [
            "",
            "4242",
            "4242:",
            "x:name",
            &format!("1:{}", "n".repeat(65)),
        ] {
            assert!(Watch::parse(bad).is_none(), "{bad}");
        }
    }
}

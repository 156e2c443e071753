//! What a process image writes about itself: `KEY.info` (the run's
//! metadata, `key=value` lines with escaped values) and `KEY.modules`
//! (every module with site tables it loaded and unloaded, with the time
//! of each; see `ftail_abi::trace` for the line formats).
//!
//! Written at start-up, when a library is loaded or unloaded, and in a
//! forked child (for its own files). Files are created exclusively in the
//! trace directory (`files.rs`).

use ftail_abi::trace::{escape_value, TRACE_VERSION};

use crate::found::modules::Module;
use crate::plan::Patched;
use crate::process::files;
use crate::process::key::key_name;

/// What start-up measured and did, for `KEY.info` (kept for forked
/// children, which write their own).
#[derive(Clone, Copy)]
pub struct Start {
    /// Time-stamp counter ticks per second.
    pub hz: u64,
    /// The counter at start-up.
    pub start_tsc: u64,
    /// What patching the modules loaded at start-up did.
    pub patched: Patched,
    /// Whether libraries loaded later are patched (the loader hook).
    pub dlopen_hooked: bool,
}

/// Writes `KEY.info` into `fd` (the file `key::choose` created) and
/// closes it.
pub fn write_info(fd: i32, s: &Start) {
    let text = info_text(s);
    files::write_all(fd, text.as_bytes());
    files::close(fd);
}

fn info_text(s: &Start) -> String {
    let Some(cfg) = crate::CONFIG.get() else {
        return String::new();
    };
    let cmdline = std::fs::read("/proc/self/cmdline").unwrap_or_default();
    // Each argument escaped, so that none can forge a line; joined with
    // the unit separator (escaped inside an argument).
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| escape_value(&String::from_utf8_lossy(a)))
        .collect();
    let realtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let p = s.patched;
    let fields: [(&str, String); 26] = [
        ("version", TRACE_VERSION.to_string()),
        ("pid", std::process::id().to_string()),
        // SAFETY: getppid has no preconditions.
        ("ppid", unsafe { libc::getppid() }.to_string()),
        ("exe", escape_value(&exe_path())),
        ("cmdline", args.join("\x1f")),
        ("tsc_hz", s.hz.to_string()),
        ("start_tsc", s.start_tsc.to_string()),
        ("start_realtime_ns", realtime.to_string()),
        ("tail", format!("{:?}", cfg.tail).to_lowercase()),
        ("filter", escape_value(&cfg.include.join(","))),
        ("exclude", escape_value(&cfg.exclude.join(","))),
        (
            "depth",
            (if cfg.depth == u64::MAX { 0 } else { cfg.depth }).to_string(),
        ),
        (
            "buffer_events",
            if cfg.buffer_events_set {
                cfg.buffer_events.to_string()
            } else {
                "unlimited".to_string()
            },
        ),
        ("ring", cfg.ring.to_string()),
        ("drain", cfg.drain.to_string()),
        ("snapshot_signal", cfg.snapshot_signal.to_string()),
        (
            "max_size",
            match crate::record::budget::max() {
                u64::MAX => "unlimited".to_string(),
                n => n.to_string(),
            },
        ),
        ("stack_entries", cfg.stack_entries.to_string()),
        ("tracing", (if cfg.off { "off" } else { "on" }).to_string()),
        ("control_agent", (cfg.ctl || cfg.off).to_string()),
        ("patched_functions", p.functions.to_string()),
        ("patched_sites", p.sites.to_string()),
        ("skipped_sites", p.skipped.to_string()),
        ("converted_tails", p.converted.to_string()),
        ("dlopen_hook", s.dlopen_hooked.to_string()),
        ("skipped_modules", p.modules_skipped.to_string()),
    ];
    fields.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

fn exe_path() -> String {
    std::fs::read_link("/proc/self/exe")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `path` with every symbolic link resolved, through libc's `realpath`
/// into a buffer of ours (`std::fs::canonicalize` lets libc allocate the
/// result with the program's `malloc`).
fn real_path(path: &str) -> Option<String> {
    let c = std::ffi::CString::new(path).ok()?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `c` is NUL-terminated and `buf` holds PATH_MAX bytes and a
    // NUL, as realpath requires of a caller-supplied buffer.
    let p = unsafe { libc::realpath(c.as_ptr(), buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

/// The module's path for the metadata: absolute, so that a trace can be
/// read from another directory.
pub fn module_path(m: &Module) -> String {
    if m.path.is_empty() {
        return exe_path();
    }
    real_path(&m.path).unwrap_or_else(|| m.path.clone())
}

/// The `load` line of a module planned at time `tsc`.
pub fn load_line(m: &Module, tsc: u64, p: &Patched) -> String {
    let id = m.build_id.as_ref().map_or_else(
        || "-".to_string(),
        |id| id.iter().map(|b| format!("{b:02x}")).collect(),
    );
    format!(
        "load {tsc} {:#x} {id} {} {} {}\n",
        m.base,
        p.sites,
        p.skipped,
        escape_value(&module_path(m))
    )
}

/// The `libcall` lines of the library functions module `m` calls: the
/// entry address its thunk's events record, the name, and the module
/// that defines it (`-`: none found).
pub fn libcall_lines(tsc: u64, m: &Module, libs: &[crate::plan::LibCall]) -> String {
    let own = || module_path(m);
    libs.iter()
        .filter(|l| l.entry != 0)
        .map(|l| {
            let module = match l.module.as_deref() {
                None => own(),
                Some("") => "-".to_string(),
                Some(path) => path.to_string(),
            };
            format!(
                "libcall {tsc} {:#x} {:#x} {} {}\n",
                m.base,
                l.entry,
                escape_value(&l.name),
                escape_value(&module)
            )
        })
        .collect()
}

/// The `unload` line of the module at `base`, unmapped at time `tsc`.
pub fn unload_line(tsc: u64, base: u64) -> String {
    format!("unload {tsc} {base:#x}\n")
}

/// The `skip` line of a module left untraced as a whole, and why.
pub fn skip_line(m: &Module, reason: &str) -> String {
    format!(
        "skip {:#x} {} {}\n",
        m.base,
        reason.replace(' ', "_"),
        escape_value(&module_path(m))
    )
}

/// Writes `lines` into the new `KEY.modules` (`fd`) and closes it.
pub fn write_modules(fd: i32, lines: &str) {
    files::write_all(fd, lines.as_bytes());
    files::close(fd);
}

/// Appends lines to `KEY.modules`.
pub fn append_modules(lines: &str) {
    if let Ok(fd) = files::open_append(&mut key_name(b".modules")) {
        files::write_all(fd, lines.as_bytes());
        files::close(fd);
    }
}

//! Which functions are traced, and changing that while the program runs.
//!
//! The selection (tracing on or off, include and exclude globs) decides,
//! for every planned module, what each site should hold
//! ([`ModulePlan::wanted`]); applying a selection writes the sites that
//! differ. At start-up and when a library is mapped the writes are
//! quiescent; a change while the program runs uses the live protocol of
//! `poke.rs`.
//!
//! A change comes from the control agent (`agent.rs`: a thread listening
//! on the abstract Unix socket `ftail-ctl-PID`, started only when `ftail
//! record` is given `--ctl` or `--off`) or from the program itself through
//! [`ftail_ctl`]. Both take [`CONTROL`]; nothing that holds it calls into
//! the dynamic loader, which calls in here (through `dlhook.rs`) with its
//! own lock held.
//!
//! Switching a function off while a thread is inside it leaves that
//! thread's entry open; it is closed as unwound by the next event that
//! shows the frame gone, or when the thread or process ends.

use std::collections::BTreeSet;

use crate::code::poke;
use crate::code::stubs::Trampolines;
use crate::control::metadata;
use crate::found::modules::Module;
use crate::plan::libcall::Known;
use crate::plan::{plan_module, ModulePlan, Patched};
use crate::process::config::glob;
use crate::process::sync::{Locked, RawLock};

/// What is traced.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Tracing on at all.
    pub enabled: bool,
    /// Include globs (empty: every function).
    pub include: Vec<String>,
    /// Exclude globs.
    pub exclude: Vec<String>,
}

impl Selection {
    /// Whether the function called `name` is traced.
    pub fn selects(&self, name: &str) -> bool {
        let included = self.include.is_empty() || self.include.iter().any(|g| glob(g, name));
        self.enabled && included && !self.exclude.iter().any(|g| glob(g, name))
    }
}

struct Planned {
    plan: ModulePlan,
    /// Its slot in the SIGTRAP handler's site tables.
    slot: Option<usize>,
    /// Its `load` line in `KEY.modules` (written again by a forked child).
    load_line: String,
}

struct Control {
    modules: Vec<Planned>,
    selection: Selection,
    trampolines: Trampolines,
}

static CONTROL: Locked<Option<Control>> = Locked::new(None);

/// The control lock, for the fork handlers.
pub fn lock() -> &'static RawLock {
    CONTROL.raw()
}

/// Sets the initial selection; called once at start-up.
pub fn init(selection: Selection, trampolines: Trampolines) {
    CONTROL.with(|c| {
        follow_indirect(&selection);
        *c = Some(Control {
            modules: Vec::new(),
            selection,
            trampolines,
        })
    });
}

/// Plans a module found at time `tsc` and writes its sites for the
/// current selection (quiescent: nothing runs the module's code yet,
/// unless `live`); logs it in `KEY.modules`.
pub fn add_module(m: &Module, tsc: u64, known: &Known, live: bool) -> Patched {
    CONTROL.with(|c| {
        let Some(c) = c.as_mut() else {
            return Patched::default();
        };
        let plan = plan_module(m, c.trampolines, known);
        let slot = poke::publish_sites(
            plan.sites
                .iter()
                .map(|s| (s.addr - u64::from(s.lead), s.resume))
                .collect(),
        );
        let writes = if live {
            Writes::Live
        } else {
            Writes::Quiescent
        };
        let mut done = apply(&plan, &c.selection, writes);
        let mut lines = String::new();
        if let Some(why) = m.damage.as_deref().or(plan.failure) {
            done.modules_skipped = 1;
            lines.push_str(&metadata::skip_line(m, why));
        }
        let mut load_line = metadata::load_line(m, tsc, &done);
        load_line.push_str(&metadata::libcall_lines(tsc, m, &plan.libcalls));
        lines.push_str(&load_line);
        metadata::append_modules(&lines);
        c.modules.push(Planned {
            plan,
            slot,
            load_line,
        });
        done
    })
}

/// Forgets the modules whose load bias is not in `loaded` (unloaded by
/// time `tsc`), logging each in `KEY.modules`.
pub fn keep_modules(loaded: &BTreeSet<u64>, tsc: u64) {
    CONTROL.with(|c| {
        let Some(c) = c.as_mut() else { return };
        let mut lines = String::new();
        c.modules.retain_mut(|p| {
            let keep = loaded.contains(&p.plan.base);
            if !keep {
                if let Some(slot) = p.slot {
                    poke::withdraw_sites(slot);
                }
                p.plan.release();
                lines.push_str(&metadata::unload_line(tsc, p.plan.base));
            }
            keep
        });
        if !lines.is_empty() {
            metadata::append_modules(&lines);
        }
    })
}

/// The `load` lines of the modules loaded now, for a forked child's own
/// `KEY.modules`.
pub fn loaded_lines() -> String {
    CONTROL.with(|c| {
        c.as_ref()
            .map(|c| c.modules.iter().map(|p| p.load_line.as_str()).collect())
            .unwrap_or_default()
    })
}

/// How [`apply`] writes the sites that differ.
#[derive(Clone, Copy, PartialEq)]
enum Writes {
    /// Not at all: only count.
    None,
    /// Nothing runs the module's code (start-up, a library being mapped).
    Quiescent,
    /// Other threads may be running it.
    Live,
}

/// Writes the sites of `plan` that differ from what `selection` wants;
/// returns the module's state afterwards.
fn apply(plan: &ModulePlan, selection: &Selection, writes_how: Writes) -> Patched {
    let mut traced: Vec<bool> = plan.all_names().map(|n| selection.selects(n)).collect();
    traced.push(selection.enabled);
    let mut writes = Vec::new();
    let mut done = Patched {
        functions: traced[..plan.names.len()].iter().filter(|&&t| t).count() as u64,
        skipped: plan.skipped,
        ..Patched::default()
    };
    for site in &plan.sites {
        let want = plan.wanted(site, &traced);
        // SAFETY: planned sites lie in the module's executable segments,
        // mapped while the module is planned (unloaded modules are
        // forgotten first).
        let now = unsafe { std::slice::from_raw_parts(site.addr as *const u8, 5) };
        if want != site.off {
            done.sites += 1;
            done.converted += u64::from(ModulePlan::is_converted(site, &want));
        }
        if now == want {
            continue;
        }
        if !ModulePlan::is_ours(site, now) {
            done.skipped += 1;
            continue;
        }
        writes.push((site.addr, want, site.lead));
    }
    if writes_how != Writes::None {
        let batch = poke::Batch {
            text: &plan.text,
            writes: &writes,
        };
        poke::write_sites(&batch, writes_how == Writes::Live);
    }
    done
}

/// Library functions reached through pointers are chosen by name when
/// their thunk is handed out, and again at each change (`indirect.rs`).
fn follow_indirect(selection: &Selection) {
    crate::plan::indirect::select(selection.enabled, &selection.include, &selection.exclude);
}

/// Whether tracing is on.
pub fn enabled() -> bool {
    CONTROL.with(|c| c.as_ref().is_some_and(|c| c.selection.enabled))
}

/// Runs one control command: `on`, `off`, `filter GLOB,...`,
/// `exclude GLOB,...` (empty: none), `status` or `snapshot` (copies the
/// rings, `snapshot.rs`). Returns a one-line answer.
pub fn command(line: &str) -> Result<String, String> {
    CONTROL.with(|c| match c.as_mut() {
        Some(c) => run_command(c, line),
        None => Err("the runtime is not set up".into()),
    })
}

fn run_command(c: &mut Control, line: &str) -> Result<String, String> {
    let (verb, rest) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
    let globs = || -> Vec<String> {
        rest.split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut selection = c.selection.clone();
    match verb {
        "on" => {
            selection.enabled = true;
            crate::record::buffer::tracing_switched_on(crate::record::write::rdtsc());
            // Only a switch begins a session: frames open while tracing
            // stays on are the threads' own.
            if !c.selection.enabled {
                crate::record::session::begin();
            }
        }
        "off" => {
            selection.enabled = false;
            if c.selection.enabled {
                crate::record::session::end(crate::record::write::rdtsc());
            }
        }
        "filter" => selection.include = globs(),
        "exclude" => selection.exclude = globs(),
        "status" => {}
        "snapshot" => {
            return match crate::record::snapshot::take() {
                Ok((n, threads)) => Ok(format!("snapshot=snapshot-{n} threads={threads}")),
                Err(libc::EDQUOT) => Err("the snapshot was not taken: the trace has no room \
                     left for it (--max-size)"
                    .to_string()),
                Err(errno) => Err(format!(
                    "the snapshot failed: {}",
                    std::io::Error::from_raw_os_error(errno)
                )),
            }
        }
        _ => return Err(format!("unknown command {verb:?}")),
    }
    let how = if verb == "status" {
        Writes::None
    } else {
        Writes::Live
    };
    let mut total = Patched::default();
    for p in &c.modules {
        let done = apply(&p.plan, &selection, how);
        total.functions += done.functions;
        total.sites += done.sites;
        total.converted += done.converted;
    }
    if verb != "status" {
        follow_indirect(&selection);
    }
    c.selection = selection;
    let s = &c.selection;
    // The trace directory last: the rest of the line, whatever it holds.
    let dir = crate::CONFIG
        .get()
        .map(|c| c.dir_c.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(format!(
        "tracing={} filter={} exclude={} functions={} sites={} dir={dir}",
        if s.enabled { "on" } else { "off" },
        s.include.join(","),
        s.exclude.join(","),
        total.functions,
        total.sites,
    ))
}

/// The program's own control entry point: runs `command` (see
/// [`command`]); returns 0 when it succeeded, -1 otherwise. Not
/// async-signal-safe.
///
/// # Safety
///
/// `command` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ftail_ctl(command_text: *const libc::c_char) -> libc::c_int {
    if command_text.is_null() {
        return -1;
    }
    // SAFETY: per the contract.
    let text = unsafe { std::ffi::CStr::from_ptr(command_text) }.to_string_lossy();
    match command(&text) {
        Ok(_) => 0,
        Err(_) => -1,
    }
}

//! The process to attach to: who it runs as, what it has mapped, and the
//! reasons to refuse it, each said plainly before anything is done.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub exec: bool,
    pub offset: u64,
    pub path: Option<PathBuf>,
}

/// Parses `/proc/PID/maps`.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.splitn(6, ' ');
            let (range, perms, offset) = (f.next()?, f.next()?, f.next()?);
            let (_dev, _ino) = (f.next()?, f.next()?);
            let path = f.next().map(str::trim_start).filter(|p| p.starts_with('/'));
            let (start, end) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                exec: perms.as_bytes().get(2) == Some(&b'x'),
                offset: u64::from_str_radix(offset, 16).ok()?,
                path: path
                    .filter(|p| !p.ends_with(" (deleted)"))
                    .map(PathBuf::from),
            })
        })
        .collect()
}

/// A running process, as ftail sees it before attaching.
pub struct Target {
    pub pid: u32,
    pub maps: Vec<Mapping>,
    /// Its executable, for the summary.
    pub exe: PathBuf,
}

impl Target {
    /// The files mapped, each once, in the order of their first mapping.
    pub fn files(&self) -> Vec<&Path> {
        let mut seen: Vec<&Path> = Vec::new();
        for p in self.maps.iter().filter_map(|m| m.path.as_deref()) {
            if !seen.contains(&p) {
                seen.push(p);
            }
        }
        seen
    }

    /// A file of the process, read through its own root (a process in
    /// another mount namespace maps files by its own paths).
    pub fn read(&self, path: &Path) -> Result<Vec<u8>> {
        let inside = Path::new(&format!("/proc/{}/root", self.pid)).join(
            path.strip_prefix("/")
                .with_context(|| format!("{} is not an absolute path", path.display()))?,
        );
        std::fs::read(&inside).with_context(|| format!("reading {}", path.display()))
    }

    /// The first mapped file whose name `wanted` accepts.
    pub fn find_file(&self, wanted: impl Fn(&str) -> bool) -> Option<&Path> {
        self.files()
            .into_iter()
            .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&wanted))
    }

    /// The run-time address of the dynamic symbol `name` of `path`.
    pub fn symbol(&self, path: &Path, name: &str) -> Result<Option<u64>> {
        let data = self.read(path)?;
        let Some(sym) = LinkSymbol::find(&data, name, path)? else {
            return Ok(None);
        };
        Ok(self.relocate(path, &sym))
    }

    /// Where `sym` of `path` is at run time, if `path` is mapped: its
    /// mapping of offset 0 is its first segment's page.
    pub fn relocate(&self, path: &Path, sym: &LinkSymbol) -> Option<u64> {
        let first = self
            .maps
            .iter()
            .find(|m| m.offset == 0 && m.path.as_deref() == Some(path))?;
        Some(
            first
                .start
                .wrapping_sub(sym.first_page)
                .wrapping_add(sym.address),
        )
    }

    /// Whether the instruction at `rip` is in the code of one of `files`.
    pub fn code_of(&self, rip: u64, files: &[&Path]) -> bool {
        self.maps.iter().any(|m| {
            m.exec
                && (m.start..m.end).contains(&rip)
                && m.path.as_deref().is_some_and(|p| files.contains(&p))
        })
    }

    /// The mapped files that carry ftail's site tables (built through
    /// `ftail cc`).
    pub fn instrumented(&self) -> Vec<&Path> {
        self.files()
            .into_iter()
            .filter(|p| {
                self.maps
                    .iter()
                    .any(|m| m.exec && m.path.as_deref() == Some(p))
            })
            .filter(|p| self.read(p).is_ok_and(|data| has_sites(&data)))
            .collect()
    }
}

/// A dynamic symbol's link-time address, with the link-time page of its
/// file's first segment.
pub struct LinkSymbol {
    address: u64,
    first_page: u64,
}

impl LinkSymbol {
    /// The defined dynamic symbol `name` of the ELF image `data` (the
    /// file `path`).
    pub fn find(data: &[u8], name: &str, path: &Path) -> Result<Option<LinkSymbol>> {
        let elf = object::File::parse(data)
            .with_context(|| format!("{} is not an ELF file", path.display()))?;
        let Some(first) = elf.segments().map(|s| s.address()).min() else {
            return Ok(None);
        };
        Ok(elf
            .dynamic_symbols()
            .find(|s| s.is_definition() && s.name() == Ok(name))
            .map(|s| LinkSymbol {
                address: s.address(),
                first_page: first & !0xfff,
            }))
    }
}

/// Whether an ELF image carries ftail's site tables.
fn has_sites(data: &[u8]) -> bool {
    object::File::parse(data).is_ok_and(|elf| {
        elf.section_by_name(ftail_abi::NOTE_SECTION)
            .is_some_and(|s| s.size() > 0)
    })
}

/// A field of `/proc/PID/status`.
fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
}

/// Looks process `pid` up and refuses what ftail must not or cannot
/// attach to: another user's process, one another tracer holds, one the
/// kernel's ptrace policy forbids (`ptrace_scope`, the file of
/// `kernel.yama.ptrace_scope`), one with no ftail sites.
pub fn examine(pid: u32, ptrace_scope: &Path) -> Result<Target> {
    let me = crate::private_dir::euid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|_| anyhow::anyhow!("there is no process {pid}"))?;
    if status_field(&status, "Tgid") != Some(&pid.to_string()) {
        bail!(
            "{pid} is a thread of process {}, not a process; attach to the process",
            status_field(&status, "Tgid").unwrap_or("?")
        );
    }
    let uids: Vec<u32> = status_field(&status, "Uid")
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|u| u.parse().ok())
        .collect();
    if uids.len() < 3 || uids[..3].iter().any(|&u| u != me) {
        let theirs = uids.get(1).map_or("?".to_string(), u32::to_string);
        bail!(
            "process {pid} runs as uid {theirs}, not as you (uid {me}): ftail attaches only to \
             your own processes, whose trace is then written as you{}",
            if me == 0 {
                "; run ftail as that user (e.g. `runuser -u USER -- ftail record -p PID`)"
            } else {
                ""
            }
        );
    }
    match status_field(&status, "TracerPid") {
        Some(t) if t != "0" => bail!(
            "process {pid} is already being traced by process {t} (a debugger or tracer); \
             detach it first"
        ),
        _ => {}
    }
    check_ptrace_scope(ptrace_scope, me)?;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .with_context(|| format!("reading the mappings of process {pid}"))?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    Ok(Target {
        pid,
        maps: parse_maps(&maps),
        exe,
    })
}

/// Refuses when `kernel.yama.ptrace_scope` (read from `path`; absent: no
/// Yama) forbids this user to attach to a process that is not its child.
pub fn check_ptrace_scope(path: &Path, euid: u32) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let scope = text.trim();
    let fix = "`sudo sysctl kernel.yama.ptrace_scope=0` allows it until the next boot";
    match scope {
        "0" => Ok(()),
        "1" | "2" if euid == 0 => Ok(()),
        "1" => bail!(
            "kernel.yama.ptrace_scope is 1: a process may only be traced by its parent, so ftail \
             cannot attach to it; run ftail as root, or {fix}"
        ),
        "2" => bail!(
            "kernel.yama.ptrace_scope is 2: only root may attach to a process; run ftail as root \
             (or {fix})"
        ),
        "3" => bail!(
            "kernel.yama.ptrace_scope is 3: no process may attach to another until the next boot; \
             start the program under `ftail record --off` instead and switch tracing on with \
             `ftail ctl PID on`"
        ),
        other => bail!("{}: unexpected value {other:?}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse_with_and_without_paths() {
        let m = parse_maps(
            "55d0c0a00000-55d0c0a01000 r-xp 00001000 08:01 1234   /usr/bin/my prog\n\
             7ffd1000-7ffd2000 rw-p 00000000 00:00 0          [stack]\n\
             7f0000-7f1000 r--p 00000000 08:01 99 /gone (deleted)\n",
        );
        assert_eq!(m.len(), 3);
        assert!(m[0].exec && m[0].offset == 0x1000);
        assert_eq!(m[0].path.as_deref(), Some(Path::new("/usr/bin/my prog")));
        assert!(m[1].path.is_none() && m[2].path.is_none());
    }

    #[test]
    fn ptrace_scope_refusals_name_the_setting_and_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ptrace_scope");
        assert!(check_ptrace_scope(&file, 1000).is_ok(), "no Yama");
        for (value, uid, refused) in [
            ("0\n", 1000, false),
            ("1\n", 1000, true),
            ("1\n", 0, false),
            ("2\n", 1000, true),
            ("2\n", 0, false),
            ("3\n", 0, true),
        ] {
            std::fs::write(&file, value).unwrap();
            let r = check_ptrace_scope(&file, uid);
            assert_eq!(r.is_err(), refused, "{value:?} uid {uid}");
            if let Err(e) = r {
                let text = e.to_string();
                assert!(text.contains("kernel.yama.ptrace_scope is"), "{text}");
            }
        }
    }
}

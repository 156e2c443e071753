//! A trace directory's listing and metadata: its process images (one per
//! process, and one more per `exec`), each with its metadata, modules,
//! status and thread files. Nothing here reads an event: threads are
//! streamed one at a time from [`ThreadFile::events`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use ftail_abi::trace::{
    unescape_value, ProcessStatus, TraceBudget, BUDGET_FILE, BUDGET_MAGIC, EVENTS_SUFFIX,
    STATUS_MAGIC, STATUS_SUFFIX, TRACE_VERSION,
};

use super::events::{Events, Header};

/// A trace directory's listing.
#[derive(Debug)]
pub struct TraceDir {
    /// Its path.
    pub dir: PathBuf,
    /// Every process image, ordered by pid, then exec generation.
    pub images: Vec<Image>,
    /// The trace's size budget (`--max-size`), if it has a readable one.
    pub budget: Option<TraceBudget>,
    /// For a snapshot a trigger took, the call that took it.
    pub mark: Option<ftail_abi::trigger::Mark>,
}

/// One traced process image (a process, or what it became after `exec`).
#[derive(Debug)]
pub struct Image {
    /// Process id.
    pub pid: u32,
    /// Name stem of its files: the pid, or `PID~N` for the N-th image
    /// after the first one `exec`ed.
    pub key: String,
    /// Its `KEY.info` key/value pairs, unescaped (`cmdline` keeps its
    /// arguments apart with `\x1f`: see [`Image::args`]).
    pub info: BTreeMap<String, String>,
    /// Modules with site tables, in load order; one entry per load (a
    /// library loaded again is another module).
    pub modules: Vec<Module>,
    /// Modules left untraced as a whole: load bias, reason, path.
    pub skipped_modules: Vec<(u64, String, PathBuf)>,
    /// What the process counted while it ran (`KEY.status`), if readable.
    pub status: Option<ProcessStatus>,
    /// Its threads' event files, by thread id.
    pub threads: Vec<ThreadFile>,
}

/// One thread's event file.
#[derive(Debug, Clone)]
pub struct ThreadFile {
    /// Thread id.
    pub tid: u32,
    /// The file.
    pub path: PathBuf,
    /// Its header, or what is wrong with it.
    pub header: Result<Header, String>,
}

impl ThreadFile {
    /// The thread's events, streamed.
    ///
    /// # Errors
    ///
    /// A message naming the file when it cannot be read as an event file.
    pub fn events(&self) -> Result<Events, String> {
        Events::open(&self.path).map(|(_, e)| e)
    }

    /// The thread's name, as the header recorded it.
    pub fn name(&self) -> &str {
        self.header.as_ref().map_or("", |h| h.name.as_str())
    }
}

/// A module with site tables, as the traced process loaded it.
#[derive(Debug, Clone)]
pub struct Module {
    /// Load bias.
    pub base: u64,
    /// GNU build id (hex), when the module has one.
    pub build_id: Option<String>,
    /// Absolute path.
    pub path: PathBuf,
    /// Time-stamp counter when it was loaded (0: before anything ran).
    pub loaded: u64,
    /// Time-stamp counter when it was unloaded, if it was.
    pub unloaded: Option<u64>,
    /// Sites planned, and sites left alone.
    pub sites: (u64, u64),
    /// The library functions its call sites call (`libcall` lines): the
    /// entry address their events record, and the symbol.
    pub libcalls: Vec<(u64, String)>,
    /// The object that defines each library function it calls, by the
    /// function's entry address (absent from older traces).
    pub libcall_modules: BTreeMap<u64, PathBuf>,
    /// Library functions reached by indirect calls that the runtime could
    /// not name (`indirect` lines with `-`): the thunk's entry, the
    /// target's module file and its link-time offset there, which
    /// `symbols::library_calls` names from that file's symbols.
    pub indirect: Vec<(u64, PathBuf, u64)>,
}

impl Module {
    /// Whether the module was mapped at time `tsc`.
    pub fn mapped_at(&self, tsc: u64) -> bool {
        self.loaded <= tsc && self.unloaded.is_none_or(|u| tsc < u)
    }
}

/// Errors opening a trace.
#[derive(Debug)]
pub enum Error {
    /// The directory cannot be read.
    Io(PathBuf, std::io::Error),
    /// The directory holds no trace.
    Empty(PathBuf),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(p, e) => write!(f, "{}: {e}", p.display()),
            Error::Empty(p) => write!(f, "{}: no trace here (no *.info files)", p.display()),
        }
    }
}

impl std::error::Error for Error {}

impl Image {
    /// The program's arguments as recorded.
    pub fn args(&self) -> Vec<String> {
        self.info
            .get("cmdline")
            .map(|c| c.split('\x1f').map(unescape_value).collect())
            .unwrap_or_default()
    }

    /// The program's arguments as a shell would need them, control
    /// characters escaped: what the text views show.
    pub fn command_line(&self) -> String {
        crate::untrusted::printable::command_line(&self.args())
    }

    /// Time-stamp counter ticks per second.
    pub fn tsc_hz(&self) -> u64 {
        self.info
            .get("tsc_hz")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000_000)
    }
}

impl TraceDir {
    /// Lists `dir` and reads its metadata.
    ///
    /// # Errors
    ///
    /// When the directory cannot be read or holds no `*.info` file.
    pub fn open(dir: &Path) -> Result<TraceDir, Error> {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::Io(dir.to_path_buf(), e))?;
        // Regular files only: a link planted in the directory is not the
        // trace's.
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut images: BTreeMap<String, Image> = BTreeMap::new();
        for n in &names {
            let Some(key) = n.strip_suffix(".info") else {
                continue;
            };
            let Ok(pid) = key.split('~').next().unwrap_or("").parse::<u32>() else {
                continue;
            };
            let info = read_info(&dir.join(n));
            let (modules, skipped_modules) = read_modules(&dir.join(format!("{key}.modules")));
            let status = read_status(&dir.join(format!("{key}{STATUS_SUFFIX}")));
            images.insert(
                key.to_string(),
                Image {
                    pid,
                    key: key.to_string(),
                    info,
                    modules,
                    skipped_modules,
                    status,
                    threads: Vec::new(),
                },
            );
        }
        if images.is_empty() {
            return Err(Error::Empty(dir.to_path_buf()));
        }
        for n in &names {
            let Some(stem) = n.strip_suffix(EVENTS_SUFFIX) else {
                continue;
            };
            let Some((key, tid)) = stem.rsplit_once('-') else {
                continue;
            };
            // `TID~N`: a thread id that came back.
            let Ok(tid) = tid.split('~').next().unwrap_or("").parse::<u32>() else {
                continue;
            };
            if let Some(image) = images.get_mut(key) {
                let path = dir.join(n);
                let header = Events::open(&path).map(|(h, _)| h);
                image.threads.push(ThreadFile { tid, path, header });
            }
        }
        let mut images: Vec<Image> = images.into_values().collect();
        images.sort_by(|a, b| (a.pid, a.key.len(), &a.key).cmp(&(b.pid, b.key.len(), &b.key)));
        for i in &mut images {
            i.threads.sort_by_key(|t| t.tid);
        }
        Ok(TraceDir {
            dir: dir.to_path_buf(),
            images,
            budget: read_budget(&dir.join(BUDGET_FILE)),
            mark: ftail_abi::trigger::Mark::parse(&read_small_text(
                &dir.join(ftail_abi::trigger::MARK_FILE),
            )),
        })
    }
}

/// A small text file of the trace's, or nothing.
fn read_small_text(path: &Path) -> String {
    crate::untrusted::files::read_regular(path, crate::untrusted::files::SMALL_LIMIT)
        .map(|d| String::from_utf8_lossy(&d).into_owned())
        .unwrap_or_default()
}

fn read_info(path: &Path) -> BTreeMap<String, String> {
    read_small_text(path)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            // cmdline's arguments are escaped one by one (Process::args).
            let v = if k == "cmdline" {
                v.to_string()
            } else {
                unescape_value(v)
            };
            (k.to_string(), v)
        })
        .collect()
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

/// The `load`, `unload` and `skip` lines of `KEY.modules` (see
/// `ftail_abi::trace`); a line that does not parse is passed over.
fn read_modules(path: &Path) -> (Vec<Module>, Vec<(u64, String, PathBuf)>) {
    let text = read_small_text(path);
    let (mut modules, mut skipped) = (Vec::<Module>::new(), Vec::new());
    for line in text.lines() {
        let mut f = line.splitn(7, ' ');
        match f.next() {
            Some("load") => {
                let (Some(tsc), Some(base), Some(id), Some(sites), Some(left), Some(p)) =
                    (f.next(), f.next(), f.next(), f.next(), f.next(), f.next())
                else {
                    continue;
                };
                let (Ok(loaded), Some(base)) = (tsc.parse(), hex(base)) else {
                    continue;
                };
                modules.push(Module {
                    base,
                    build_id: (id != "-").then(|| id.to_string()),
                    path: PathBuf::from(unescape_value(p)),
                    loaded,
                    unloaded: None,
                    sites: (sites.parse().unwrap_or(0), left.parse().unwrap_or(0)),
                    libcalls: Vec::new(),
                    libcall_modules: BTreeMap::new(),
                    indirect: Vec::new(),
                });
            }
            Some("unload") => {
                let (Some(Ok(tsc)), Some(Some(base))) =
                    (f.next().map(str::parse), f.next().map(hex))
                else {
                    continue;
                };
                if let Some(m) = modules
                    .iter_mut()
                    .rev()
                    .find(|m| m.base == base && m.unloaded.is_none())
                {
                    m.unloaded = Some(tsc);
                }
            }
            Some("libcall") => {
                let (Some(_tsc), Some(Some(base)), Some(Some(entry)), Some(name)) =
                    (f.next(), f.next().map(hex), f.next().map(hex), f.next())
                else {
                    continue;
                };
                // The path is the rest of the line: it may hold spaces.
                let definer = f.collect::<Vec<_>>().join(" ");
                if let Some(m) = modules
                    .iter_mut()
                    .rev()
                    .find(|m| m.base == base && m.unloaded.is_none())
                {
                    m.libcalls.push((entry, unescape_value(name)));
                    if !definer.is_empty() && definer != "-" {
                        let path = PathBuf::from(unescape_value(&definer));
                        m.libcall_modules.insert(entry, path);
                    }
                }
            }
            Some("indirect") => {
                // The path is the rest of the line.
                let mut f = line.splitn(6, ' ').skip(1);
                let (Some(_tsc), Some(Some(entry)), Some(Some(offset)), Some(symbol), Some(p)) = (
                    f.next(),
                    f.next().map(hex),
                    f.next().map(hex),
                    f.next(),
                    f.next(),
                ) else {
                    continue;
                };
                // The thunks are the process's, not a module's: named with
                // the first module still mapped (the program).
                if let Some(m) = modules.iter_mut().find(|m| m.unloaded.is_none()) {
                    if symbol == "-" {
                        m.indirect
                            .push((entry, PathBuf::from(unescape_value(p)), offset));
                    } else {
                        m.libcalls.push((entry, unescape_value(symbol)));
                    }
                }
            }
            Some("skip") => {
                let (Some(Some(base)), Some(why), Some(p)) =
                    (f.next().map(hex), f.next(), f.next())
                else {
                    continue;
                };
                skipped.push((
                    base,
                    why.replace('_', " "),
                    PathBuf::from(unescape_value(p)),
                ));
            }
            _ => {}
        }
    }
    (modules, skipped)
}

/// `KEY.status`, if it is there and whole.
fn read_status(path: &Path) -> Option<ProcessStatus> {
    let data =
        crate::untrusted::files::read_regular(path, crate::untrusted::files::SMALL_LIMIT).ok()?;
    let size = std::mem::size_of::<ProcessStatus>();
    if data.len() < size || data[..8] != STATUS_MAGIC {
        return None;
    }
    let u64_at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().unwrap_or_default());
    let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap_or_default());
    if u32_at(8) != TRACE_VERSION {
        return None;
    }
    use std::mem::offset_of;
    Some(ProcessStatus {
        magic: STATUS_MAGIC,
        version: TRACE_VERSION,
        size: u32_at(12),
        threads_recorded: u64_at(offset_of!(ProcessStatus, threads_recorded)),
        threads_failed: u64_at(offset_of!(ProcessStatus, threads_failed)),
        first_failure: u64_at(offset_of!(ProcessStatus, first_failure)),
        threads_disk_full: u64_at(offset_of!(ProcessStatus, threads_disk_full)),
        modules_skipped: u64_at(offset_of!(ProcessStatus, modules_skipped)),
        sites_skipped: u64_at(offset_of!(ProcessStatus, sites_skipped)),
        agent: u64_at(offset_of!(ProcessStatus, agent)),
        threads_max_size: u64_at(offset_of!(ProcessStatus, threads_max_size)),
        snapshots_refused: u64_at(offset_of!(ProcessStatus, snapshots_refused)),
        exit: u64_at(offset_of!(ProcessStatus, exit)),
        cpu_user_us: u64_at(offset_of!(ProcessStatus, cpu_user_us)),
        cpu_system_us: u64_at(offset_of!(ProcessStatus, cpu_system_us)),
        max_rss_kib: u64_at(offset_of!(ProcessStatus, max_rss_kib)),
        reserved: [0; 1],
    })
}

/// The trace's budget file, if it is there, whole and of this version.
fn read_budget(path: &Path) -> Option<TraceBudget> {
    let data =
        crate::untrusted::files::read_regular(path, crate::untrusted::files::SMALL_LIMIT).ok()?;
    if data.len() < std::mem::size_of::<TraceBudget>() || data[..8] != BUDGET_MAGIC {
        return None;
    }
    let u64_at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().unwrap_or_default());
    let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap_or_default());
    if u32_at(8) != TRACE_VERSION {
        return None;
    }
    use std::mem::offset_of;
    Some(TraceBudget {
        magic: BUDGET_MAGIC,
        version: TRACE_VERSION,
        size: u32_at(12),
        max_bytes: u64_at(offset_of!(TraceBudget, max_bytes)),
        used_bytes: u64_at(offset_of!(TraceBudget, used_bytes)),
        free_bytes: u64_at(offset_of!(TraceBudget, free_bytes)),
        reserved: [0; 3],
    })
}

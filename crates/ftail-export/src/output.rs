//! Where exports are written, created the way the trace itself is.
//!
//! A trace is private (its directory 0700, its files 0600) and may hold
//! recorded strings, so what is made of it must be too; and another local
//! user must not be able to aim an export at a file of the victim's. So:
//!
//! * a file is never opened through a symbolic link, nor written over a
//!   file another user owns: it is written beside its final name under a
//!   fresh temporary name (`O_CREAT|O_EXCL|O_NOFOLLOW`, 0600) and renamed
//!   over it once complete, so a reader never sees half of it and a failed
//!   export leaves the old file as it was;
//! * a file goes only into a directory that this user or root owns and
//!   that no one else may write into, unless it is sticky (`/tmp`), where
//!   the kernel keeps others from renaming or removing what is ours;
//! * an output directory (`export --parquet DIR`) and everything ftail
//!   makes inside it is this user's and private (0700), reached one
//!   component at a time through descriptors opened with `O_NOFOLLOW`, so
//!   a link planted inside leads nowhere; only the last component of DIR
//!   is created, as `mkdir` does;
//! * an existing character device (`-o /dev/null`) is written in place:
//!   only root can make one.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

/// Others' write bits (group and other).
const OTHERS_WRITE: u32 = 0o022;
const STICKY: u32 = 0o1000;

/// A directory that only this user may write into, held open.
pub struct OutputDir {
    fd: Arc<OwnedFd>,
    path: PathBuf,
}

/// A file being written; it takes its name only at [`OutputFile::commit`].
pub struct OutputFile {
    file: Option<File>,
    dir: Arc<OwnedFd>,
    /// The temporary name, while there is one (none for a device).
    temp: Option<String>,
    name: String,
    path: PathBuf,
}

impl OutputDir {
    /// Creates `path` (its last component only, mode 0700), or opens an
    /// existing directory of this user's that no one else may write.
    ///
    /// # Errors
    ///
    /// When `path`'s parent does not exist, or `path` is a link, not a
    /// directory, someone else's or writable by others; the message
    /// names it.
    pub fn create(path: &Path) -> io::Result<OutputDir> {
        let (parent, name) = split(path)?;
        let parent_fd = open_parent(&parent, path)?;
        let fd = private_subdir(&parent_fd, &name, path)?;
        Ok(OutputDir {
            fd: Arc::new(fd),
            path: path.to_path_buf(),
        })
    }

    /// The path this directory was opened as.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The subdirectory `name`, created 0700 or checked as
    /// [`OutputDir::create`] checks.
    ///
    /// # Errors
    ///
    /// As [`OutputDir::create`].
    pub fn subdir(&self, name: &str) -> io::Result<OutputDir> {
        let path = self.path.join(name);
        let fd = private_subdir(&self.fd, name, &path)?;
        Ok(OutputDir {
            fd: Arc::new(fd),
            path,
        })
    }

    /// The subdirectory `name` if it exists and is ours (never followed
    /// through a link).
    pub fn existing_subdir(&self, name: &str) -> Option<OutputDir> {
        let path = self.path.join(name);
        let fd = open_dir(&*self.fd, name, OFlags::NOFOLLOW).ok()?;
        check_private_dir(&fd, &path).ok()?;
        Some(OutputDir {
            fd: Arc::new(fd),
            path,
        })
    }

    /// Names of the entries of this directory.
    ///
    /// # Errors
    ///
    /// Reading the directory, named.
    pub fn entries(&self) -> io::Result<Vec<(String, FileType)>> {
        let fd = rfs::openat(
            &*self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| explain(&self.path, e, "reading the directory"))?;
        let dir = rfs::Dir::read_from(&fd).map_err(|e| explain(&self.path, e, "reading"))?;
        let mut out = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| explain(&self.path, e, "reading"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "." && name != ".." {
                out.push((name, entry.file_type()));
            }
        }
        Ok(out)
    }

    /// Removes the file `name` (a link is removed, never followed).
    ///
    /// # Errors
    ///
    /// Removing it, named.
    pub fn remove_file(&self, name: &str) -> io::Result<()> {
        rfs::unlinkat(&*self.fd, name, AtFlags::empty())
            .map_err(|e| explain(&self.path.join(name), e, "removing"))
    }

    /// Removes the subdirectory `name` if it is empty; quietly leaves it
    /// otherwise.
    pub fn remove_empty_subdir(&self, name: &str) {
        let _ = rfs::unlinkat(&*self.fd, name, AtFlags::REMOVEDIR);
    }

    /// Starts the file `name` of this directory (replacing an existing
    /// one of this user's at [`OutputFile::commit`]).
    ///
    /// # Errors
    ///
    /// When an existing `name` is a link, another user's or not a regular
    /// file; creating the temporary file.
    pub fn file(&self, name: &str) -> io::Result<OutputFile> {
        start_file(self.fd.clone(), name, self.path.join(name))
    }
}

/// Starts the single-file export `path` (`-o FILE`).
///
/// # Errors
///
/// When `path`'s directory is another user's, or others may write into it
/// and it is not sticky; when an existing `path` is a link, another
/// user's, or neither a regular file nor a character device.
pub fn create_file(path: &Path) -> io::Result<OutputFile> {
    let (parent, name) = split(path)?;
    let dir = open_parent(&parent, path)?;
    let st = rfs::fstat(&dir).map_err(|e| explain(&parent, e, "examining"))?;
    let euid = rustix::process::geteuid().as_raw();
    let mode = st.st_mode & 0o7777;
    if st.st_uid != euid && st.st_uid != 0 {
        return Err(refused(
            &parent,
            &st,
            "is another user's directory; ftail writes only into directories of yours",
        ));
    }
    if mode & OTHERS_WRITE != 0 && mode & STICKY == 0 {
        return Err(refused(
            &parent,
            &st,
            "may be written by other users; choose a directory only you can write",
        ));
    }
    start_file(Arc::new(dir), &name, path.to_path_buf())
}

impl OutputFile {
    /// Where it will be, once committed.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file to write to.
    pub fn writer(&mut self) -> &mut File {
        self.file.as_mut().expect("present until commit")
    }

    /// Gives the file its name (replacing what was there), once every
    /// byte is written.
    ///
    /// # Errors
    ///
    /// Flushing or renaming, named.
    pub fn commit(mut self) -> io::Result<()> {
        let mut file = self.file.take().expect("present until commit");
        file.flush().map_err(|e| named(&self.path, e))?;
        drop(file);
        if let Some(temp) = self.temp.take() {
            if let Err(e) = rfs::renameat(&*self.dir, temp.as_str(), &*self.dir, self.name.as_str())
            {
                let _ = rfs::unlinkat(&*self.dir, temp.as_str(), AtFlags::empty());
                return Err(explain(&self.path, e, "renaming the finished file to"));
            }
        }
        Ok(())
    }
}

impl Drop for OutputFile {
    /// An export that did not finish leaves nothing behind.
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = rfs::unlinkat(&*self.dir, temp.as_str(), AtFlags::empty());
        }
    }
}

/// Checks what sits at `name` in `dir`, then opens a temporary file
/// beside it (or the device itself).
fn start_file(dir: Arc<OwnedFd>, name: &str, path: PathBuf) -> io::Result<OutputFile> {
    match rfs::statat(&*dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => {
            let kind = FileType::from_raw_mode(st.st_mode);
            let euid = rustix::process::geteuid().as_raw();
            if kind == FileType::CharacterDevice {
                let fd = rfs::openat(
                    &*dir,
                    name,
                    OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
                    Mode::empty(),
                )
                .map_err(|e| explain(&path, e, "opening"))?;
                return Ok(OutputFile {
                    file: Some(File::from(fd)),
                    dir,
                    temp: None,
                    name: name.to_owned(),
                    path,
                });
            }
            if kind != FileType::RegularFile {
                return Err(refused(
                    &path,
                    &st,
                    "exists and is not a regular file; ftail will not write through it",
                ));
            }
            if st.st_uid != euid {
                return Err(refused(
                    &path,
                    &st,
                    "is another user's file; ftail will not replace it",
                ));
            }
        }
        Err(Errno::NOENT) => {}
        Err(e) => return Err(explain(&path, e, "examining")),
    }
    let (temp, fd) =
        create_temp(&dir, name).map_err(|e| explain(&path, e, "creating a file beside"))?;
    Ok(OutputFile {
        file: Some(File::from(fd)),
        dir,
        temp: Some(temp),
        name: name.to_owned(),
        path,
    })
}

/// Creates `.NAME.ftail-N` in `dir`, a name no one had, 0600.
fn create_temp(dir: &OwnedFd, name: &str) -> Result<(String, OwnedFd), Errno> {
    static SERIAL: AtomicU32 = AtomicU32::new(0);
    let pid = std::process::id();
    loop {
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let temp = format!(".{name}.ftail-{pid}-{serial}-{nanos:x}");
        match rfs::openat(
            dir,
            temp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => {
                // Exactly 0600, whatever the umask.
                rfs::fchmod(&fd, Mode::from_raw_mode(0o600))?;
                return Ok((temp, fd));
            }
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Creates `name` in `parent` (0700) or opens the existing one, which must
/// be a private directory of this user's.
fn private_subdir(parent: &OwnedFd, name: &str, path: &Path) -> io::Result<OwnedFd> {
    let created = match rfs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
        Ok(()) => true,
        Err(Errno::EXIST) => false,
        Err(Errno::NOENT) => return Err(no_parent(path)),
        Err(e) => return Err(explain(path, e, "creating the directory")),
    };
    let fd = open_dir(parent, name, OFlags::NOFOLLOW).map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}: exists and is not a directory (or is a symbolic link); ftail will not write there",
                path.display()
            ),
        ),
        e => explain(path, e, "opening the directory"),
    })?;
    if created {
        // Exactly 0700, whatever the umask took away.
        rfs::fchmod(&fd, Mode::from_raw_mode(0o700))
            .map_err(|e| explain(path, e, "setting the mode of"))?;
    }
    check_private_dir(&fd, path)?;
    Ok(fd)
}

/// A directory of this user's that neither group nor others may write.
fn check_private_dir(fd: &OwnedFd, path: &Path) -> io::Result<()> {
    let st = rfs::fstat(fd).map_err(|e| explain(path, e, "examining"))?;
    let euid = rustix::process::geteuid().as_raw();
    if st.st_uid != euid {
        return Err(refused(
            path,
            &st,
            "is another user's directory; ftail writes only into directories of yours",
        ));
    }
    if st.st_mode & OTHERS_WRITE != 0 {
        return Err(refused(
            path,
            &st,
            "may be written by other users; chmod go-w it or choose another directory",
        ));
    }
    Ok(())
}

fn open_dir<Fd: std::os::fd::AsFd>(
    dir: Fd,
    name: impl rustix::path::Arg,
    extra: OFlags,
) -> Result<OwnedFd, Errno> {
    rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | extra,
        Mode::empty(),
    )
}

/// Opens `parent`, the directory `path` goes into.
fn open_parent(parent: &Path, path: &Path) -> io::Result<OwnedFd> {
    open_dir(rfs::CWD, parent, OFlags::empty()).map_err(|e| match e {
        Errno::NOENT => no_parent(path),
        e => explain(parent, e, "opening the directory"),
    })
}

fn no_parent(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "{}: its parent directory does not exist (ftail creates only the last component)",
            path.display()
        ),
    )
}

/// `path`'s directory (`.` for a bare name) and last component.
fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a file name ftail can write to", path.display()),
            )
        })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name.to_owned()))
}

fn refused(path: &Path, st: &Stat, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{} {why} (owner uid {}, mode {:04o})",
            path.display(),
            st.st_uid,
            st.st_mode & 0o7777
        ),
    )
}

fn explain(path: &Path, e: Errno, what: &str) -> io::Error {
    let e = io::Error::from(e);
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

fn named(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

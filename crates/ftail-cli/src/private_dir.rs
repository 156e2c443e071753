//! Directories and files that only the user running ftail may change.
//!
//! `ftail cc` hands the compiler a directory whose `as` it will run, and
//! `ftail record` preloads a runtime library from its cache directory:
//! anything another user could plant there would run as this user. So
//! ftail's cache directory ([`cache_dir`]) is created 0700, an existing
//! one is used only when it is a real directory (not a symbolic link)
//! owned by this user that no one else may write into, and what is found
//! inside is checked the same way ([`check_owned`]) before it is used.

use std::fs::Metadata;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// ftail's own cache directory, private to this user:
/// `$XDG_CACHE_HOME/ftail`, else `$HOME/.cache/ftail`, else (CI jobs,
/// services, `env -i`) `$TMPDIR/ftail-UID`, which must then be exactly
/// mode 0700: a shared temporary directory is where others plant things.
///
/// # Errors
///
/// When the directory cannot be created, or exists and is not private.
pub fn cache_dir() -> Result<PathBuf> {
    let home = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let base = home("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| home("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(base) = base {
        std::fs::create_dir_all(&base)
            .with_context(|| format!("creating the cache directory {}", base.display()))?;
        let dir = base.join("ftail");
        ensure(&dir, Strictness::NoOtherWriters)?;
        return Ok(dir);
    }
    let dir = std::env::temp_dir().join(format!("ftail-{}", euid()));
    ensure(&dir, Strictness::Exactly0700)?;
    Ok(dir)
}

/// How private an existing directory must be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Strictness {
    /// Neither group nor others may write into it.
    NoOtherWriters,
    /// Mode exactly 0700.
    Exactly0700,
}

/// Creates `dir` with mode 0700, or checks that the existing one is a
/// directory of this user's that is private enough.
fn ensure(dir: &Path, strict: Strictness) -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        // Exactly 0700, whatever the umask took away.
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting the mode of {}", dir.display()))?,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    let meta =
        std::fs::symlink_metadata(dir).with_context(|| format!("examining {}", dir.display()))?;
    let mode = meta.mode() & 0o7777;
    let private = meta.is_dir()
        && meta.uid() == euid()
        && match strict {
            Strictness::NoOtherWriters => mode & 0o022 == 0,
            Strictness::Exactly0700 => mode == 0o700,
        };
    if !private {
        bail!(
            "{} is not a private directory of yours ({}); ftail will not use it: \
             remove it{}",
            dir.display(),
            describe(&meta),
            if strict == Strictness::Exactly0700 {
                ", or set HOME or XDG_CACHE_HOME"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// Checks that `path`, found in a private directory, is this user's and
/// that no one else may write to it (a symbolic link is judged by its own
/// owner; its target is the caller's to check). Returns its metadata.
///
/// # Errors
///
/// When it is missing or fails the check; the message names it.
pub fn check_owned(path: &Path) -> Result<Metadata> {
    let meta =
        std::fs::symlink_metadata(path).with_context(|| format!("examining {}", path.display()))?;
    let writable = !meta.file_type().is_symlink() && meta.mode() & 0o022 != 0;
    if meta.uid() != euid() || writable {
        bail!(
            "{} was not made by ftail for you ({}); ftail will not use it: remove it",
            path.display(),
            describe(&meta)
        );
    }
    Ok(meta)
}

/// `owner uid N, mode 0MMM` (and the kind, when not a directory).
fn describe(meta: &Metadata) -> String {
    let t = meta.file_type();
    let kind = if t.is_symlink() {
        "a symbolic link, "
    } else if t.is_dir() {
        ""
    } else if t.is_file() {
        "a file, "
    } else {
        "a special file, "
    };
    format!(
        "{kind}owner uid {}, mode {:04o}",
        meta.uid(),
        meta.mode() & 0o7777
    )
}

//! Reading the files a trace names: the program and its libraries, their
//! separate debug files, and the trace's own small files.
//!
//! A trace records module paths; by the time it is read, what sits there
//! may be something else, put there by someone else (a deleted binary in
//! a shared directory replaced by a FIFO, a link to `/dev/zero`). So a
//! file is read only when it is a regular file of bounded size: it is
//! opened without blocking (a FIFO answers at once and is then refused),
//! examined through the open descriptor, and read no further than the
//! size it had then. A symbolic link at the path is followed only when
//! this user or root owns it, as the kernel's `protected_symlinks` does in
//! sticky directories: loaders name libraries through such links
//! (`libz.so.1`), and they are the system's or the user's own.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The largest module or debug file read (the debug files of the largest
/// programs are a few GB).
pub const MODULE_LIMIT: u64 = 4 << 30;

/// The largest of the trace's own metadata files read.
pub const SMALL_LIMIT: u64 = 64 << 20;

/// Reads `path`, a regular file of at most `limit` bytes.
///
/// # Errors
///
/// When it cannot be opened, is a link of another user's, is not a regular
/// file, or is larger than `limit`; the message says which (without the
/// path: callers name it).
pub fn read_regular(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let link = std::fs::symlink_metadata(path)?;
    let euid = rustix::process::geteuid().as_raw();
    if link.file_type().is_symlink() && link.uid() != euid && link.uid() != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "a symbolic link of another user's (uid {}); not followed",
                link.uid()
            ),
        ));
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file; not read",
        ));
    }
    if meta.len() > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} bytes, more than the {} this reader takes",
                meta.len(),
                limit
            ),
        ));
    }
    read_at_most(&mut file, meta.len())
}

/// Reads `len` bytes at most (a file that grows meanwhile is cut there).
fn read_at_most(file: &mut File, len: u64) -> io::Result<Vec<u8>> {
    let mut data = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut data)?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_regular_files_of_bounded_size() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"0123456789").unwrap();
        assert_eq!(read_regular(&f, 10).unwrap(), b"0123456789");
        assert!(read_regular(&f, 9)
            .unwrap_err()
            .to_string()
            .contains("more than"));
        // Our own link is followed.
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert_eq!(read_regular(&link, 10).unwrap().len(), 10);
        // A FIFO does not block, a device is not read.
        let fifo = d.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        assert!(read_regular(&fifo, 10)
            .unwrap_err()
            .to_string()
            .contains("not a regular"));
        let zero = d.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(read_regular(&zero, 10)
            .unwrap_err()
            .to_string()
            .contains("not a regular"));
    }
}

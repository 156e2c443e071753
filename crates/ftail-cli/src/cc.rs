//! `ftail cc`: a compiler launcher that routes the compiler's assembly
//! through `ftail as` and changes nothing else; clang's LTO links go
//! through `cc_lto`.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Environment variable naming the compiler used when none is given.
pub const DEFAULT_CC_ENV: &str = "FTAIL_CC";

/// File name extensions that mark an argument as an input, not a compiler.
const INPUT_EXTENSIONS: &[&str] = &[
    "c", "cc", "cp", "cpp", "cxx", "c++", "C", "i", "ii", "s", "S", "o", "a", "so", "h", "hpp",
];

/// Runs `ftail cc [COMPILER] ARGS…`; returns only on error or after a
/// clang LTO link (otherwise the compiler replaces this process).
pub fn run(mut args: Vec<OsString>) -> Result<i32> {
    let compiler = if args.first().is_some_and(is_compiler) {
        args.remove(0)
    } else {
        std::env::var_os(DEFAULT_CC_ENV).unwrap_or_else(|| "cc".into())
    };
    let clang = is_clang(&compiler);
    let shim = shim_dir()?;
    if clang {
        if let Some(code) = crate::cc_lto::link_if_lto(&compiler, &args, &shim)? {
            return Ok(code);
        }
    }
    let mut cmd = Command::new(&compiler);
    cmd.arg("-B").arg(&shim);
    if clang {
        cmd.arg("-fno-integrated-as");
    }
    cmd.args(&args);
    let err = cmd.exec();
    Err(err).with_context(|| format!("running the compiler `{}`", compiler.to_string_lossy()))
}

/// Whether the first argument names a compiler rather than an option or an
/// input file.
fn is_compiler(arg: &OsString) -> bool {
    let s = arg.to_string_lossy();
    if s.starts_with('-') || s.is_empty() {
        return false;
    }
    let ext = Path::new(s.as_ref()).extension().and_then(|e| e.to_str());
    !ext.is_some_and(|e| INPUT_EXTENSIONS.contains(&e)) || s.contains("++")
}

/// Whether the compiler is clang: its name, or the name it links to, says so.
pub fn is_clang(compiler: &OsString) -> bool {
    let path = which(compiler).unwrap_or_else(|| PathBuf::from(compiler));
    let names = [Some(path.clone()), path.canonicalize().ok()];
    names.iter().flatten().any(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().contains("clang"))
    })
}

fn which(name: &OsString) -> Option<PathBuf> {
    let p = Path::new(name);
    if p.components().count() > 1 {
        return Some(p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(p))
        .find(|c| c.is_file())
}

/// The names under which the shim directory links to `ftail`.
const SHIM_NAMES: [&str; 2] = ["as", "x86_64-linux-gnu-as"];

/// A directory holding `as` (and `x86_64-linux-gnu-as`) as links to this
/// program, for the compiler's `-B`.
pub fn shim_dir() -> Result<PathBuf> {
    links_dir("shim", &SHIM_NAMES)
}

/// A directory `PREFIX-HASH` holding `names` as links to this program.
/// Made once per ftail binary in ftail's private cache directory; safe
/// when many compilers start at once. An existing one is used only when
/// it and its links are this user's and the links point at this program:
/// whoever is handed the directory runs what it finds there.
pub fn links_dir(prefix: &str, names: &[&str]) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the ftail executable")?;
    let exe = exe.canonicalize().unwrap_or(exe);
    let base = crate::private_dir::cache_dir()?;
    let dir = base.join(format!(
        "{prefix}-{:016x}",
        fnv1a(exe.as_os_str().as_encoded_bytes())
    ));
    if std::fs::symlink_metadata(&dir).is_err() {
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{prefix}-"))
            .tempdir_in(&base)
            .with_context(|| format!("creating a directory in {}", base.display()))?;
        for name in names {
            std::os::unix::fs::symlink(&exe, tmp.path().join(name))
                .with_context(|| format!("linking {name} in {}", tmp.path().display()))?;
        }
        let tmp = tmp.keep();
        // Another process may have won the race; its directory is as good.
        if std::fs::rename(&tmp, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
    check_shim(&dir, &exe, names)?;
    Ok(dir)
}

/// Checks that `dir` is this user's and holds links to `exe` made by this
/// user.
fn check_shim(dir: &Path, exe: &Path, names: &[&str]) -> Result<()> {
    use crate::private_dir::check_owned;
    if !check_owned(dir)?.is_dir() {
        bail!("{} is not a directory; remove it", dir.display());
    }
    for name in names {
        let link = dir.join(name);
        let meta = check_owned(&link)?;
        let target = std::fs::read_link(&link).ok();
        if !meta.file_type().is_symlink() || target.as_deref() != Some(exe) {
            bail!(
                "{} is not ftail's link to {}; ftail will not run it: remove {}",
                link.display(),
                exe.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_compilers_from_inputs_and_options() {
        assert!(is_compiler(&"gcc".into()));
        assert!(is_compiler(&"/usr/bin/clang-19".into()));
        assert!(is_compiler(&"g++".into()));
        assert!(!is_compiler(&"-O2".into()));
        assert!(!is_compiler(&"foo.c".into()));
        assert!(!is_compiler(&"x.o".into()));
    }
}

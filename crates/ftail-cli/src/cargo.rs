//! `ftail cargo`: builds Rust programs whose own crates and dependencies
//! carry ftail's sites, on stable Rust.
//!
//! rustc has no option to run another assembler, but it writes assembly
//! (`--emit asm`) from the very modules it writes as objects, and it links
//! through the linker it is told to use (`-C linker`). So `ftail cargo`
//! runs cargo with `RUSTC_WRAPPER` naming `ftail-rustc`, a link to ftail,
//! which adds `asm` to every compilation that writes code and names
//! `ftail-link` (another link to ftail) as the linker. For each codegen
//! unit, rustc's assembly is rewritten and assembled by `ftail as` into the
//! object it stands for: in a library's archive (`ar r`) once rustc is
//! done, and in place on the link line before the real linker runs.
//!
//! The standard library comes prebuilt and stays uninstrumented; build
//! scripts and proc macros run at build time and are left alone.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The name under which ftail is cargo's `RUSTC_WRAPPER`.
pub const RUSTC_SHIM: &str = "ftail-rustc";
/// The name under which ftail is rustc's linker.
pub const LINK_SHIM: &str = "ftail-link";
/// The linker rustc would have used, for `ftail-link`.
const LINKER_ENV: &str = "FTAIL_RUST_LINKER";
/// `OUT_DIR/PREFIX` of the crate being linked, for `ftail-link`.
const UNIT_ENV: &str = "FTAIL_RUST_UNIT";
/// How deep response files may name further response files.
const RESPONSE_FILE_DEPTH: usize = 16;
/// Wrappers that `ftail cargo` would silently replace.
const WRAPPER_VARS: [&str; 4] = [
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
];

/// Runs `ftail cargo ARGS…`; returns only on error (cargo replaces this
/// process).
pub fn run(args: Vec<OsString>) -> Result<i32> {
    for var in WRAPPER_VARS {
        if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
            bail!("{var} is set: ftail cargo runs rustc through its own wrapper; unset {var}");
        }
    }
    let dir = crate::cc::links_dir("rust", &[RUSTC_SHIM, LINK_SHIM])?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let err = Command::new(&cargo)
        .args(&args)
        .env("RUSTC_WRAPPER", dir.join(RUSTC_SHIM))
        .exec();
    Err(err).with_context(|| format!("running `{}`", cargo.to_string_lossy()))
}

/// One rustc compilation that writes code.
#[derive(Debug, PartialEq, Eq)]
struct Unit {
    out_dir: PathBuf,
    /// Crate name and `-C extra-filename`: what every file of it starts with.
    prefix: String,
    /// Archives it writes (rlib, staticlib), by file name.
    archives: Vec<String>,
    /// Whether rustc links (a binary, test or shared library).
    links: bool,
    /// `-C linker`, if given.
    linker: Option<OsString>,
}

/// Runs `ftail-rustc RUSTC ARGS…` (cargo's `RUSTC_WRAPPER`).
pub fn wrap_rustc(args: Vec<OsString>) -> Result<i32> {
    let Some((rustc, args)) = args.split_first() else {
        bail!("{RUSTC_SHIM} runs as cargo's RUSTC_WRAPPER: RUSTC ARGS…");
    };
    if args.iter().any(|a| a == "-vV") {
        return version(rustc, args);
    }
    let Some(unit) = parse_unit(args)? else {
        return status(Command::new(rustc).args(args));
    };
    let shim = crate::cc::links_dir("rust", &[RUSTC_SHIM, LINK_SHIM])?;
    let mut cmd = Command::new(rustc);
    cmd.args(instrumented_args(args, &unit, &shim.join(LINK_SHIM)));
    cmd.env(UNIT_ENV, unit.out_dir.join(&unit.prefix));
    cmd.env(
        LINKER_ENV,
        unit.linker.as_deref().unwrap_or(OsStr::new("cc")),
    );
    let code = status(&mut cmd);
    let fixed = match code {
        Ok(0) => unit
            .archives
            .iter()
            .try_for_each(|a| instrument_archive(&unit, &unit.out_dir.join(a))),
        _ => Ok(()),
    };
    for (_, asm) in unit_asm(&unit.out_dir, &unit.prefix).unwrap_or_default() {
        let _ = std::fs::remove_file(asm);
    }
    fixed?;
    code
}

/// `rustc -vV` with a line of ftail's own: cargo hashes this text into
/// every artifact's name and fingerprint, so instrumented builds and plain
/// ones never take each other's files.
fn version(rustc: &OsStr, args: &[OsString]) -> Result<i32> {
    let out = Command::new(rustc)
        .args(args)
        .output()
        .with_context(|| format!("running `{} -vV`", rustc.to_string_lossy()))?;
    std::io::stderr().write_all(&out.stderr)?;
    let mut stdout = std::io::stdout();
    stdout.write_all(&out.stdout)?;
    if out.status.success() {
        writeln!(stdout, "ftail-sites: {}", env!("CARGO_PKG_VERSION"))?;
    }
    Ok(crate::exit_code(out.status))
}

fn status(cmd: &mut Command) -> Result<i32> {
    let status = cmd
        .status()
        .with_context(|| format!("running `{}`", cmd.get_program().to_string_lossy()))?;
    Ok(crate::exit_code(status))
}

/// The value of option `name` at `args[i]` (`--name V`, `--name=V`, or for
/// `-C`, `-CV`), and how many arguments it took.
fn option_value<'a>(args: &'a [OsString], i: usize, name: &str) -> Option<(&'a str, usize)> {
    let a = args[i].to_str()?;
    if a == name {
        return Some((args.get(i + 1)?.to_str()?, 2));
    }
    let rest = a.strip_prefix(name)?;
    let joined = if name == "-C" {
        Some(rest)
    } else {
        rest.strip_prefix('=')
    };
    joined.filter(|v| !v.is_empty()).map(|v| (v, 1))
}

/// What a compilation is, or `None` when it is to run unchanged: probes,
/// `cargo check`, build scripts, proc macros.
fn parse_unit(args: &[OsString]) -> Result<Option<Unit>> {
    let (mut out_dir, mut crate_name, mut extra) = (None, None, String::new());
    let (mut types, mut emit, mut test, mut linker) = (Vec::new(), None, false, None);
    let (mut musl, mut crt_static) = (false, None);
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "-" || a.starts_with("--print") {
            return Ok(None);
        }
        test |= a == "--test";
        let mut took = 1;
        if let Some((v, n)) = option_value(args, i, "--out-dir") {
            (out_dir, took) = (Some(PathBuf::from(v)), n);
        } else if let Some((v, n)) = option_value(args, i, "--crate-name") {
            (crate_name, took) = (Some(v.to_string()), n);
        } else if let Some((v, n)) = option_value(args, i, "--crate-type") {
            types.extend(v.split(',').map(str::to_string));
            took = n;
        } else if let Some((v, n)) = option_value(args, i, "--emit") {
            (emit, took) = (Some(v.to_string()), n);
        } else if let Some((v, n)) = option_value(args, i, "--target") {
            if !(v.starts_with("x86_64-") && v.contains("-linux-")) {
                bail!("ftail cargo builds for x86-64 Linux only, not --target {v}");
            }
            musl = v.contains("-musl");
            took = n;
        } else if let Some((v, n)) = option_value(args, i, "-C") {
            took = n;
            let (key, value) = v.split_once('=').unwrap_or((v, ""));
            match key {
                "extra-filename" => extra = value.to_string(),
                "linker" => linker = Some(OsString::from(value)),
                "target-feature" => crt_static = crt_static_of(value).or(crt_static),
                "lto" if !matches!(value, "off" | "no" | "n" | "false") => bail!(
                    "-C lto={value}: LTO re-generates code at the link, where ftail cannot \
                     place sites; build without LTO (profile `lto = false`)"
                ),
                "linker-plugin-lto" if !matches!(value, "no" | "n" | "off" | "false") => bail!(
                    "-C linker-plugin-lto (how cargo builds libraries for LTO) leaves code \
                     generation to the link, where ftail cannot place sites; build without \
                     LTO (profile `lto = false`)"
                ),
                _ => {}
            }
        }
        i += took;
    }
    let writes_code = emit.is_some_and(|e| e.split(',').any(|k| k.starts_with("link")));
    let Some(crate_name) = crate_name else {
        return Ok(None);
    };
    if !writes_code
        || types.iter().any(|t| t == "proc-macro")
        || crate_name.starts_with("build_script_")
    {
        return Ok(None);
    }
    let Some(out_dir) = out_dir else {
        bail!("rustc for crate {crate_name} was given no --out-dir; ftail cargo needs one");
    };
    let prefix = format!("{crate_name}{extra}");
    let archives = types
        .iter()
        .filter_map(|t| match t.as_str() {
            "lib" | "rlib" => Some(format!("lib{prefix}.rlib")),
            "staticlib" => Some(format!("lib{prefix}.a")),
            _ => None,
        })
        .collect();
    let executable = test || types.is_empty() || types.iter().any(|t| t == "bin");
    if executable && crt_static.unwrap_or(musl) {
        bail!(
            "{crate_name} would be linked statically (crt-static), and ftail's runtime is \
             loaded into a program by the dynamic loader, which a static program does not \
             run; build it dynamically linked (`-C target-feature=-crt-static`)"
        );
    }
    let links = executable
        || types
            .iter()
            .any(|t| matches!(t.as_str(), "dylib" | "cdylib"));
    Ok(Some(Unit {
        out_dir,
        prefix,
        archives,
        links,
        linker,
    }))
}

/// Whether `-C target-feature=FEATURES` turns `crt-static` on or off.
fn crt_static_of(features: &str) -> Option<bool> {
    features.split(',').rev().find_map(|f| match f.trim() {
        "+crt-static" => Some(true),
        "-crt-static" => Some(false),
        _ => None,
    })
}

/// rustc's arguments with `asm` added to `--emit`, incremental compilation
/// off (every codegen unit's assembly must come from this compilation) and
/// `link` as the linker.
fn instrumented_args(args: &[OsString], unit: &Unit, link: &Path) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len() + 4);
    let mut i = 0;
    while i < args.len() {
        if let Some((v, n)) = option_value(args, i, "--emit") {
            out.push(format!("--emit={v},asm").into());
            i += n;
            continue;
        }
        if let Some((v, n)) = option_value(args, i, "-C") {
            if v.starts_with("incremental=") || v.starts_with("linker=") {
                i += n;
                continue;
            }
        }
        out.push(args[i].clone());
        i += 1;
    }
    if unit.links {
        let mut linker = OsString::from("linker=");
        linker.push(link);
        out.extend(["-C".into(), linker]);
        // rustc tells how to speak to a linker by its name; ftail-link's
        // says nothing, so a bare linker's kind is said outright.
        if let Some(flavor) = unit.linker.as_deref().and_then(flavor_of) {
            if !args
                .iter()
                .any(|a| a.to_string_lossy().contains("linker-flavor"))
            {
                out.extend(["-C".into(), format!("linker-flavor={flavor}").into()]);
            }
        }
    }
    out
}

/// The `-C linker-flavor` of a linker that is not a C compiler driver.
fn flavor_of(linker: &OsStr) -> Option<&'static str> {
    let stem = Path::new(linker).file_name()?.to_str()?;
    match stem {
        "ld.lld" | "rust-lld" | "lld" => Some("ld.lld"),
        "ld" | "ld.bfd" | "ld.gold" => Some("ld"),
        s if s.ends_with("-ld") => Some("ld"),
        _ => None,
    }
}

/// Each assembly file rustc wrote for the unit `prefix` in `out_dir`, with
/// the codegen unit it is of (its `.file`): `PREFIX.CGU.rcgu.s`, or
/// `PREFIX.s` when there was one.
fn unit_asm(out_dir: &Path, prefix: &str) -> Result<Vec<(String, PathBuf)>> {
    let single = format!("{prefix}.s");
    let numbered = format!("{prefix}.");
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(out_dir).with_context(|| format!("reading {}", out_dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == single || (name.starts_with(&numbered) && name.ends_with(".rcgu.s")) {
            let path = entry.path();
            out.push((codegen_unit(&path)?, path));
        }
    }
    Ok(out)
}

/// The codegen unit an assembly file is of: its first line,
/// `.file "CGU"`.
fn codegen_unit(asm: &Path) -> Result<String> {
    let f = std::fs::File::open(asm).with_context(|| format!("opening {}", asm.display()))?;
    let mut first = String::new();
    std::io::BufReader::new(f.take(4096))
        .read_line(&mut first)
        .with_context(|| format!("reading {}", asm.display()))?;
    let cgu = first
        .trim()
        .strip_prefix(".file")
        .map(|r| r.trim().trim_matches('"'))
        .filter(|c| !c.is_empty() && !c.contains(['"', '/']));
    match cgu {
        Some(c) => Ok(c.to_string()),
        None => bail!(
            "{}: does not start with rustc's `.file \"CODEGEN-UNIT\"`",
            asm.display()
        ),
    }
}

/// Pairs each assembly file with the object (by file name) it stands for:
/// `PREFIX.CGU.…rcgu.o`. Objects without assembly (the allocator shim)
/// are left out.
fn pair_objects<'o>(
    prefix: &str,
    asm: &[(String, PathBuf)],
    objects: &'o [String],
) -> Result<Vec<(&'o str, PathBuf)>> {
    let mut pairs = Vec::new();
    for (cgu, path) in asm {
        let start = format!("{prefix}.{cgu}.");
        let mut found = objects
            .iter()
            .filter(|o| o.starts_with(&start) && o.ends_with(".rcgu.o"));
        match (found.next(), found.next()) {
            (Some(o), None) => pairs.push((o.as_str(), path.clone())),
            (None, _) => bail!(
                "{}: no object of codegen unit {cgu} among rustc's outputs",
                path.display()
            ),
            (Some(a), Some(b)) => bail!(
                "{}: two objects of codegen unit {cgu}: {a} and {b}",
                path.display()
            ),
        }
    }
    Ok(pairs)
}

/// Assembles `asm`, rewritten, into `obj`. Split debug information
/// (`-C split-debuginfo`) goes to `dwo`, where rustc wrote the split
/// units of the code as it was before the rewrite.
fn assemble(asm: &Path, obj: &Path, dwo: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(asm).with_context(|| format!("reading {}", asm.display()))?;
    let split = has_split_dwarf(&text);
    let (text, dwarf5) = for_gas(&text);
    std::fs::write(asm, text).with_context(|| format!("writing {}", asm.display()))?;
    let mut args: Vec<OsString> = vec!["-o".into(), obj.into(), asm.into()];
    if dwarf5 {
        args.insert(0, "--gdwarf-5".into());
    }
    match crate::as_shim::run(args)? {
        0 if split => split_dwarf(obj, dwo),
        0 => Ok(()),
        code => bail!(
            "assembling {} (rewritten) failed with exit code {code}",
            asm.display()
        ),
    }
}

/// Whether LLVM put split debug units (`.dwo` sections) in the assembly.
fn has_split_dwarf(text: &str) -> bool {
    text.lines().any(|l| {
        l.trim_start().strip_prefix(".section").is_some_and(|r| {
            r.trim_start()
                .split(',')
                .next()
                .is_some_and(|n| n.ends_with(".dwo"))
        })
    })
}

/// Moves the `.dwo` sections of `obj` into `dwo`, as rustc does for the
/// objects LLVM writes: the linker and thorin (for `packed`) then see
/// each split unit once, with the rewritten code's sizes.
fn split_dwarf(obj: &Path, dwo: &Path) -> Result<()> {
    for args in [
        vec![
            OsStr::new("--extract-dwo"),
            obj.as_os_str(),
            dwo.as_os_str(),
        ],
        vec![OsStr::new("--strip-dwo"), obj.as_os_str()],
    ] {
        let out = Command::new("objcopy")
            .args(&args)
            .output()
            .context("running `objcopy` (install binutils)")?;
        if !out.status.success() {
            bail!(
                "`objcopy {}` failed: {}",
                args[0].to_string_lossy(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

/// rustc's assembly as the GNU assembler reads it, and whether its line
/// table is DWARF 5 (a `.file 0`, which `as` takes with `--gdwarf-5`).
/// LLVM writes `.file N "DIR" "NAME"` whatever the DWARF version; before
/// version 5 `as` wants the one path `.file N "DIR/NAME"`.
fn for_gas(text: &str) -> (String, bool) {
    let dwarf5 = text
        .lines()
        .any(|l| l.trim_start().starts_with(".file\t0 ") || l.trim_start().starts_with(".file 0 "));
    if dwarf5 {
        return (text.to_string(), true);
    }
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        match split_file_directive(line) {
            Some((head, _, name)) if name.starts_with('/') => {
                out.push_str(&format!("{head}\"{name}\""));
            }
            Some((head, dir, name)) => out.push_str(&format!("{head}\"{dir}/{name}\"")),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    (out, false)
}

/// `\t.file\tN "DIR" "NAME"` as (`\t.file\tN `, DIR, NAME), the strings as
/// written (escaped).
fn split_file_directive(line: &str) -> Option<(&str, &str, &str)> {
    let rest = line.trim_start().strip_prefix(".file")?;
    let number_end = rest.find('"')?;
    let number = rest[..number_end].trim();
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let head = &line[..line.len() - rest.len() + number_end];
    let strings = &rest[number_end..];
    let (dir, tail) = quoted(strings)?;
    let (name, tail) = quoted(tail.trim_start())?;
    tail.trim().is_empty().then_some((head, dir, name))
}

/// The text of the quoted string `s` starts with, and what follows it.
fn quoted(s: &str) -> Option<(&str, &str)> {
    let body = s.strip_prefix('"')?;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some((&body[..i], &body[i + 1..])),
            _ => escaped = false,
        }
    }
    None
}

/// Replaces the unit's members of `archive` with their instrumented
/// objects.
fn instrument_archive(unit: &Unit, archive: &Path) -> Result<()> {
    let out = Command::new("ar")
        .arg("t")
        .arg(archive)
        .output()
        .context("running `ar t` (install binutils)")?;
    if !out.status.success() {
        bail!(
            "`ar t {}` failed: {}",
            archive.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let members: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let asm = unit_asm(&unit.out_dir, &unit.prefix)?;
    let pairs = pair_objects(&unit.prefix, &asm, &members)?;
    if pairs.is_empty() {
        return Ok(());
    }
    let tmp = tempfile::Builder::new()
        .prefix("ftail-rlib-")
        .tempdir()
        .context("creating a temporary directory")?;
    let mut ar = Command::new("ar");
    ar.arg("r").arg(archive);
    for (member, asm) in &pairs {
        let obj = tmp.path().join(member);
        let dwo = obj.with_extension("dwo");
        assemble(asm, &obj, &dwo)?;
        ar.arg(obj);
        if dwo.exists() {
            split_units_beside(&dwo, &unit.out_dir, &members, &mut ar)?;
        }
    }
    let out = ar.output().context("running `ar r`")?;
    if !out.status.success() {
        bail!(
            "`ar r {}` failed: {}",
            archive.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Puts the split units `dwo` of an archive's member where rustc put
/// those of the code before the rewrite: in the archive (`packed`) and
/// beside it (`unpacked`).
fn split_units_beside(
    dwo: &Path,
    out_dir: &Path,
    members: &[String],
    ar: &mut Command,
) -> Result<()> {
    let name = dwo.file_name().expect("a member's name");
    if members.iter().any(|m| OsStr::new(m) == name) {
        ar.arg(dwo);
    }
    let beside = out_dir.join(name);
    if beside.exists() {
        std::fs::copy(dwo, &beside).with_context(|| format!("writing {}", beside.display()))?;
    }
    Ok(())
}

/// Runs `ftail-link ARGS…` (rustc's linker): the unit's objects on the
/// link line are assembled again from their rewritten assembly, then the
/// real linker runs with the same arguments.
pub fn link(args: Vec<OsString>) -> Result<i32> {
    let Some(linker) = std::env::var_os(LINKER_ENV) else {
        bail!("{LINK_SHIM} runs as rustc's linker under `ftail cargo` ({LINKER_ENV} is not set)");
    };
    if let Some(unit) = std::env::var_os(UNIT_ENV).map(PathBuf::from) {
        instrument_link_objects(&unit, &args)?;
    }
    let err = Command::new(&linker)
        .args(&args)
        .env_remove(LINKER_ENV)
        .env_remove(UNIT_ENV)
        .exec();
    Err(err).with_context(|| format!("running the linker `{}`", linker.to_string_lossy()))
}

fn instrument_link_objects(unit: &Path, args: &[OsString]) -> Result<()> {
    let (Some(out_dir), Some(prefix)) = (unit.parent(), unit.file_name()) else {
        bail!("{UNIT_ENV}={}: not OUT_DIR/PREFIX", unit.display());
    };
    let prefix = prefix.to_string_lossy();
    // rustc passes a link line too long for the system in a response file.
    let args = expand_response_files(args)?;
    let objects: Vec<(String, &Path)> = args
        .iter()
        .map(Path::new)
        .filter(|p| p.extension().is_some_and(|e| e == "o"))
        .filter_map(|p| Some((p.file_name()?.to_string_lossy().into_owned(), p)))
        .collect();
    let names: Vec<String> = objects.iter().map(|(n, _)| n.clone()).collect();
    let asm = unit_asm(out_dir, &prefix)?;
    for (name, asm) in pair_objects(&prefix, &asm, &names)? {
        let (_, path) = objects.iter().find(|(n, _)| n == name).expect("paired");
        assemble(&asm, path, &out_dir.join(name).with_extension("dwo"))?;
    }
    Ok(())
}

/// `args` with each `@FILE` replaced by the arguments the file holds, as
/// the GNU linker and compiler drivers read them (which is how rustc
/// writes them); a file that cannot be read stays an argument, as there.
fn expand_response_files(args: &[OsString]) -> Result<Vec<OsString>> {
    let mut out = Vec::with_capacity(args.len());
    expand_into(args.to_vec(), 0, &mut out)?;
    Ok(out)
}

fn expand_into(args: Vec<OsString>, depth: usize, out: &mut Vec<OsString>) -> Result<()> {
    for arg in args {
        let Some(path) = arg.as_bytes().strip_prefix(b"@").map(OsStr::from_bytes) else {
            out.push(arg);
            continue;
        };
        let Ok(text) = std::fs::read(path) else {
            out.push(arg);
            continue;
        };
        if depth == RESPONSE_FILE_DEPTH {
            bail!(
                "{}: response files name each other more than {RESPONSE_FILE_DEPTH} deep",
                Path::new(path).display()
            );
        }
        expand_into(split_response_file(&text), depth + 1, out)?;
    }
    Ok(())
}

/// The arguments of a response file: separated by white space, grouped
/// by single or double quotes, a backslash taking the next byte as it is.
fn split_response_file(text: &[u8]) -> Vec<OsString> {
    let mut args = Vec::new();
    let mut bytes = text.iter().copied().peekable();
    loop {
        while bytes.next_if(u8::is_ascii_whitespace).is_some() {}
        if bytes.peek().is_none() {
            return args;
        }
        let (mut arg, mut quote) = (Vec::new(), None);
        while let Some(c) = bytes.next() {
            match (c, quote) {
                (b'\\', _) => arg.extend(bytes.next()),
                (b'\'' | b'"', None) => quote = Some(c),
                (c, Some(q)) if c == q => quote = None,
                (c, None) if c.is_ascii_whitespace() => break,
                (c, _) => arg.push(c),
            }
        }
        args.push(OsString::from_vec(arg));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn reads_what_a_compilation_writes() {
        let args = os(&[
            "--crate-name",
            "foo",
            "--edition=2021",
            "src/lib.rs",
            "--crate-type",
            "lib",
            "--emit=dep-info,metadata,link",
            "-C",
            "extra-filename=-0123",
            "--out-dir",
            "/t/deps",
            "-C",
            "incremental=/t/inc",
            "-Clinker=ld.lld",
        ]);
        let unit = parse_unit(&args).unwrap().unwrap();
        assert_eq!(
            unit,
            Unit {
                out_dir: "/t/deps".into(),
                prefix: "foo-0123".into(),
                archives: vec!["libfoo-0123.rlib".into()],
                links: false,
                linker: Some("ld.lld".into()),
            }
        );
        let out = instrumented_args(&args, &unit, Path::new("/s/ftail-link"));
        assert!(out.contains(&"--emit=dep-info,metadata,link,asm".into()));
        assert!(!out
            .iter()
            .any(|a| a.to_string_lossy().contains("incremental")));
        assert!(!out.iter().any(|a| a.to_string_lossy().contains("linker")));
    }

    #[test]
    fn leaves_probes_checks_build_scripts_and_proc_macros_alone() {
        let none = |v: &[&str]| parse_unit(&os(v)).unwrap().is_none();
        assert!(none(&["-", "--crate-name", "___", "--print=file-names"]));
        assert!(none(&[
            "--crate-name",
            "a",
            "--emit=dep-info,metadata",
            "--out-dir",
            "d"
        ]));
        assert!(none(&[
            "--crate-name",
            "build_script_build",
            "--emit=link",
            "--out-dir",
            "d"
        ]));
        assert!(none(&[
            "--crate-name",
            "m",
            "--crate-type",
            "proc-macro",
            "--emit=link",
            "--out-dir",
            "d",
        ]));
    }

    #[test]
    fn refuses_lto_and_other_targets_with_a_reason() {
        let err = |v: &[&str]| parse_unit(&os(v)).unwrap_err().to_string();
        assert!(err(&["--crate-name", "a", "-C", "lto=fat", "--emit=link"]).contains("LTO"));
        assert!(err(&["--crate-name", "a", "-Clto", "--emit=link"]).contains("LTO"));
        assert!(parse_unit(&os(&[
            "--crate-name",
            "a",
            "-C",
            "lto=off",
            "--emit=link",
            "--out-dir",
            "d"
        ]))
        .is_ok());
        assert!(err(&["--target", "aarch64-unknown-linux-gnu"]).contains("x86-64 Linux only"));
        let program = [
            "--crate-name",
            "a",
            "--crate-type",
            "bin",
            "--emit=link",
            "--out-dir",
            "d",
        ];
        let with = |extra: &[&'static str]| [&program[..], extra].concat();
        let static_feature = with(&["-C", "target-feature=+avx2,+crt-static"]);
        assert!(err(&static_feature).contains("crt-static"));
        assert!(err(&with(&["--target", "x86_64-unknown-linux-musl"])).contains("crt-static"));
        let dynamic_musl = with(&[
            "--target",
            "x86_64-unknown-linux-musl",
            "-Ctarget-feature=+crt-static",
            "-C",
            "target-feature=-crt-static",
        ]);
        assert!(parse_unit(&os(&dynamic_musl)).is_ok());
        let static_lib = [
            "--crate-name",
            "a",
            "--crate-type",
            "lib",
            "--emit=link",
            "--out-dir",
            "d",
        ];
        let static_lib = [&static_lib[..], &["-C", "target-feature=+crt-static"]].concat();
        assert!(parse_unit(&os(&static_lib)).is_ok());
    }

    #[test]
    fn gives_gas_one_path_per_file_before_dwarf_5() {
        let (text, dwarf5) = for_gas(
            "\t.file\t\"cgu.0\"\n\t.file\t1 \"/rustc/abc\" \"library/core/src/a.rs\"\n\
             \t.file\t2 \"/src\" \"/abs/b \\\"q\\\".rs\"\n\tretq\n",
        );
        assert!(!dwarf5);
        assert_eq!(
            text,
            "\t.file\t\"cgu.0\"\n\t.file\t1 \"/rustc/abc/library/core/src/a.rs\"\n\
             \t.file\t2 \"/abs/b \\\"q\\\".rs\"\n\tretq\n"
        );
        let five = "\t.file\t0 \"/d\" \"a.rs\" md5 0x00\n";
        assert_eq!(for_gas(five), (five.to_string(), true));
    }

    #[test]
    fn reads_response_files_as_the_gnu_tools_do() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("inner");
        std::fs::write(&inner, "c.o 'd e.o'").unwrap();
        let outer = dir.path().join("outer");
        std::fs::write(
            &outer,
            format!("-o\nout\n/t/a\\ b.o\n\"x\\\"y\"\n@{}\n", inner.display()),
        )
        .unwrap();
        let missing = format!("@{}", dir.path().join("none").display());
        let args = os(&["-m64", &format!("@{}", outer.display()), &missing]);
        assert_eq!(
            expand_response_files(&args).unwrap(),
            os(&["-m64", "-o", "out", "/t/a b.o", "x\"y", "c.o", "d e.o", &missing])
        );
        std::fs::write(&inner, format!("@{}", inner.display())).unwrap();
        let err = expand_response_files(&os(&[&format!("@{}", inner.display())])).unwrap_err();
        assert!(err.to_string().contains("more than 16 deep"), "{err}");
    }

    #[test]
    fn finds_split_units_in_llvm_assembly() {
        assert!(has_split_dwarf(
            "\t.text\n\t.section\t.debug_info.dwo,\"e\",@progbits\n"
        ));
        assert!(!has_split_dwarf(
            "\t.section\t.debug_info,\"\",@progbits\n\t.ascii\t\".dwo\"\n"
        ));
    }

    #[test]
    fn pairs_assembly_with_its_codegen_units_objects() {
        let asm = [
            (
                "m.f19d-cgu.1".to_string(),
                PathBuf::from("m-h1.m.f19d-cgu.1.rcgu.s"),
            ),
            ("677ng".to_string(), PathBuf::from("m.s")),
        ];
        let objects = [
            "lib.rmeta".to_string(),
            "m-h1.m.f19d-cgu.10.rcgu.o".to_string(),
            "m-h1.m.f19d-cgu.1.rcgu.o".to_string(),
        ];
        let pairs = pair_objects("m-h1", &asm[..1], &objects).unwrap();
        assert_eq!(pairs, vec![("m-h1.m.f19d-cgu.1.rcgu.o", asm[0].1.clone())]);
        let inc = ["m.677ng.1cvs0mc.rcgu.o".to_string()];
        assert_eq!(pair_objects("m", &asm[1..], &inc).unwrap().len(), 1);
        assert!(pair_objects("m", &asm[..1], &inc).is_err());
    }
}

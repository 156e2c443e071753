//! `ftail cc` on a clang link line whose inputs are LLVM bitcode
//! (`-flto`, `-flto=thin`).
//!
//! LLVM's LTO back end runs inside the linker and writes objects without
//! ever running an assembler. lld can write the assembly instead
//! (`--lto-emit-asm`), one file per ThinLTO module or one for the merged
//! full-LTO module, from exactly the code generation a plain link would
//! run (the driver's `-plugin-opt`s, the modules' own PIC level, code
//! model and debug information). So the link goes in three steps:
//! 1. the user's link, told to write the LTO assembly into a private
//!    temporary directory instead of an output;
//! 2. each assembly file rewritten like any compiler's and assembled by
//!    clang's own assembler (it is LLVM's dialect: `.addrsig`, DWARF 5
//!    `.file` checksums);
//! 3. the user's link again, with those objects in place of the bitcode
//!    objects. Archives stay: lld already holds their members' symbols
//!    defined, so no bitcode member is taken again; a guard
//!    (`--lto-obj-path`) turns it into an error if one ever is.
//!
//! Inputs lld would name its assembly after are linked into the temporary
//! directory first, as lld writes a ThinLTO module's assembly next to the
//! module's own path.
//!
//! A build that runs ThinLTO's back ends itself (`--thinlto-index-only`)
//! needs none of this: its back ends are compile lines, and go through
//! ftail's assembler like any other.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Options that stop clang before it links: such a line is no LTO link.
const STOPS_BEFORE_LINK: &[&str] = &[
    "-c",
    "-S",
    "-E",
    "-M",
    "-MM",
    "-fsyntax-only",
    "-###",
    "--help",
    "-help",
    "--version",
    "-dumpversion",
    "-dumpmachine",
];

/// Driver options that take their value as the next argument.
const OPTIONS_WITH_VALUE: &[&str] = &[
    "-o",
    "-x",
    "-I",
    "-L",
    "-l",
    "-D",
    "-U",
    "-B",
    "-F",
    "-T",
    "-u",
    "-z",
    "-e",
    "-MF",
    "-MT",
    "-MQ",
    "-MJ",
    "-include",
    "-imacros",
    "-isystem",
    "-iquote",
    "-idirafter",
    "-iprefix",
    "-iwithprefix",
    "-isysroot",
    "-target",
    "--sysroot",
    "--param",
    "-arch",
    "-Xlinker",
    "-Xassembler",
    "-Xclang",
    "-Xpreprocessor",
];

/// Extensions of inputs the driver compiles (or assembles) before linking.
const SOURCE_EXTENSIONS: &[&str] = &[
    "c", "cc", "cp", "cpp", "cxx", "c++", "C", "CC", "i", "ii", "m", "mm", "s", "S", "sx",
];

/// What one input of the link line is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Input {
    /// A source file, compiled by the driver on the way.
    Source,
    /// An object file holding LLVM bitcode.
    Bitcode,
    /// An archive named on the line with a bitcode member.
    BitcodeArchive(PathBuf),
    /// An archive with a bitcode member that the linker finds for `-l`.
    BitcodeLibrary(PathBuf),
    /// Anything else: native objects, libraries, linker scripts.
    Other,
}

/// The parts of a clang command line that the LTO link route needs.
#[derive(Debug)]
struct LinkLine {
    /// `(position, kind)` of each input.
    inputs: Vec<(usize, Input)>,
    /// Positions of `-o FILE` or `-oFILE` (one or two arguments).
    output: Vec<usize>,
    /// The output file, as the driver would write it.
    output_path: PathBuf,
}

/// Links `args` through the LTO route when they are a clang link line with
/// bitcode inputs (or sources compiled with `-flto`); `None` leaves the
/// line to the compiler as it is.
pub fn link_if_lto(compiler: &OsStr, args: &[OsString], shim: &Path) -> Result<Option<i32>> {
    let args = expand_response_files(args, 0)?;
    let Some(line) = parse(&args)? else {
        return Ok(None);
    };
    link(compiler, &args, &line, shim).map(Some)
}

/// How deep response files may name other response files.
const MAX_RESPONSE_DEPTH: usize = 16;

/// `args` with each `@FILE` replaced by the arguments the file holds, as
/// the driver reads them (GNU quoting); an `@FILE` that cannot be read is
/// an argument like any other, as it is to the driver.
fn expand_response_files(args: &[OsString], depth: usize) -> Result<Vec<OsString>> {
    let mut out = Vec::new();
    for a in args {
        let Some(file) = a.to_str().and_then(|s| s.strip_prefix('@')) else {
            out.push(a.clone());
            continue;
        };
        let Ok(text) = std::fs::read_to_string(file) else {
            out.push(a.clone());
            continue;
        };
        if depth >= MAX_RESPONSE_DEPTH {
            bail!("{file}: response files nest more than {MAX_RESPONSE_DEPTH} deep");
        }
        let inner: Vec<OsString> = split_response_file(&text)
            .into_iter()
            .map(OsString::from)
            .collect();
        out.extend(expand_response_files(&inner, depth + 1)?);
    }
    Ok(out)
}

/// Splits a response file at unquoted white space; `'…'` and `"…"` quote,
/// a backslash takes the next character as it is.
fn split_response_file(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\\') => {
                word.extend(chars.next());
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    out
}

/// Reads the command line; `None` when it does not link bitcode.
fn parse(args: &[OsString]) -> Result<Option<LinkLine>> {
    let text: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if text
        .iter()
        .any(|a| STOPS_BEFORE_LINK.contains(&a.as_str()) || a.starts_with("-print-"))
    {
        return Ok(None);
    }
    // The build runs ThinLTO's back ends itself: each is a compile line
    // (`-x ir -fthinlto-index=…`) that goes through ftail's assembler like
    // any other, and this link only writes the indexes.
    if text.iter().any(|a| a.contains("thinlto-index-only")) {
        return Ok(None);
    }
    let mut lto = false;
    let mut whole_archive = false;
    let mut whole = Vec::new();
    let mut language = false;
    let mut stdin = false;
    let mut output = Vec::new();
    let mut output_path = PathBuf::from("a.out");
    let mut positions = Vec::new();
    let mut libraries = Vec::new();
    let mut search = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let a = text[i].as_str();
        let value = text.get(i + 1).map(String::as_str);
        match a {
            "-flto" => lto = true,
            "-fno-lto" => lto = false,
            _ if a.starts_with("-flto=") => lto = true,
            "-o" => {
                output = vec![i, i + 1];
                output_path = value.unwrap_or("a.out").into();
            }
            _ if a.starts_with("-o") => {
                output = vec![i];
                output_path = a[2..].into();
            }
            "-x" => language = true,
            _ if a.starts_with("-x") && a.len() > 2 => language = true,
            "-" => stdin = true,
            "-L" => search.extend(value.map(PathBuf::from)),
            _ if a.starts_with("-L") => search.push(PathBuf::from(&a[2..])),
            "-l" => libraries.extend(value.map(|v| (i + 1, v.to_string()))),
            _ if a.starts_with("-l") => libraries.push((i, a[2..].to_string())),
            _ if !a.starts_with('-') => positions.push(i),
            _ => {}
        }
        if whole_archive && (a.starts_with("-l") || !a.starts_with('-')) {
            whole.push(if a == "-l" { i + 1 } else { i });
        }
        for l in linker_options(a, value) {
            match l {
                "--whole-archive" | "-whole-archive" => whole_archive = true,
                "--no-whole-archive" | "-no-whole-archive" => whole_archive = false,
                _ => {}
            }
        }
        i += if OPTIONS_WITH_VALUE.contains(&a) {
            2
        } else {
            1
        };
    }
    let statically = text.iter().any(|a| a == "-static");
    let mut inputs = Vec::new();
    for &p in &positions {
        inputs.push((p, classify(Path::new(&args[p]))?));
    }
    for (p, name) in libraries {
        if let Some(archive) = find_library(&name, &search, statically) {
            if has_bitcode(&archive)? {
                inputs.push((p, Input::BitcodeLibrary(archive)));
            }
        }
    }
    inputs.sort_by_key(|(p, _)| *p);
    // Every member of such an archive is linked: its bitcode members in the
    // LTO code, and again, as bitcode, in the final link.
    if let Some((_, Input::BitcodeArchive(a) | Input::BitcodeLibrary(a))) =
        inputs.iter().find(|(p, k)| {
            whole.contains(p) && matches!(k, Input::BitcodeArchive(_) | Input::BitcodeLibrary(_))
        })
    {
        bail!(
            "{}: an archive with LLVM bitcode members inside --whole-archive; ftail cc \
             cannot link it with LTO: name its objects on the line instead",
            a.display()
        );
    }
    let bitcode = inputs
        .iter()
        .any(|(_, k)| !matches!(k, Input::Source | Input::Other));
    let sources = inputs.iter().any(|(_, k)| *k == Input::Source);
    if !(bitcode || lto && sources) {
        return Ok(None);
    }
    if language || stdin {
        bail!(
            "ftail cc cannot link LTO code from a line with `-x` or standard input: compile \
             the sources with -c first, then link the objects"
        );
    }
    Ok(Some(LinkLine {
        inputs,
        output,
        output_path,
    }))
}

/// The linker options an argument passes on (`-Wl,A,B`, `-Xlinker A`).
fn linker_options<'a>(arg: &'a str, value: Option<&'a str>) -> Vec<&'a str> {
    match arg {
        "-Xlinker" => value.into_iter().collect(),
        _ => arg
            .strip_prefix("-Wl,")
            .map_or(Vec::new(), |l| l.split(',').collect()),
    }
}

fn classify(path: &Path) -> Result<Input> {
    let ext = path.extension().and_then(OsStr::to_str).unwrap_or("");
    if SOURCE_EXTENSIONS.contains(&ext) {
        return Ok(Input::Source);
    }
    if is_bitcode_file(path) {
        return Ok(Input::Bitcode);
    }
    if has_bitcode(path)? {
        return Ok(Input::BitcodeArchive(path.to_path_buf()));
    }
    Ok(Input::Other)
}

/// The magic numbers of a bitcode file and of its wrapper.
fn is_bitcode_magic(head: &[u8]) -> bool {
    head.starts_with(b"BC\xC0\xDE") || head.starts_with(b"\xDE\xC0\x17\x0B")
}

fn is_bitcode_file(path: &Path) -> bool {
    let mut head = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| is_bitcode_magic(&head))
}

/// Whether `path` is an archive with a bitcode member. A thin archive
/// counts as one: its members live elsewhere, and the route is only slower
/// when it need not have been taken.
fn has_bitcode(path: &Path) -> Result<bool> {
    let Ok(mut f) = File::open(path) else {
        return Ok(false);
    };
    let mut magic = [0u8; 8];
    if f.read_exact(&mut magic).is_err() {
        return Ok(false);
    }
    match &magic {
        b"!<thin>\n" => Ok(true),
        b"!<arch>\n" => archive_has_bitcode(&mut f)
            .with_context(|| format!("{}: a damaged archive", path.display())),
        _ => Ok(false),
    }
}

/// Walks the members of a System V/GNU (or BSD) archive after its magic.
fn archive_has_bitcode(f: &mut File) -> Result<bool> {
    let len = f.metadata()?.len();
    let mut pos = 8u64;
    while pos + 60 <= len {
        let mut header = [0u8; 60];
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut header)?;
        if &header[58..60] != b"`\n" {
            bail!("no member header at offset {pos}");
        }
        let size: u64 = std::str::from_utf8(&header[48..58])?
            .trim()
            .parse()
            .context("a member size")?;
        let name = &header[..16];
        let mut data = pos + 60;
        // BSD archives put a long name in front of the data.
        if let Some(n) = name.strip_prefix(b"#1/") {
            data = data.saturating_add(std::str::from_utf8(n)?.trim().parse::<u64>()?);
        }
        // `/` and `/SYM64/` are symbol tables, `//` the long names.
        if name[0] != b'/' || name[1].is_ascii_digit() {
            let mut head = [0u8; 4];
            f.seek(SeekFrom::Start(data))?;
            if f.read_exact(&mut head).is_ok() && is_bitcode_magic(&head) {
                return Ok(true);
            }
        }
        pos = (pos + 60).saturating_add(size).saturating_add(size & 1);
    }
    Ok(false)
}

/// The archive the linker would take for `-lNAME` from the `-L`
/// directories, unless a shared library comes first.
fn find_library(name: &str, search: &[PathBuf], statically: bool) -> Option<PathBuf> {
    for dir in search {
        if let Some(file) = name.strip_prefix(':') {
            let p = dir.join(file);
            if p.is_file() {
                return Some(p);
            }
            continue;
        }
        if !statically && dir.join(format!("lib{name}.so")).exists() {
            return None;
        }
        let p = dir.join(format!("lib{name}.a"));
        if p.is_file() {
            return Some(p);
        }
    }
    None
}

/// Runs the three steps; returns the exit code of the first that fails.
fn link(compiler: &OsStr, args: &[OsString], line: &LinkLine, shim: &Path) -> Result<i32> {
    let tmp = tempfile::Builder::new()
        .prefix("ftail-lto-")
        .tempdir()
        .context("creating a temporary directory for the LTO link")?;
    let dir = tmp.path();
    // Sources compile first, as the driver would, so that the same objects
    // serve the first and the last link.
    let mut compiled = Vec::new();
    for (n, (p, _)) in line
        .inputs
        .iter()
        .filter(|(_, k)| *k == Input::Source)
        .enumerate()
    {
        let obj = compile_source(
            compiler,
            args,
            line,
            *p,
            &dir.join(format!("src/{n}")),
            shim,
        )?;
        match obj {
            Ok(obj) => compiled.push((*p, obj)),
            Err(code) => return Ok(code),
        }
    }
    let first = first_link_args(args, line, &compiled, dir)?;
    require_lld(compiler, &first)?;
    let status = Command::new(compiler)
        .args(&first)
        .status()
        .with_context(|| format!("running {}", compiler.to_string_lossy()))?;
    if !status.success() {
        return Ok(crate::exit_code(status));
    }
    let natives = match assemble_all(compiler, dir)? {
        Ok(natives) => natives,
        Err(code) => return Ok(code),
    };
    let leak = dir.join("leak.o");
    let last = last_link_args(args, line, &compiled, &natives, &leak);
    let status = Command::new(compiler)
        .args(&last)
        .status()
        .with_context(|| format!("running {}", compiler.to_string_lossy()))?;
    if status.success() && bitcode_leaked(dir) {
        let _ = std::fs::remove_file(&line.output_path);
        bail!(
            "the final link of {} took an archive member that is LLVM bitcode and was not \
             in the LTO link (a --whole-archive archive?); ftail cc cannot place sites in it",
            line.output_path.display()
        );
    }
    Ok(crate::exit_code(status))
}

/// Compiles the source at `args[pos]` with the line's other options into
/// `out_dir`; the compiler's exit code when it fails.
fn compile_source(
    compiler: &OsStr,
    args: &[OsString],
    line: &LinkLine,
    pos: usize,
    out_dir: &Path,
    shim: &Path,
) -> Result<std::result::Result<PathBuf, i32>> {
    std::fs::create_dir_all(out_dir)?;
    let src = Path::new(&args[pos]);
    let stem = src.file_stem().unwrap_or(OsStr::new("source"));
    let obj = out_dir.join(stem).with_extension("o");
    let others = args
        .iter()
        .enumerate()
        .filter(|(i, _)| !line.output.contains(i) && !line.inputs.iter().any(|(p, _)| p == i));
    let status = Command::new(compiler)
        .arg("-B")
        .arg(shim)
        .arg("-fno-integrated-as")
        .args(others.map(|(_, a)| a))
        .args(["-Qunused-arguments", "-c"])
        .arg(src)
        .arg("-o")
        .arg(&obj)
        .status()
        .with_context(|| format!("running {}", compiler.to_string_lossy()))?;
    if !status.success() {
        return Ok(Err(crate::exit_code(status)));
    }
    Ok(Ok(obj))
}

/// The first link: bitcode inputs (and archives holding some) linked into
/// `dir` so that lld writes their assembly there, output into `dir`.
fn first_link_args(
    args: &[OsString],
    line: &LinkLine,
    compiled: &[(usize, PathBuf)],
    dir: &Path,
) -> Result<Vec<OsString>> {
    let mut out: Vec<OsString> = args.to_vec();
    let mut search = Vec::new();
    for (n, (p, kind)) in line.inputs.iter().enumerate() {
        let target = match kind {
            Input::Bitcode => PathBuf::from(&args[*p]),
            Input::BitcodeArchive(path) | Input::BitcodeLibrary(path) => path.clone(),
            Input::Source => {
                let obj = &compiled.iter().find(|(q, _)| q == p).expect("compiled").1;
                out[*p] = obj.into();
                continue;
            }
            Input::Other => continue,
        };
        let sub = dir.join(format!("in/{n}"));
        std::fs::create_dir_all(&sub)?;
        let name = target.file_name().unwrap_or(OsStr::new("input"));
        let link = sub.join(name);
        let absolute = std::path::absolute(&target)?;
        std::os::unix::fs::symlink(&absolute, &link)
            .with_context(|| format!("linking {} into {}", absolute.display(), sub.display()))?;
        // The linker looks for `-lNAME` in this directory first and finds
        // the same archive it would have found.
        if let Input::BitcodeLibrary(_) = kind {
            search.push(OsString::from("-L"));
            search.push(sub.into());
        } else {
            out[*p] = link.into();
        }
    }
    let kept = out
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !line.output.contains(i))
        .map(|(_, a)| a);
    let mut out: Vec<OsString> = search.into_iter().chain(kept).collect();
    out.push("-o".into());
    out.push(dir.join("lto").into());
    out.push("-Wl,--lto-emit-asm".into());
    Ok(out)
}

/// The last link: the user's line with the native objects where the first
/// bitcode input was, bitcode objects left out, sources replaced by the
/// objects compiled from them, archives as they were.
fn last_link_args(
    args: &[OsString],
    line: &LinkLine,
    compiled: &[(usize, PathBuf)],
    natives: &[PathBuf],
    leak: &Path,
) -> Vec<OsString> {
    let bitcode_object = |i: usize| {
        line.inputs.iter().any(|(p, k)| {
            *p == i
                && (*k == Input::Bitcode || (*k == Input::Source && compiled_bitcode(compiled, i)))
        })
    };
    let first = line.inputs.iter().map(|(p, _)| *p).find(|&p| {
        bitcode_object(p) || !matches!(kind_at(line, p), Some(Input::Other | Input::Source))
    });
    let mut out = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if Some(i) == first {
            out.extend(natives.iter().map(OsString::from));
        }
        if bitcode_object(i) {
            continue;
        }
        match compiled.iter().find(|(q, _)| *q == i) {
            Some((_, obj)) => out.push(obj.into()),
            None => out.push(a.clone()),
        }
    }
    // Not `-Wl,`: that would split a path with a comma.
    let mut guard = OsString::from("--lto-obj-path=");
    guard.push(leak);
    out.push("-Xlinker".into());
    out.push(guard);
    out
}

fn kind_at(line: &LinkLine, pos: usize) -> Option<&Input> {
    line.inputs.iter().find(|(p, _)| *p == pos).map(|(_, k)| k)
}

fn compiled_bitcode(compiled: &[(usize, PathBuf)], pos: usize) -> bool {
    compiled
        .iter()
        .any(|(q, obj)| *q == pos && is_bitcode_file(obj))
}

/// Whether the last link ran LTO itself: lld then writes a non-empty
/// `--lto-obj-path` file (or numbered ones for ThinLTO modules).
fn bitcode_leaked(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with("leak.o")
                && e.metadata().is_ok_and(|m| m.len() > 0)
        })
    })
}

/// Refuses a linker other than lld, which alone can write LTO assembly;
/// asks the driver (`-###`) which linker it would run.
fn require_lld(compiler: &OsStr, args: &[OsString]) -> Result<()> {
    let Ok(out) = Command::new(compiler).arg("-###").args(args).output() else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(&out.stderr);
    let Some(linker) = text
        .lines()
        .rfind(|l| l.starts_with(" \""))
        .and_then(|l| l.split('"').nth(1))
    else {
        return Ok(());
    };
    let name = Path::new(linker)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains("lld") {
        bail!(
            "clang LTO links through ftail cc need lld, which can write the LTO code as \
             assembly; this line links with {linker}: add -fuse-ld=lld (Debian: lld-19)"
        );
    }
    Ok(())
}

/// The assembly files lld wrote under `dir`, in a stable order.
fn lto_assembly(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type()?.is_dir() {
                pending.push(path);
            } else if name.starts_with("lto.lto") && name.ends_with(".s") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Rewrites and assembles every LTO assembly file, a few at a time; the
/// assembler's exit code when one fails.
fn assemble_all(compiler: &OsStr, dir: &Path) -> Result<std::result::Result<Vec<PathBuf>, i32>> {
    let files = lto_assembly(dir)?;
    let verbose =
        std::env::var_os(crate::as_shim::VERBOSE_ENV).is_some_and(|v| v != "0" && !v.is_empty());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<std::result::Result<(usize, PathBuf), i32>>> =
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers.min(files.len()))
                .map(|_| {
                    s.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(file) = files.get(i) else { break };
                            let obj = file.with_extension("o");
                            done.push(
                                assemble(compiler, file, &obj, verbose)
                                    .map(|r| r.map(|()| (i, obj))),
                            );
                        }
                        done
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("an assembling thread panicked"))
                .collect()
        });
    let mut natives = Vec::new();
    for r in results {
        match r? {
            Ok(done) => natives.push(done),
            Err(code) => return Ok(Err(code)),
        }
    }
    natives.sort();
    Ok(Ok(natives.into_iter().map(|(_, p)| p).collect()))
}

/// Rewrites one LTO assembly file and assembles it into `obj`.
fn assemble(
    compiler: &OsStr,
    file: &Path,
    obj: &Path,
    verbose: bool,
) -> Result<std::result::Result<(), i32>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the LTO assembly {}", file.display()))?;
    let label = module_label(file);
    let rewritten = crate::as_shim::instrument_to_temp(&text, Path::new(&label), verbose)?;
    let status = Command::new(compiler)
        .args(["-c", "-x", "assembler"])
        .arg(rewritten.path())
        .arg("-o")
        .arg(obj)
        .status()
        .with_context(|| format!("running {}", compiler.to_string_lossy()))?;
    if !status.success() {
        return Ok(Err(crate::exit_code(status)));
    }
    Ok(Ok(()))
}

/// A name for an LTO module's assembly in messages: the input lld named
/// it after, or `LTO` for the merged module.
fn module_label(file: &Path) -> String {
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let module = name
        .strip_prefix("lto.lto.")
        .and_then(|m| m.strip_suffix(".s"));
    match module {
        Some(m) => format!("LTO module {m}"),
        None => "LTO module (merged)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    /// An archive with a symbol table and the given members.
    fn archive(members: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        let mut bytes = b"!<arch>\n".to_vec();
        let symbols: &[(&str, &[u8])] = &[("/", b"\0\0\0\0")];
        for (name, data) in symbols.iter().chain(members) {
            let header = format!(
                "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                0,
                0,
                0,
                644,
                data.len()
            );
            bytes.extend_from_slice(header.as_bytes());
            bytes.extend_from_slice(data);
            if data.len() % 2 == 1 {
                bytes.push(b'\n');
            }
        }
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, &bytes).unwrap();
        f
    }

    #[test]
    fn finds_bitcode_among_archive_members() {
        let native = archive(&[("a.o/", b"\x7fELF...")]);
        assert!(!has_bitcode(native.path()).unwrap());
        let mixed = archive(&[("a.o/", b"\x7fELF."), ("b.o/", b"BC\xC0\xDE\x35")]);
        assert!(has_bitcode(mixed.path()).unwrap());
        let wrapped = archive(&[("/4", b"\xDE\xC0\x17\x0B")]);
        assert!(has_bitcode(wrapped.path()).unwrap());
    }

    #[test]
    fn a_damaged_archive_is_named() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let text = format!("!<arch>\n{}", "not a member header ".repeat(4));
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        let err = format!("{:#}", has_bitcode(f.path()).unwrap_err());
        assert!(err.contains("a damaged archive"), "{err}");
        assert!(err.contains(&f.path().display().to_string()), "{err}");
    }

    #[test]
    fn takes_only_link_lines_with_bitcode_or_lto_sources() {
        assert!(parse(&os(&["-flto", "-c", "a.c"])).unwrap().is_none());
        assert!(parse(&os(&["-O2", "-o", "p", "a.c"])).unwrap().is_none());
        let line = parse(&os(&["-flto=thin", "-o", "p", "a.c"]))
            .unwrap()
            .unwrap();
        assert_eq!(line.output, vec![1, 2]);
        assert_eq!(line.output_path, Path::new("p"));
        assert_eq!(line.inputs, vec![(3, Input::Source)]);
        assert!(parse(&os(&["-flto", "-flto=thin", "-fno-lto", "a.c"]))
            .unwrap()
            .is_none());
        assert!(parse(&os(&["-flto", "-x", "c", "a.c"])).is_err());
    }

    #[test]
    fn leaves_index_only_links_to_the_build() {
        let line = os(&["-flto=thin", "-Wl,--thinlto-index-only", "-o", "p", "a.c"]);
        assert!(parse(&line).unwrap().is_none());
    }

    #[test]
    fn refuses_bitcode_archives_inside_whole_archive() {
        let lib = archive(&[("b.o/", b"BC\xC0\xDE")]);
        let path = lib.path().to_str().unwrap();
        let inside = os(&["-Wl,--whole-archive", path, "-Wl,--no-whole-archive"]);
        let err = format!("{:#}", parse(&inside).unwrap_err());
        assert!(
            err.starts_with(path) && err.contains("--whole-archive"),
            "{err}"
        );
        let after = os(&[
            "-Xlinker",
            "--whole-archive",
            "-Wl,--no-whole-archive",
            path,
        ]);
        assert!(parse(&after).unwrap().is_some());
    }

    #[test]
    fn splits_response_files_as_the_driver_does() {
        assert_eq!(
            split_response_file("a.o  'b c.o'\n\"d\\\"e\" f\\ g -o\tout\n"),
            ["a.o", "b c.o", "d\"e", "f g", "-o", "out"]
        );
        assert_eq!(split_response_file("'' x"), ["", "x"]);
    }

    #[test]
    fn expands_nested_response_files() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("inner.rsp");
        let outer = dir.path().join("outer.rsp");
        std::fs::write(&inner, "b.o c.o").unwrap();
        std::fs::write(&outer, format!("a.o @{}", inner.display())).unwrap();
        let args = os(&["-O2", &format!("@{}", outer.display()), "@missing-file"]);
        assert_eq!(
            expand_response_files(&args, 0).unwrap(),
            os(&["-O2", "a.o", "b.o", "c.o", "@missing-file"])
        );
        std::fs::write(&inner, format!("@{}", inner.display())).unwrap();
        let err = format!("{:#}", expand_response_files(&args, 0).unwrap_err());
        assert!(err.contains("nest more than"), "{err}");
    }
}

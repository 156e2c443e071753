//! Symbolization of programs built here with gcc and g++, checked against
//! binutils (`nm`, `c++filt`, `readelf`) and the sources' own lines.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::*;

const C_SOURCE: &str = r#"#include <stdio.h>
static __attribute__((noinline)) int beta(int x) { return x * 3 + 1; }
__attribute__((noinline)) int alpha(int x) { return beta(x) + 2; }
__attribute__((noinline)) int target(int x) {
    return alpha(x) * 7;
}
int main(int argc, char **argv) { (void)argv; printf("%d\n", target(argc)); return 0; }
"#;

const CXX_SOURCE: &str = r#"#include <cstdio>
#include <vector>
namespace ns {
class Klass {
public:
    explicit Klass(int v) : v_(v) {}
    __attribute__((noinline)) int method(int x) const { return v_ + x; }
    __attribute__((noinline)) bool operator<(const Klass &o) const { return v_ < o.v_; }
private:
    int v_;
};
template <typename T> __attribute__((noinline)) T twice(T x) { return x + x; }
}
namespace {
__attribute__((noinline)) int hidden(std::vector<int> &v) { v.push_back(1); return (int)v.size(); }
}
int main() {
    ns::Klass k(3), j(4);
    std::vector<int> v;
    auto add = [&](int x) __attribute__((noinline)) { return k.method(x) + ns::twice(x); };
    std::printf("%d %d %f %d\n", add(1), (int)(k < j), ns::twice(1.5), hidden(v));
}
"#;

/// Runs a tool, failing the test with its output if it fails.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Compiles `source` (named `name`) in `dir` into `out` with `args`.
fn build(
    dir: &Path,
    compiler: &str,
    name: &str,
    source: &str,
    out: &str,
    args: &[&str],
) -> PathBuf {
    let src = dir.join(name);
    std::fs::write(&src, source).unwrap();
    let exe = dir.join(out);
    run(Command::new(compiler)
        .args(args)
        .arg("-Wl,--build-id")
        .arg("-o")
        .arg(&exe)
        .arg(&src));
    exe
}

/// `nm -S`: defined text symbols (address, size, mangled name).
fn nm(path: &Path) -> Vec<(u64, u64, String)> {
    run(Command::new("nm").args(["-S", "--defined-only"]).arg(path))
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f[..] {
                [addr, size, "T" | "t" | "W", name] => Some((
                    u64::from_str_radix(addr, 16).ok()?,
                    u64::from_str_radix(size, 16).ok()?,
                    name.to_string(),
                )),
                _ => None,
            }
        })
        .collect()
}

fn nm_find(path: &Path, name: &str) -> (u64, u64) {
    nm(path)
        .into_iter()
        .find(|s| s.2 == name)
        .map(|s| (s.0, s.1))
        .unwrap_or_else(|| panic!("{name} not in {}", path.display()))
}

/// The GNU build id as `readelf -n` prints it.
fn build_id(path: &Path) -> String {
    run(Command::new("readelf").arg("-n").arg(path))
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_string))
        .expect("build id")
}

fn cxxfilt(names: &[String], params: bool) -> Vec<String> {
    let mut cmd = Command::new("c++filt");
    if !params {
        cmd.arg("-p");
    }
    run(cmd.args(names)).lines().map(str::to_string).collect()
}

/// Options that look only where a test says.
fn only(dirs: &[&Path]) -> SymbolOptions {
    SymbolOptions {
        symbols_dirs: dirs.iter().map(|d| d.to_path_buf()).collect(),
        debug_dir: None,
        debuginfod_cache: None,
    }
}

/// Every function of `exe` (per `nm`) is found at its first and last
/// byte, with the bias added.
fn check_every_function(m: &Mapped, exe: &Path, bias: u64) {
    let syms = nm(exe);
    assert!(syms.len() >= 3, "{syms:?}");
    for (addr, size, name) in syms.iter().filter(|s| s.1 > 0) {
        for off in [0, size - 1] {
            let s = m
                .lookup(bias + addr + off)
                .unwrap_or_else(|| panic!("{name}+{off} not found"));
            // Aliases share an address; the one chosen has it too.
            let same = syms.iter().any(|o| o.0 == *addr && *o.2 == *s.mangled);
            assert!(same, "{name}+{off}: got {}", s.mangled);
            assert_eq!((s.start, s.offset), (bias + addr, off), "{name}");
        }
    }
}

#[test]
fn c_executables_fixed_and_position_independent() {
    let d = tempfile::tempdir().unwrap();
    let fixed = build(
        d.path(),
        "gcc",
        "fixed.c",
        C_SOURCE,
        "fixed",
        &["-O1", "-no-pie", "-fno-pie"],
    );
    let pie = build(
        d.path(),
        "gcc",
        "pie.c",
        C_SOURCE,
        "pie",
        &["-O1", "-fPIE", "-pie"],
    );
    let cache = SymbolCache::new(only(&[]));

    // An ET_EXEC is linked at its addresses: whatever base is recorded.
    let m = cache.module(&fixed, Some(&build_id(&fixed)), 0x7000_0000);
    assert!(m.symbols.is_fixed_position());
    assert_eq!(m.bias, 0);
    check_every_function(&m, &fixed, 0);
    assert!(m.diagnostics().is_empty(), "{:?}", m.diagnostics());

    let bias = 0x5555_5555_0000;
    let m = cache.module(&pie, Some(&build_id(&pie)), bias);
    assert!(!m.symbols.is_fixed_position());
    check_every_function(&m, &pie, bias);
    let (beta, _) = nm_find(&pie, "beta");
    let s = m.lookup(bias + beta + 1).unwrap();
    assert_eq!(
        (&*s.name, &*s.signature, s.source),
        ("beta", "beta", Source::Elf)
    );
    // Below the bias is no address of this mapping.
    assert_eq!(m.lookup(beta), None);

    // Read once, shared.
    let again = cache.module(&pie, Some(&build_id(&pie)), 0x1000);
    assert!(Arc::ptr_eq(&again.symbols, &m.symbols));
}

#[test]
fn shared_library_at_a_bias() {
    let d = tempfile::tempdir().unwrap();
    let lib = build(
        d.path(),
        "gcc",
        "lib.c",
        "int lib_add(int a, int b) { return a + b; }\nstatic __attribute__((noinline)) int lib_hidden(int a) { return a * 2; }\nint lib_twice(int a) { return lib_hidden(a) + lib_add(a, a); }\n",
        "libfix.so",
        &["-O1", "-shared", "-fPIC"],
    );
    let bias = 0x7f12_3400_0000;
    let m = SymbolCache::new(only(&[])).module(&lib, Some(&build_id(&lib)), bias);
    check_every_function(&m, &lib, bias);
    let (add, _) = nm_find(&lib, "lib_add");
    assert_eq!(&*m.lookup(bias + add).unwrap().name, "lib_add");
}

#[test]
fn cxx_names_with_and_without_parameters() {
    let d = tempfile::tempdir().unwrap();
    let exe = build(d.path(), "g++", "prog.cc", CXX_SOURCE, "prog", &["-O1"]);
    let m = SymbolCache::new(only(&[])).module(&exe, Some(&build_id(&exe)), 0x4000_0000);
    let syms: Vec<(u64, u64, String)> = nm(&exe)
        .into_iter()
        .filter(|s| s.2.starts_with("_Z"))
        .collect();
    let mangled: Vec<String> = syms.iter().map(|s| s.2.clone()).collect();
    let (full, short) = (cxxfilt(&mangled, true), cxxfilt(&mangled, false));
    let mut shown = Vec::new();
    for (i, (addr, _, name)) in syms.iter().enumerate() {
        let s = m.lookup(m.bias + addr).unwrap();
        if *s.mangled != **name {
            continue; // an alias won
        }
        assert_eq!(
            (&*s.signature, &*s.name),
            (full[i].as_str(), short[i].as_str()),
            "{name}"
        );
        shown.push(s);
    }
    let by_name = |n: &str| {
        shown.iter().find(|s| &*s.name == n).unwrap_or_else(|| {
            panic!(
                "{n} not among {:?}",
                shown.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
    };
    assert_eq!(
        &*by_name("ns::Klass::method").signature,
        "ns::Klass::method(int) const"
    );
    assert_eq!(
        &*by_name("ns::twice<int>").signature,
        "int ns::twice<int>(int)"
    );
    assert_eq!(
        &*by_name("ns::twice<double>").signature,
        "double ns::twice<double>(double)"
    );
    assert!(by_name("(anonymous namespace)::hidden")
        .signature
        .contains("std::vector<int"));
    assert!(by_name("main::{lambda(int)#1}::operator()")
        .signature
        .ends_with("(int) const"));

    // Globs select by demangled name, name with parameters, or mangled.
    let method = by_name("ns::Klass::method");
    assert!(matches("ns::Klass::*", method));
    assert!(matches("*::method(int) const", method));
    assert!(matches("_ZNK2ns5Klass*", method));
    assert!(!matches("ns::Other::*", method));
    assert!(Glob::new("ns::twice<*>").matches(by_name("ns::twice<double>")));
}

/// The line of the first line of `source` containing `needle`, from 1.
fn line_of(source: &str, needle: &str) -> u32 {
    source.lines().position(|l| l.contains(needle)).unwrap() as u32 + 1
}

#[test]
fn source_lines_from_dwarf() {
    let d = tempfile::tempdir().unwrap();
    let exe = build(
        d.path(),
        "gcc",
        "lines.c",
        C_SOURCE,
        "lines",
        &["-O0", "-g", "-fPIE", "-pie"],
    );
    let bias = 0x5600_0000_0000;
    let m = SymbolCache::new(only(&[])).module(&exe, Some(&build_id(&exe)), bias);
    let (target, _) = nm_find(&exe, "target");
    let line = m.srcline(bias + target).expect("a line for target");
    assert!(line.file.ends_with("lines.c"), "{line}");
    assert_eq!(line.line, line_of(C_SOURCE, "int target(int x)"));
    assert_eq!(line.to_string(), format!("{}:{}", line.file, line.line));
    let (main, _) = nm_find(&exe, "main");
    assert_eq!(
        m.srcline(bias + main).unwrap().line,
        line_of(C_SOURCE, "int main(")
    );
    // Without -g there are no lines, and nothing to complain about.
    let bare = build(d.path(), "gcc", "bare.c", C_SOURCE, "bare", &["-O0"]);
    let m = SymbolCache::new(only(&[])).module(&bare, Some(&build_id(&bare)), 0);
    assert_eq!(m.srcline(nm_find(&bare, "target").0), None);
    assert!(m.diagnostics().is_empty());
}

/// `exe` stripped, its symbols and DWARF moved to `debug`.
fn split_debug(exe: &Path, debug: &Path, link: bool) {
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(exe)
        .arg(debug));
    run(Command::new("objcopy").arg("--strip-all").arg(exe));
    if link {
        let dir = debug.parent().unwrap();
        run(Command::new("objcopy")
            .current_dir(dir)
            .arg(format!("--add-gnu-debuglink={}", debug.display()))
            .arg(exe));
    }
}

#[test]
fn stripped_binary_with_a_debuglink() {
    let d = tempfile::tempdir().unwrap();
    let exe = build(
        d.path(),
        "gcc",
        "s.c",
        C_SOURCE,
        "stripped",
        &["-O0", "-g", "-fPIE", "-pie"],
    );
    let (beta, _) = nm_find(&exe, "beta");
    let (target, _) = nm_find(&exe, "target");
    let id = build_id(&exe);
    let debug = d.path().join("stripped.debug");
    split_debug(&exe, &debug, true);
    assert!(nm(&exe).is_empty(), "strip left symbols");

    // Names and lines from the debug file, addresses from the binary.
    let bias = 0x5555_0000_0000;
    let check = |opts: SymbolOptions| {
        let m = SymbolCache::new(opts).module(&exe, Some(&id), bias);
        assert_eq!(
            m.lookup(bias + beta).map(|s| s.name.to_string()).as_deref(),
            Some("beta")
        );
        let line = m.srcline(bias + target).unwrap();
        assert_eq!(line.line, line_of(C_SOURCE, "int target(int x)"));
        m
    };
    let m = check(only(&[]));
    assert!(m.diagnostics().is_empty(), "{:?}", m.diagnostics());

    // In `.debug/` next to the binary.
    std::fs::create_dir(d.path().join(".debug")).unwrap();
    std::fs::rename(&debug, d.path().join(".debug/stripped.debug")).unwrap();
    check(only(&[]));

    // A debug file whose CRC differs is not used, and the user hears why.
    let mut bytes = std::fs::read(d.path().join(".debug/stripped.debug")).unwrap();
    bytes.push(0);
    std::fs::write(d.path().join(".debug/stripped.debug"), bytes).unwrap();
    let m = SymbolCache::new(only(&[])).module(&exe, Some(&id), bias);
    assert_eq!(
        m.lookup(bias + beta),
        None,
        "a static function named from a rejected file"
    );
    assert_eq!(m.srcline(bias + target), None);
    let diags: Vec<String> = m.diagnostics().iter().map(|d| d.to_string()).collect();
    assert!(
        diags
            .iter()
            .any(|d| d.starts_with("ignoring debug file") && d.contains("CRC-32")),
        "{diags:?}"
    );
}

#[test]
fn debug_file_from_a_build_id_directory() {
    let d = tempfile::tempdir().unwrap();
    let exe = build(
        d.path(),
        "gcc",
        "b.c",
        C_SOURCE,
        "byid",
        &["-O1", "-g", "-no-pie", "-fno-pie"],
    );
    let (beta, _) = nm_find(&exe, "beta");
    let id = build_id(&exe);
    let syms = d.path().join("syms");
    let dir = syms.join(".build-id").join(&id[..2]);
    std::fs::create_dir_all(&dir).unwrap();
    split_debug(&exe, &dir.join(format!("{}.debug", &id[2..])), false);

    let m = SymbolCache::new(only(&[])).module(&exe, Some(&id), 0);
    assert_eq!(m.lookup(beta), None, "found without being told where");
    let m = SymbolCache::new(only(&[&syms])).module(&exe, Some(&id), 0);
    assert_eq!(&*m.lookup(beta + 1).unwrap().name, "beta");
    assert!(m.srcline(beta).is_some());

    // The same layout as the system's debug directory.
    let opts = SymbolOptions {
        debug_dir: Some(syms.clone()),
        ..only(&[])
    };
    assert!(SymbolCache::new(opts)
        .module(&exe, Some(&id), 0)
        .lookup(beta)
        .is_some());
    // And as the debuginfod client's cache.
    let cache = d.path().join("dbgcache");
    std::fs::create_dir_all(cache.join(&id)).unwrap();
    std::fs::copy(
        dir.join(format!("{}.debug", &id[2..])),
        cache.join(&id).join("debuginfo"),
    )
    .unwrap();
    let opts = SymbolOptions {
        debuginfod_cache: Some(cache),
        ..only(&[])
    };
    assert!(SymbolCache::new(opts)
        .module(&exe, Some(&id), 0)
        .lookup(beta)
        .is_some());
}

#[test]
fn a_rebuilt_file_is_never_read_as_the_recorded_one() {
    let d = tempfile::tempdir().unwrap();
    let v1 = build(
        d.path(),
        "gcc",
        "r.c",
        C_SOURCE,
        "prog",
        &["-O1", "-no-pie", "-fno-pie"],
    );
    let id1 = build_id(&v1);
    let old: Vec<(u64, u64, String)> = nm(&v1);
    let keep = d.path().join("keep");
    std::fs::create_dir(&keep).unwrap();
    std::fs::copy(&v1, keep.join("prog")).unwrap();
    // Rebuilt with a new function first: every address moves.
    let source = format!("int pad(int x) {{ return x * x * x + 5; }}\n{C_SOURCE}");
    let v2 = build(
        d.path(),
        "gcc",
        "r.c",
        &source,
        "prog",
        &["-O1", "-no-pie", "-fno-pie"],
    );
    assert_eq!(v1, v2);
    let id2 = build_id(&v2);
    assert_ne!(id1, id2);

    let m = SymbolCache::new(only(&[])).module(&v2, Some(&id1), 0);
    for (addr, _, name) in &old {
        assert_eq!(m.lookup(*addr), None, "{name} looked up in the wrong file");
    }
    let diags = m.diagnostics();
    assert_eq!(diags.len(), 1, "{diags:?}");
    let text = diags[0].to_string();
    let expect = format!(
        "build id mismatch: {} is now {id2}, the trace recorded {id1}; no place to look",
        v2.display()
    );
    assert!(text.starts_with(&expect), "{text}");

    // The recorded file, kept in a symbols directory, is found there.
    let m = SymbolCache::new(only(&[&keep])).module(&v2, Some(&id1), 0);
    for (addr, size, name) in old.iter().filter(|s| s.1 > 0) {
        let s = m.lookup(addr + size - 1).unwrap();
        assert!(
            old.iter().any(|o| o.0 == *addr && *o.2 == *s.mangled),
            "{name}"
        );
    }
    assert!(
        matches!(&m.diagnostics()[..], [Diagnostic::Substituted { by, .. }] if *by == keep.join("prog"))
    );
}

#[test]
fn missing_and_damaged_files_are_diagnosed() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("gone.so");
    let m = SymbolCache::new(only(&[])).module(&missing, Some("abcdef12"), 0x1000);
    assert_eq!(m.lookup(0x1234), None);
    let text = m.diagnostics()[0].to_string();
    assert!(
        text.starts_with(&format!("{}: ", missing.display())),
        "{text}"
    );

    let exe = build(d.path(), "gcc", "t.c", C_SOURCE, "t", &["-O1"]);
    let data = std::fs::read(&exe).unwrap();
    let cut = d.path().join("cut");
    std::fs::write(&cut, &data[..100]).unwrap();
    let m = ModuleSymbols::load(&cut, None, &only(&[]));
    assert!(m.is_empty());
    let text = m.diagnostics()[0].to_string();
    assert!(
        text.starts_with(&format!("{}: not an ELF file", cut.display())),
        "{text}"
    );
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_elf_files_never_panic() {
    let d = tempfile::tempdir().unwrap();
    let exe = build(d.path(), "g++", "f.cc", CXX_SOURCE, "fuzz", &["-O1", "-g"]);
    let data = std::fs::read(&exe).unwrap();
    let funcs = nm(&exe);
    let path = d.path().join("mutant");
    let opts = only(&[]);
    let mut rng = Rng(0x5eed_f7a1_1000_0001);
    let started = std::time::Instant::now();
    let mut runs = 0;
    while runs < 400 && started.elapsed() < std::time::Duration::from_secs(4) {
        runs += 1;
        let mut m = data.clone();
        match rng.below(4) {
            0 => m.truncate(rng.below(data.len())),
            1 => {
                // Flip bytes in the headers, where damage matters most.
                for _ in 0..1 + rng.below(8) {
                    let at = rng.below(m.len().min(4096));
                    m[at] ^= 1 << rng.below(8);
                }
            }
            2 => {
                for _ in 0..1 + rng.below(32) {
                    let at = rng.below(m.len());
                    m[at] = rng.next() as u8;
                }
            }
            _ => {
                let at = rng.below(m.len());
                let len = rng.below(512).min(m.len() - at);
                m[at..at + len].fill(0xff);
            }
        }
        std::fs::write(&path, &m).unwrap();
        let syms = ModuleSymbols::load(&path, None, &opts);
        for (addr, _, _) in funcs.iter().take(8) {
            let _ = syms.lookup(*addr);
            let _ = syms.srcline(*addr);
        }
        for d in syms.diagnostics() {
            assert!(d.to_string().contains("mutant"), "{d}");
        }
    }
    assert!(runs >= 50, "only {runs} runs");
}

#[test]
fn shared_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<SymbolCache>();
    send_sync::<ModuleSymbols>();
    send_sync::<Mapped>();
    send_sync::<Symbol>();
}

/// `source` compiled to assembly, instrumented by `ftail_instrument`
/// (what `ftail cc` does), assembled and linked.
fn build_instrumented(dir: &Path, source: &str, out: &str, args: &[&str]) -> PathBuf {
    let src = dir.join(format!("{out}.c"));
    std::fs::write(&src, source).unwrap();
    let asm = dir.join(format!("{out}.s"));
    run(Command::new("gcc")
        .args(["-O2", "-S", "-o"])
        .arg(&asm)
        .arg(&src));
    let text = std::fs::read_to_string(&asm).unwrap();
    let rewritten = ftail_instrument::rewrite(&text).unwrap();
    let sites = dir.join(format!("{out}.ftail.s"));
    std::fs::write(&sites, rewritten.text).unwrap();
    let exe = dir.join(out);
    run(Command::new("gcc")
        .args(args)
        .arg("-Wl,--build-id")
        .arg("-o")
        .arg(&exe)
        .arg(&sites));
    exe
}

#[test]
fn site_tables_name_entries_even_when_stripped() {
    let d = tempfile::tempdir().unwrap();
    let exe = build_instrumented(d.path(), C_SOURCE, "inst", &["-pie"]);
    let funcs = crate::sites::read(&std::fs::read(&exe).unwrap()).unwrap();
    assert!(funcs.iter().any(|f| f.name == "beta"), "{funcs:?}");
    run(Command::new("strip").arg("--strip-all").arg(&exe));
    assert!(nm(&exe).is_empty());
    let id = build_id(&exe);
    let bias = 0x5555_1234_0000;
    let m = SymbolCache::new(only(&[])).module(&exe, Some(&id), bias);
    assert!(m.diagnostics().is_empty(), "{:?}", m.diagnostics());
    for f in &funcs {
        // Entries carry site + 5 (and every close its entry's address).
        for site in f
            .sites
            .iter()
            .filter(|s| s.kind == ftail_abi::SiteKind::Entry)
        {
            let s = m.lookup(bias + site.addr + 5).unwrap();
            assert_eq!((&*s.name, s.source), (f.name.as_str(), Source::Sites));
        }
    }
    // A rebuilt file's tables are not used either.
    let m = SymbolCache::new(only(&[])).module(&exe, Some("00112233"), bias);
    let entry = funcs[0].sites[0].addr;
    assert_eq!(m.lookup(bias + entry + 5), None);
}

//! The demanglers against `c++filt` on real names
//! (`tests/fixtures/demangle/corpus.tsv`, made by `harvest.sh` there).

use super::demangle::{demangle_with, Backend};

struct Entry {
    source: String,
    must_pass: bool,
    mangled: String,
    full: String,
    short: String,
}

fn corpus() -> Vec<Entry> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/demangle/corpus.tsv"
    );
    let text = std::fs::read_to_string(path).expect("corpus.tsv");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 5, "{l}");
            Entry {
                source: f[0].into(),
                must_pass: f[1] == "!",
                mangled: f[2].into(),
                full: f[3].into(),
                short: f[4].into(),
            }
        })
        .collect()
}

/// Both forms as shown: demangled, or the name as it is.
fn shown(e: &Entry, b: Backend) -> (String, String) {
    match demangle_with(&e.mangled, b) {
        Some(d) => (d.signature, d.name),
        None => (e.mangled.clone(), e.mangled.clone()),
    }
}

/// What two libiberty versions may print differently for the same name:
/// spaces, redundant parentheses, and `std::string` for
/// `std::basic_string<char, std::char_traits<char>, std::allocator<char> >`.
fn loose(s: &str) -> String {
    let mut s = s.to_string();
    for (abbrev, full) in [
        (
            "std::string",
            "std::basic_string<char, std::char_traits<char>, std::allocator<char> >",
        ),
        (
            "std::istream",
            "std::basic_istream<char, std::char_traits<char> >",
        ),
        (
            "std::ostream",
            "std::basic_ostream<char, std::char_traits<char> >",
        ),
        (
            "std::iostream",
            "std::basic_iostream<char, std::char_traits<char> >",
        ),
    ] {
        s = s.replace(full, abbrev);
    }
    s.chars()
        .filter(|c| !matches!(c, ' ' | '(' | ')'))
        .collect()
}

/// Rust names without parameters drop the hash (legacy) and the crate
/// disambiguators (v0) `c++filt -p` keeps.
fn rust_short(full: &str) -> String {
    let mut out = String::new();
    let mut rest = full;
    while let Some(i) = rest.find('[') {
        let close = rest[i..].find(']').map(|j| i + j);
        match close {
            Some(j) if rest[i + 1..j].bytes().all(|c| c.is_ascii_hexdigit()) && j > i + 1 => {
                out.push_str(&rest[..i]);
                rest = &rest[j + 1..];
            }
            _ => {
                out.push_str(&rest[..=i]);
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    match out.rfind("::h") {
        Some(i) if out.len() - i == 19 => out[..i].to_string(),
        _ => out,
    }
}

struct Score {
    total: usize,
    signatures: usize,
    names: usize,
    wrong: Vec<String>,
}

fn score(entries: &[&Entry], b: Backend) -> Score {
    let mut s = Score {
        total: 0,
        signatures: 0,
        names: 0,
        wrong: Vec::new(),
    };
    for e in entries {
        let (sig, name) = shown(e, b);
        s.total += 1;
        s.signatures += usize::from(sig == e.full);
        s.names += usize::from(name == e.short);
        // Never wrong: the reference's text, or that of an older
        // libiberty, or the name shown with its parameters rather than cut.
        let sig_ok = sig == e.full || loose(&sig) == loose(&e.full);
        let name_ok = name == e.short
            || loose(&name) == loose(&e.short)
            || name == sig
            || (e.short == e.full
                && e.full.starts_with(&*name)
                && e.full[name.len()..].starts_with('('));
        if !(sig_ok && name_ok) {
            s.wrong.push(format!(
                "{}\n  c++filt:    {}\n  ours:       {sig}\n  c++filt -p: {}\n  ours:       {name}",
                e.mangled, e.full, e.short
            ));
        }
        if std::env::var_os("FTAIL_DEMANGLE_DUMP").is_some() {
            eprintln!(
                "{}\t{}\t{}\t{}",
                e.mangled,
                u8::from(sig == e.full),
                u8::from(name == e.short),
                name
            );
        }
    }
    s
}

fn percent(n: usize, d: usize) -> f64 {
    100.0 * n as f64 / d.max(1) as f64
}

#[test]
fn cxx_names_agree_with_cxxfilt() {
    let corpus = corpus();
    let cxx: Vec<&Entry> = corpus
        .iter()
        .filter(|e| !e.source.starts_with("rust"))
        .collect();
    assert!(cxx.len() >= 400, "corpus too small: {}", cxx.len());

    let ours = score(&cxx, Backend::CppDemangle);
    eprintln!(
        "cpp_demangle alone: {} names; signatures {:.1}%, names {:.1}%, {} wrong",
        ours.total,
        percent(ours.signatures, ours.total),
        percent(ours.names, ours.total),
        ours.wrong.len()
    );
    // cpp_demangle alone is the fallback: it must stay usable.
    assert!(percent(ours.signatures, ours.total) >= 80.0);
    assert!(percent(ours.names, ours.total) >= 70.0);

    if !super::cxxabi::available() {
        eprintln!("no libstdc++ here: only cpp_demangle measured");
        return;
    }
    let s = score(&cxx, Backend::System);
    eprintln!(
        "libiberty checked by cpp_demangle: {} names; signatures {:.1}%, names {:.1}%, {} wrong",
        s.total,
        percent(s.signatures, s.total),
        percent(s.names, s.total),
        s.wrong.len()
    );
    assert!(s.wrong.is_empty(), "wrong:\n{}", s.wrong.join("\n"));
    assert!(percent(s.signatures, s.total) >= 97.0);
    assert!(percent(s.names, s.total) >= 93.0);
}

#[test]
fn must_pass_names_equal_cxxfilt() {
    let corpus = corpus();
    let must: Vec<&Entry> = corpus.iter().filter(|e| e.must_pass).collect();
    assert!(must.len() >= 40, "{} must-pass names", must.len());
    let backends: &[Backend] = if super::cxxabi::available() {
        &[Backend::System]
    } else {
        &[]
    };
    for &b in backends {
        for e in &must {
            let (sig, name) = shown(e, b);
            let short = if e.source.starts_with("rust") {
                rust_short(&e.full)
            } else {
                e.short.clone()
            };
            assert_eq!(
                (sig.as_str(), name.as_str()),
                (e.full.as_str(), short.as_str()),
                "{}",
                e.mangled
            );
        }
    }
}

#[test]
fn rust_names_agree_with_cxxfilt() {
    let corpus = corpus();
    let rust: Vec<&Entry> = corpus
        .iter()
        .filter(|e| e.source.starts_with("rust"))
        .collect();
    assert!(rust.len() >= 40);
    let mut exact = 0;
    for e in &rust {
        let (sig, name) = shown(e, Backend::System);
        exact += usize::from(sig == e.full);
        // binutils 2.40 prints a `[0]` disambiguator after types newer
        // rustc spells as crate roots (`f16`): equal but for those.
        assert_eq!(rust_short(&sig), rust_short(&e.full), "{}", e.mangled);
        assert_eq!(name, rust_short(&sig), "{}", e.mangled);
    }
    eprintln!(
        "rust: {} names, signatures {:.1}%",
        rust.len(),
        percent(exact, rust.len())
    );
    assert!(percent(exact, rust.len()) >= 90.0);
}

//! Demangling: which names are mangled, and two forms of each.
//!
//! Only names with a mangling prefix go to a demangler: `_R` (Rust v0),
//! `_ZN…17h<16 hex digits>E` (legacy Rust, whose `_ZN` would otherwise
//! read as C++) and `_Z` followed by a letter or a digit (Itanium C++;
//! `_Z`-names are reserved to the implementation in C). A C name never does: `cpp_demangle` reads `f` as the
//! type `float`.
//!
//! C++ names are demangled by two demanglers. The reference is
//! libiberty, the demangler of `c++filt`, reached through the system's
//! libstdc++ (`cxxabi`); it gives the signature. The name without
//! parameters (what `c++filt -p` prints) is `cpp_demangle`'s, taken only
//! when it occurs in the reference's signature right before the parameter
//! list: `cpp_demangle` gets some templates wrong (packs, constructor
//! templates, lambdas in templates), and a name it gets wrong is then
//! shown with its parameters rather than wrong. Where the reference
//! rejects a name, it stays mangled, like `c++filt` leaves it. Without
//! libstdc++ on the system, `cpp_demangle` alone decides.
//!
//! **Rationale:** measured against binutils 2.40 `c++filt` on the 96,026
//! C++ names exported by libstdc++, LLVM 19, clang 19, Boost, ICU, fmt
//! and spdlog, `cpp_demangle` alone agrees on 93.1% of signatures and
//! 94.0% of names without parameters, and gets 6,087 wrong or leaves
//! them mangled; the combination agrees on 99.5% and 99.6% and gets none
//! wrong (the rest is punctuation GCC 12's libiberty prints differently
//! from binutils 2.40's, or a name shown with its parameters). A sample
//! of 489 of them, the harder ones over-represented, is checked in with
//! `c++filt`'s output (`tests/fixtures/demangle`).

use std::borrow::Cow;

/// A name in both forms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Demangled {
    /// Without parameters, return type or hash: `ns::Klass::method`,
    /// `std::vector<int, std::allocator<int> >::push_back`,
    /// `mycrate::module::function`.
    pub name: String,
    /// The full signature, as `c++filt` prints it:
    /// `ns::Klass::method(int) const`; for Rust, with the hash.
    pub signature: String,
}

/// `name` demangled with or without parameters; any other name as it is.
pub fn demangle(name: &str, with_params: bool) -> Cow<'_, str> {
    match demangle_both(name) {
        Some(d) if with_params => Cow::Owned(d.signature),
        Some(d) => Cow::Owned(d.name),
        None => Cow::Borrowed(name),
    }
}

/// Both forms of a mangled `name`; `None` for a name that is not mangled
/// or that no demangler reads.
pub fn demangle_both(name: &str) -> Option<Demangled> {
    demangle_with(name, Backend::System)
}

/// Which C++ demanglers to use (tests compare them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Backend {
    /// libiberty through libstdc++ where it loads, checked by
    /// `cpp_demangle`; `cpp_demangle` alone where it does not.
    System,
    /// `cpp_demangle` alone.
    #[cfg_attr(not(test), allow(dead_code))]
    CppDemangle,
}

/// The kind of mangling of a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mangling {
    /// Itanium C++ ABI.
    Cxx,
    /// Rust v0 (`_R`).
    RustV0,
    /// Rust legacy (`_ZN…17h<hash>E`).
    RustLegacy,
}

/// How `name` is mangled, if it is.
pub(super) fn mangling(name: &str) -> Option<Mangling> {
    let b = name.as_bytes();
    if b.len() > 2 && b.starts_with(b"_R") && (b[2].is_ascii_uppercase() || b[2].is_ascii_digit()) {
        return Some(Mangling::RustV0);
    }
    if !(b.len() > 2 && b.starts_with(b"_Z") && b[2].is_ascii_alphanumeric()) {
        return None;
    }
    // Legacy Rust: a nested name whose last component is the hash, maybe
    // followed by a `.llvm.N`-style suffix (identifiers hold `..` too).
    let is_hash_end = |i: usize| {
        let h = &b[i + 3..i + 19];
        b[i + 19] == b'E'
            && h.iter().all(u8::is_ascii_hexdigit)
            && (i + 20 == b.len() || b[i + 20] == b'.')
    };
    if b.starts_with(b"_ZN")
        && (0..b.len().saturating_sub(19))
            .filter(|&i| b[i..].starts_with(b"17h"))
            .any(is_hash_end)
    {
        return Some(Mangling::RustLegacy);
    }
    Some(Mangling::Cxx)
}

pub(super) fn demangle_with(name: &str, backend: Backend) -> Option<Demangled> {
    match mangling(name)? {
        Mangling::RustV0 | Mangling::RustLegacy => {
            let d = rustc_demangle::try_demangle(name).ok()?;
            Some(Demangled {
                name: format!("{d:#}"),
                signature: format!("{d}"),
            })
        }
        Mangling::Cxx => cxx(name, backend),
    }
}

fn cxx(name: &str, backend: Backend) -> Option<Demangled> {
    let ours = cpp_demangle_both(name);
    if backend == Backend::System
        && super::cxxabi::available()
        && name.len() <= super::cxxabi::MAX_LEN
    {
        // The reference decides whether the name demangles at all.
        let signature = super::cxxabi::demangle(name)?;
        let name = ours
            .and_then(|(_, short)| find_name(&signature, &short))
            .or_else(|| strip_signature(&signature))
            .unwrap_or_else(|| signature.clone());
        return Some(Demangled { name, signature });
    }
    let (signature, name) = ours?;
    let (base, clones) = split_clones(&name);
    let name = format!("{}{clones}", strip_qualifiers(base));
    Some(Demangled { name, signature })
}

/// `cpp_demangle`'s signature and name without parameters or return
/// type, with literals written as libiberty writes them.
fn cpp_demangle_both(name: &str) -> Option<(String, String)> {
    use cpp_demangle::{DemangleOptions, Symbol};
    // The crate is fuzzed and documents no panics; a bug there must not
    // take a whole replay down.
    std::panic::catch_unwind(|| {
        let sym = Symbol::new(name).ok()?;
        let full = sym.demangle(&DemangleOptions::new()).ok()?;
        let short = sym
            .demangle(&DemangleOptions::new().no_params().no_return_type())
            .ok()?;
        Some((tidy(&full), tidy(&short)))
    })
    .ok()
    .flatten()
}

/// Rewrites what `cpp_demangle` prints differently from libiberty with
/// the same meaning: integer literals (`(unsigned int)1` is `1u`) and the
/// empty parameter pack (`AnalysisManager<Module, >`).
fn tidy(s: &str) -> String {
    const LITERALS: [(&str, &str); 5] = [
        ("(unsigned long long)", "ull"),
        ("(unsigned long)", "ul"),
        ("(unsigned int)", "u"),
        ("(long long)", "ll"),
        ("(long)", "l"),
    ];
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    'scan: while !rest.is_empty() {
        for (cast, suffix) in LITERALS {
            if let Some(after) = rest.strip_prefix(cast) {
                let digits = after
                    .char_indices()
                    .take_while(|&(i, c)| c.is_ascii_digit() || (i == 0 && c == '-'))
                    .count();
                if digits > 0 && after.as_bytes()[digits - 1].is_ascii_digit() {
                    out.push_str(&after[..digits]);
                    out.push_str(suffix);
                    rest = &after[digits..];
                    continue 'scan;
                }
            }
        }
        if let Some(after) = rest.strip_prefix(", >") {
            out.push('>');
            rest = after;
            continue;
        }
        let c = rest.chars().next().unwrap_or_default();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// `short` as it stands in `signature`, right before the parameter list,
/// after the return type if any, and followed by the same clone suffixes
/// (`[clone .cold]`); `None` when it is not there.
fn find_name(signature: &str, short: &str) -> Option<String> {
    if signature == short {
        return Some(short.to_string());
    }
    let (sig, sig_clones) = split_clones(signature);
    let (name, name_clones) = split_clones(short);
    // cpp_demangle keeps a method's qualifiers; c++filt -p does not.
    let name = strip_qualifiers(name);
    if sig_clones != name_clones || name.is_empty() {
        return None;
    }
    let params = param_list(sig)?;
    let at = params.checked_sub(name.len())?;
    let before_ok = at == 0 || sig[..at].ends_with(' ');
    (before_ok && sig.get(at..params) == Some(name)).then(|| format!("{name}{name_clones}"))
}

/// The name without parameters and return type cut out of a signature
/// alone, where that is unambiguous: no operator names, no expressions
/// that compare or shift, brackets balanced. `None` otherwise.
fn strip_signature(signature: &str) -> Option<String> {
    let (sig, clones) = split_clones(signature);
    let head = &sig[..param_list(sig)?];
    // A function named by an operator as its last component is no
    // template (its template arguments would follow): no return type is
    // printed, and the head is the name as it is.
    const OPERATORS: [&str; 4] = ["::operator()", "::operator[]", "::operator<", "::operator>"];
    let (head, operator) = match OPERATORS.iter().find(|o| head.ends_with(*o)) {
        Some(o) => (&head[..head.len() - o.len()], *o),
        None => (head, ""),
    };
    const AMBIGUOUS: [&str; 8] = [
        "operator", ")<(", ")>(", ")<<(", ")>>(", ")<=(", ")>=(", "->",
    ];
    if head.is_empty()
        || head.ends_with(')') && operator.is_empty()
        || AMBIGUOUS.iter().any(|a| head.contains(a))
    {
        return None;
    }
    // The return type, printed for templates only, ends at the last space
    // outside all brackets.
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in head.char_indices() {
        match c {
            '<' | '(' | '[' | '{' => depth += 1,
            '>' | ')' | ']' | '}' => depth -= 1,
            ' ' if depth == 0 => start = i + 1,
            _ => {}
        }
        if depth < 0 {
            return None;
        }
    }
    if depth != 0 || (start > 0 && (!head.ends_with('>') || !operator.is_empty())) {
        return None;
    }
    Some(format!("{}{operator}{clones}", &head[start..]))
}

/// `s` without the qualifiers of a method (`const`, `&&`, …) at its end.
fn strip_qualifiers(s: &str) -> &str {
    let mut end = s;
    loop {
        let before = end;
        for q in [" const", " volatile", " &&", " &", " noexcept", " restrict"] {
            end = end.strip_suffix(q).unwrap_or(end);
        }
        if end == before {
            return end;
        }
    }
}

/// Splits ` [clone .cold]`-style suffixes off a demangled name.
fn split_clones(s: &str) -> (&str, &str) {
    let mut base = s;
    while base.ends_with(']') {
        match base.rfind(" [clone ") {
            Some(i) => base = &base[..i],
            None => break,
        }
    }
    (base, &s[base.len()..])
}

/// Where the parameter list of a function signature starts: the `(`
/// matching the last `)`, after the method's qualifiers.
fn param_list(sig: &str) -> Option<usize> {
    let end = strip_qualifiers(sig);
    let b = end.as_bytes();
    if b.last() != Some(&b')') {
        return None;
    }
    let mut depth = 0usize;
    for i in (0..b.len()).rev() {
        match b[i] {
            b')' => depth += 1,
            b'(' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_mangled_names_are_demangled() {
        for c in [
            "f", "main", "float", "_Z_x", "_start", "_R", "Z3foov", "__Z3foov",
        ] {
            assert_eq!(mangling(c), None, "{c}");
            assert_eq!(demangle(c, true), c);
            assert_eq!(demangle(c, false), c);
        }
        assert_eq!(mangling("_Z3foov"), Some(Mangling::Cxx));
        assert_eq!(mangling("_ZN3foo3barE"), Some(Mangling::Cxx));
        assert_eq!(
            mangling("_ZN4core3fmt5write17h0123456789abcdefE"),
            Some(Mangling::RustLegacy)
        );
        assert_eq!(
            mangling("_ZN4core3fmt5write17h0123456789abcdefE.llvm.123"),
            Some(Mangling::RustLegacy)
        );
        assert_eq!(mangling("_RNvCs1234_7mycrate3foo"), Some(Mangling::RustV0));
    }

    #[test]
    fn literals_and_empty_packs_read_like_libiberty() {
        assert_eq!(tidy("V<(unsigned int)1, (long)-2>"), "V<1u, -2l>");
        assert_eq!(tidy("A<M, >&"), "A<M>&");
        assert_eq!(tidy("(unsigned int)x"), "(unsigned int)x");
    }

    #[test]
    fn the_name_is_taken_only_where_the_signature_has_it() {
        let sig = "void ns::f<int>(int, char (*)(long)) const [clone .cold]";
        assert_eq!(
            find_name(sig, "ns::f<int> [clone .cold]").as_deref(),
            Some("ns::f<int> [clone .cold]")
        );
        assert_eq!(find_name(sig, "ns::f<long> [clone .cold]"), None);
        assert_eq!(find_name(sig, "f<int> [clone .cold]"), None);
        assert_eq!(find_name(sig, "ns::f<int>"), None);
        assert_eq!(
            find_name(
                "m::{lambda(int)#1}::operator()(int) const",
                "m::{lambda(int)#1}::operator() const"
            )
            .as_deref(),
            Some("m::{lambda(int)#1}::operator()")
        );
        assert_eq!(
            find_name("vtable for A", "vtable for A").as_deref(),
            Some("vtable for A")
        );
    }

    #[test]
    fn a_signature_alone_is_cut_only_where_unambiguous() {
        let cut = |s| strip_signature(s);
        assert_eq!(cut("ns::K::m(int) const").as_deref(), Some("ns::K::m"));
        assert_eq!(
            cut("std::vector<int, std::allocator<int> > ns::f<int>(std::function<bool (int)>)")
                .as_deref(),
            Some("ns::f<int>")
        );
        assert_eq!(
            cut("(anonymous namespace)::g(char) [clone .cold]").as_deref(),
            Some("(anonymous namespace)::g [clone .cold]")
        );
        assert_eq!(cut("int (*ns::f<int>(int))(char)"), None);
        assert_eq!(cut("bool ns::operator< <int>(int, int)"), None);
        assert_eq!(cut("void f<((1)>(2))>()"), None);
        assert_eq!(cut("vtable for A"), None);
        assert_eq!(
            cut("main::{lambda(int)#1}::operator()(int) const").as_deref(),
            Some("main::{lambda(int)#1}::operator()")
        );
        assert_eq!(
            cut("ns::K::operator<(ns::K const&) const").as_deref(),
            Some("ns::K::operator<")
        );
        assert_eq!(cut("bool ns::operator< <int>(int, int)"), None);
    }
}

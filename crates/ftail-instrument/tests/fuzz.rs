//! Fuzz smoke run (proptest): the rewriter never panics on arbitrary or
//! mutated assembly, what it emits strips back to its input, and its output
//! assembles whenever its input did.

mod util;

use std::path::Path;
use std::process::{Command, Stdio};

use proptest::prelude::*;

/// Statements that exercise the rewriter's decisions, to splice into real
/// compiler output.
const POOL: &[&str] = &[
    "\tret",
    "\trep ret",
    "\tjmp\text@PLT",
    "\tjne\text@PLT",
    "\tjg\tfoo",
    "\tjmp\t*%rax",
    "\tjmpq\t*8(%rax)                  # TAILCALL",
    "\tnotrack jmp\t*%rax",
    "\tjmp\t.L3",
    "\tjmp\t.Lnowhere",
    "\tjrcxz\t.Lnowhere",
    "\tcall\t.L5",
    "#APP",
    "#NO_APP",
    "\ttest %eax,%eax; jz 1f; ret; 1:",
    "\trep; ret",
    "\t.section\t.rodata",
    "\t.section\t.text.hot,\"ax\",@progbits",
    "\t.section\t.text.x,\"axG\",@progbits,x,comdat",
    "\t.text",
    "\t.previous",
    "\t.pushsection .data",
    "\t.popsection",
    "\t.type\tfoo, @function",
    "foo:",
    "\t.size\tfoo, .-foo",
    "\t.type\tfoo.cold, @function",
    "foo.cold:",
    "\t.size\tfoo.cold, .-foo.cold",
    "\t.cfi_startproc",
    "\t.cfi_endproc",
    "\tendbr64",
    "\tint3",
    "\t.p2align 4",
    ".L99:",
    "\t.quad\t.L3",
    "\t.long\t.L3-.L2",
    "\tjmp\t__x86_return_thunk",
    "\tjmp\t__x86_indirect_thunk_rax",
    "\tjne\t__x86_return_thunk",
    "\t.string \"#;\\\"\"",
    "\t.intel_syntax noprefix",
    "\t.att_syntax",
    "\tmovl\t$1, %eax",
];

fn fixture(name: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    std::fs::read_to_string(dir.join(name)).unwrap()
}

fn assembles(text: &str) -> bool {
    let Ok(mut child) = Command::new("as")
        .args(["--64", "-o", "/dev/null", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    use std::io::Write;
    let _ = child.stdin.take().unwrap().write_all(text.as_bytes());
    child.wait().is_ok_and(|s| s.success())
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize),
    Duplicate(usize),
    Swap(usize, usize),
    Insert(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => any::<usize>().prop_map(Mutation::Delete),
        1 => any::<usize>().prop_map(Mutation::Duplicate),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        4 => (any::<usize>(), 0..POOL.len()).prop_map(|(a, p)| Mutation::Insert(a, p)),
    ]
}

/// Applies `muts`; deletions, duplicates and swaps leave CFI directives
/// alone, or almost no mutant would assemble.
fn mutate(text: &str, muts: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for m in muts {
        let n = lines.len().max(1);
        let cfi = |i: usize| lines.get(i % n).is_some_and(|l| l.contains(".cfi_"));
        let touches_cfi = match *m {
            Mutation::Delete(i) | Mutation::Duplicate(i) => cfi(i),
            Mutation::Swap(a, b) => cfi(a) || cfi(b),
            Mutation::Insert(..) => false,
        };
        if touches_cfi {
            continue;
        }
        match *m {
            Mutation::Delete(i) if !lines.is_empty() => {
                lines.remove(i % n);
            }
            Mutation::Duplicate(i) if !lines.is_empty() => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Mutation::Swap(a, b) if !lines.is_empty() => lines.swap(a % n, b % n),
            Mutation::Insert(i, p) => lines.insert(i % (lines.len() + 1), POOL[p].to_string()),
            _ => {}
        }
    }
    lines.join("\n") + "\n"
}

const FIXTURES: &[&str] = &[
    "gcc-O2.s",
    "clang-19-O2.s",
    "gcc-no-partition.s",
    "clang-16-O0.s",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_arbitrary_text(text in "(\\PC|\n|\t|#|;|:|\\.|%|\\*){0,400}") {
        let _ = ftail_instrument::rewrite(&text);
    }

    #[test]
    fn never_panics_on_statement_soup(picks in proptest::collection::vec(0..POOL.len(), 0..60)) {
        let mut text: String = picks.iter().map(|&p| format!("{}\n", POOL[p])).collect();
        text.push_str("\t.ident\t\"GCC: (fuzz) 12\"\n");
        if let Ok(out) = ftail_instrument::rewrite(&text) {
            util::check_preserved(&text, &out.text);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// The property of the issue: output assembles whenever input did.
    #[test]
    fn mutated_output_assembles_when_input_does(
        f in 0..FIXTURES.len(),
        muts in proptest::collection::vec(mutation(), 1..5),
    ) {
        let input = mutate(&fixture(FIXTURES[f]), &muts);
        let Ok(out) = ftail_instrument::rewrite(&input) else { return Ok(()) };
        util::check_preserved(&input, &out.text);
        if assembles(&input) {
            prop_assert!(assembles(&out.text), "input assembles, output does not; mutations {muts:?}");
        }
    }
}

/// Every golden fixture (except the Intel one) assembles after rewriting:
/// the base the mutation property starts from.
#[test]
fn every_fixture_assembles_after_rewriting() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".s") || name.contains("intel") {
            continue;
        }
        let out = ftail_instrument::rewrite(&fixture(&name)).unwrap();
        assert!(
            assembles(&out.text),
            "{name}: rewritten output does not assemble"
        );
        n += 1;
    }
    assert!(n >= 30, "only {n} fixtures found");
}

//! Golden tests: the rewriter on checked-in gcc 12 / clang 19 / clang 16
//! output of `tests/shapes/shapes.c` and rustc's of the Rust shapes
//! (regenerate with `tests/fixtures/generate.sh`, refresh expectations
//! with `UPDATE_EXPECT=1`).
//!
//! Each expectation lists, per function, every site and the instruction it
//! guards, plus the functions left alone and why. Independently of the
//! snapshots, every fixture must satisfy [`check_preserved`]: removing what
//! the rewriter inserted gives back the input, statement for statement.

mod util;

use std::path::Path;

use expect_test::expect_file;

fn check(name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let input = std::fs::read_to_string(dir.join(format!("{name}.s"))).unwrap();
    let out = ftail_instrument::rewrite(&input).unwrap();
    util::check_preserved(&input, &out.text);
    let rendered = util::render_sites(&out);
    expect_file![format!("fixtures/{name}.sites")].assert_eq(&rendered);
}

macro_rules! golden {
    ($($test:ident => $name:literal,)*) => {
        $(#[test] fn $test() { check($name); })*
    };
}

golden! {
    gcc_o0 => "gcc-O0",
    gcc_o2 => "gcc-O2",
    gcc_o3 => "gcc-O3",
    gcc_os => "gcc-Os",
    gcc_no_pie => "gcc-no-pie",
    gcc_cf_protection => "gcc-cf-protection",
    gcc_harden_sls => "gcc-harden-sls",
    gcc_function_sections => "gcc-function-sections",
    gcc_debug => "gcc-debug",
    gcc_no_partition => "gcc-no-partition",
    gcc_thunk_extern => "gcc-thunk-extern",
    clang19_o0 => "clang-19-O0",
    clang19_o2 => "clang-19-O2",
    clang19_o3 => "clang-19-O3",
    clang19_os => "clang-19-Os",
    clang19_no_pie => "clang-19-no-pie",
    clang19_cf_protection => "clang-19-cf-protection",
    clang19_harden_sls => "clang-19-harden-sls",
    clang19_function_sections => "clang-19-function-sections",
    clang19_debug => "clang-19-debug",
    clang19_thunk_extern => "clang-19-thunk-extern",
    clang16_o0 => "clang-16-O0",
    clang16_o2 => "clang-16-O2",
    clang16_o3 => "clang-16-O3",
    clang16_os => "clang-16-Os",
    clang16_no_pie => "clang-16-no-pie",
    clang16_cf_protection => "clang-16-cf-protection",
    clang16_harden_sls => "clang-16-harden-sls",
    clang16_function_sections => "clang-16-function-sections",
    clang16_debug => "clang-16-debug",
    clang16_thunk_extern => "clang-16-thunk-extern",
    rustc_o3 => "rustc-O3",
}

#[test]
fn intel_syntax_is_refused_with_its_line() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let input = std::fs::read_to_string(dir.join("gcc-intel.s")).unwrap();
    let err = ftail_instrument::rewrite(&input).unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 1: Intel syntax (-masm=intel) is not supported; compile with the default AT&T syntax"
    );
}

/// rustc writes no `# TAILCALL`: in a function with a jump table, the
/// table's dispatch stays inside and the other indirect jumps (a register
/// loaded in the block, an argument live on entry) are tail calls.
#[test]
fn rustc_table_dispatch_beside_indirect_tails() {
    let input = "\t.section\t.text.jt,\"ax\",@progbits
\t.type\tjt,@function
jt:
\t.cfi_startproc
\tcmpl\t$7, %edi
\tja\t.LBB0_3
\tmovl\t%edi, %eax
\tleaq\t.LJTI0_0(%rip), %rdi
\tmovslq\t(%rdi,%rax,4), %rax
\taddq\t%rdi, %rax
\tjmpq\t*%rax
.LBB0_2:
\tmovl\t$17, %eax
\tretq
.LBB0_4:
\tmovq\t40(%rdx), %rax
\tmovl\t$3, %esi
\tjmpq\t*%rax
.LBB0_5:
\tjmpq\t*_ZN3foo3bar17h0123456789abcdefE@GOTPCREL(%rip)
.LBB0_3:
\tincl\t%edi
\tjmpq\t*%rcx
.Lfunc_end0:
\t.size\tjt, .Lfunc_end0-jt
\t.cfi_endproc
\t.section\t.rodata.jt,\"a\",@progbits
.LJTI0_0:
\t.long\t.LBB0_2-.LJTI0_0
\t.long\t.LBB0_4-.LJTI0_0
\t.long\t.LBB0_5-.LJTI0_0
\t.ident\t\"rustc version 1.95.0 (59807616e 2026-04-14)\"
";
    let out = ftail_instrument::rewrite(input).unwrap();
    util::check_preserved(input, &out.text);
    expect_test::expect![[r#"
        Instrumented(Rustc)
        Stats { functions: 1, instrumented: 1, skipped: 0, entries: 1, exits: 1, tails_direct: 0, tails_conditional: 0, tails_indirect: 3, tails_retpoline: 0, local_indirect: 1, calls: 0 }
        jt: site before `cmpl $7, %edi`
        jt: local `jmpq *%rax`
        jt: exit site `retq`
        jt: site before `jmpq *%rax`
        jt: site before `jmpq *_ZN3foo3bar17h0123456789abcdefE@GOTPCREL(%rip)`
        jt: site before `jmpq *%rcx`
    "#]].assert_eq(&util::render_sites(&out));
}

/// Where nothing in its block wrote the register and an `addq` of the
/// function does, a jump could be a table's dispatch: the function is
/// left alone rather than guessed at.
#[test]
fn rustc_unprovable_indirect_jump_leaves_the_function_alone() {
    let input = "\t.text
\t.type\tf,@function
f:
\tleaq\t.LJTI0_0(%rip), %rcx
\tmovslq\t(%rcx,%rdi,4), %rax
\taddq\t%rcx, %rax
\ttestl\t%esi, %esi
\tje\t.LBB0_9
.LBB0_8:
\tjmpq\t*%rax
.LBB0_9:
\tretq
.Lfunc_end0:
\t.size\tf, .Lfunc_end0-f
\t.section\t.rodata,\"a\",@progbits
.LJTI0_0:
\t.long\t.LBB0_9-.LJTI0_0
\t.ident\t\"rustc version 1.95.0 (59807616e 2026-04-14)\"
";
    let out = ftail_instrument::rewrite(input).unwrap();
    assert_eq!(out.stats.skipped, 1, "{:?}", out.notes);
    assert!(
        out.notes[0].contains("a table's dispatch or a tail call?"),
        "{:?}",
        out.notes
    );
}

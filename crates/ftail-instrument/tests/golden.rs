//! Golden tests: the rewriter on checked-in gcc 12 / clang 19 / clang 16
//! output of `tests/shapes/shapes.c` (regenerate with
//! `tests/fixtures/generate.sh`, refresh expectations with `UPDATE_EXPECT=1`).
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

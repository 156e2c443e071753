//! ftail's compiler side: assembly text in, instrumented assembly text out.
//!
//! [`rewrite`] takes the AT&T-syntax assembly that gcc or clang produced for
//! one translation unit and returns it with a patchable site placed at every
//! function entry, before every `ret` (exit) and before every tail call, plus
//! the site tables that `ftail-abi` describes. It is a pure function — no
//! I/O — so that it can be tested and fuzzed on text alone.
//!
//! The design choice that shapes it: **never guess**. Text that is not
//! compiler output (no `.ident` of gcc, clang or rustc) passes through unchanged; a
//! function with anything the rewriter does not fully understand (a jump to
//! a label outside it, inline assembly that returns, an inline thunk) is left
//! exactly as it was and reported in [`Rewritten::notes`]. A function is
//! either completely instrumented — every way out of it has a site — or not
//! at all.
#![deny(missing_docs)]

mod classify;
mod lex;
mod parse;
mod rewrite;

/// The compiler that produced the assembly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compiler {
    /// GNU gcc/g++ (`.ident "GCC: …"`).
    Gcc,
    /// LLVM clang (`.ident "… clang version …"`).
    Clang,
    /// rustc, through LLVM (`.ident "rustc version …"`), whose assembly
    /// carries no `# TAILCALL` comments.
    Rustc,
}

/// What the rewriter did with a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Compiler output; sites were placed where possible.
    Instrumented(Compiler),
    /// Not recognised as gcc or clang output (hand-written assembly, `.S`
    /// files): passed through unchanged.
    NotCompilerOutput,
    /// Already carries ftail sites: passed through unchanged.
    AlreadyInstrumented,
}

/// Counts of what was placed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Functions found.
    pub functions: usize,
    /// Functions that received sites.
    pub instrumented: usize,
    /// Functions left alone because something in them was not understood.
    pub skipped: usize,
    /// Entry sites.
    pub entries: usize,
    /// Exit sites (`ret` and return-thunk jumps).
    pub exits: usize,
    /// Unconditional direct tail calls.
    pub tails_direct: usize,
    /// Conditional direct tail calls (inverted around a site).
    pub tails_conditional: usize,
    /// Indirect tail calls.
    pub tails_indirect: usize,
    /// Tail calls through retpoline thunks.
    pub tails_retpoline: usize,
    /// Indirect jumps proven to stay inside their function.
    pub local_indirect: usize,
    /// Calls whose target may lie outside the instrumented code.
    pub calls: usize,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.functions += o.functions;
        self.instrumented += o.instrumented;
        self.skipped += o.skipped;
        self.entries += o.entries;
        self.exits += o.exits;
        self.tails_direct += o.tails_direct;
        self.tails_conditional += o.tails_conditional;
        self.tails_indirect += o.tails_indirect;
        self.tails_retpoline += o.tails_retpoline;
        self.local_indirect += o.local_indirect;
        self.calls += o.calls;
    }
}

/// The result of [`rewrite`].
#[derive(Clone, Debug)]
pub struct Rewritten {
    /// The assembly to hand to the assembler.
    pub text: String,
    /// What was done.
    pub outcome: Outcome,
    /// Counts of placed sites.
    pub stats: Stats,
    /// One line per function left uninstrumented, saying why.
    pub notes: Vec<String>,
}

/// Input the rewriter refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// Compiler output in Intel syntax (`-masm=intel`).
    IntelSyntax {
        /// 1-based line of the `.intel_syntax` directive.
        line: usize,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::IntelSyntax { line } => write!(
                f,
                "line {line}: Intel syntax (-masm=intel) is not supported; \
                 compile with the default AT&T syntax"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Instruments one file of compiler-generated assembly.
///
/// # Errors
///
/// [`Error::IntelSyntax`] for gcc/clang output in Intel syntax.
pub fn rewrite(input: &str) -> Result<Rewritten, Error> {
    rewrite::rewrite(input)
}

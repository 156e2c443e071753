//! Symbolization: names and source lines for the addresses of a trace.
//!
//! (The module is being built up; see the later commits.)

mod cxxabi;
pub mod demangle;

pub use demangle::{demangle, demangle_both, Demangled};

#[cfg(test)]
mod corpus_tests;

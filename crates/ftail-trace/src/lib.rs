//! Reading what ftail produces: the site tables of instrumented binaries
//! and traces, streamed (`reader`), named (`symbols`, `names`), filtered
//! (`view`), and the text analyses on top (`replay`, `report`, `graph`,
//! `info`, `dump`, `losses`). Export formats live in `ftail-export`, fed
//! by this crate's streaming API.
//!
//! This crate only reads. It never writes a binary or a trace; its readers
//! stop at the first damage with a message that names the place.
#![deny(missing_docs)]

pub mod autoargs;
pub mod dump;
pub mod files;
pub mod graph;
pub mod info;
pub mod losses;
pub mod names;
pub mod printable;
pub mod reader;
pub mod replay;
pub mod report;
pub mod sites;
pub mod symbols;
pub mod tasks;
pub mod trace;
pub mod values;
pub mod view;

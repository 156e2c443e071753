//! Reading what ftail produces, one folder per room of the data path:
//! the site tables of instrumented binaries (`sites`), recorded values
//! (`values`), traces streamed (`reader`), named (`symbols`, with
//! `names`), read whole for tests and `info` (`trace`), then filtered
//! (`views::view`) and shown (the other `views`: `replay`, `report`,
//! `graph`, `tasks`, `info`, `dump`, `losses`), all on `untrusted`'s safe
//! file reading and printing. Export formats live in `ftail-export`, fed
//! by this crate's streaming API.
//!
//! This crate only reads. It never writes a binary or a trace; its readers
//! stop at the first damage with a message that names the place.
#![deny(missing_docs)]

// The rooms of the data path, top to bottom: each uses only the rooms
// below it.
pub mod reader;
pub mod sites;
pub mod symbols;
pub mod trace;
pub mod untrusted;
pub mod values;
pub mod views;

// Each module also where it was before it had a room.
pub use symbols::names;
pub use untrusted::{files, printable};
pub use values::autoargs;
pub use views::{dump, graph, info, losses, replay, report, tasks, view};

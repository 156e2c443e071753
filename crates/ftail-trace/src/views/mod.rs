//! What a user sees of a trace: the filters (`view`), and the text
//! analyses on top of them (`replay`, `report`, `graph`, `tasks`, `dump`,
//! `info`, `losses`).

pub mod dump;
pub mod graph;
pub mod info;
pub mod losses;
pub mod replay;
pub mod report;
pub mod tasks;
pub mod view;

//! Modules found: the loaded objects that carry site tables, read from
//! their program headers and notes (`dl_iterate_phdr`).

pub mod exports;
pub mod modules;
pub mod symtab;

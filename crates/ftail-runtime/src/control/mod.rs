//! Control, beside the data path: which functions are traced and changing
//! that while the program runs (`selection`), the control agent, the
//! dynamic loader's hook that brings in libraries loaded later, and the
//! metadata a process image writes about itself; `attach`, the entry point
//! `ftail record -p` calls in a running program.

pub mod agent;
pub mod attach;
pub mod dlhook;
pub mod metadata;
pub mod selection;

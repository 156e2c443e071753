//! Events recorded: each thread's state, its event file or ring, the
//! trace stack the events keep balanced, the trampolines' slow paths,
//! stack switches, a thread's start and end, snapshots, the trace's size
//! budget, closing frames before an `exec`, and a `vfork` child kept out
//! of its parent's state.
//!
//! Imports go one way: `args` → `hooks` → `session` →
//! `stacks`/`parked` → `frames`
//! → `triggers` → `values` → `write` → `buffer` → `retired` → `budget`,
//! `state`;
//! `thread` starts and ends a thread over them.

pub mod args;
pub mod before;
pub mod budget;
pub mod buffer;
pub mod children;
pub mod frames;
pub mod hooks;
pub mod parked;
pub mod retired;
pub mod session;
pub mod snapshot;
pub mod stacks;
pub mod state;
pub mod thread;
pub mod triggers;
pub mod values;
pub mod vfork;
pub mod write;

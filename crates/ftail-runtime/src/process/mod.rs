//! The process around the recorder: the runtime's own memory and lock,
//! its settings, and the files of this process image in the trace
//! directory. Used by every other room; uses none of them.

pub mod alloc;
pub mod config;
pub mod files;
pub mod key;
pub mod status;
pub mod sync;
pub mod watcher;

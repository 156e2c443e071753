//! The streaming reader: a trace directory's listing and metadata
//! ([`dir`]), each thread's events streamed from its file a block at a
//! time ([`events`]), paired into calls ([`calls`]), and threads merged
//! in time order with a heap of one event per thread ([`merge`]). Memory
//! is bounded by the number of threads and the call depth, never by the
//! trace's size.

pub mod calls;
pub mod dir;
pub mod drained;
pub mod events;
pub mod merge;
pub mod sched;

//! Written into the code: the trampolines the sites call, the stubs and
//! convert thunks written next to each module, their unwind information
//! (libgcc, gdb), and the byte writes that switch a site, before other
//! threads exist or while they run.

pub mod gdbjit;
pub mod jumps;
pub mod poke;
pub mod stubs;
pub mod tramp;
pub mod unwind;

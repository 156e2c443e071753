//! What every reader stands on when it meets what a trace or a binary
//! holds: files opened only as bounded regular files (`files`), and
//! recorded text made safe to print (`printable`).

pub mod files;
pub mod printable;

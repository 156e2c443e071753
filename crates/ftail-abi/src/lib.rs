//! The formats every stage of ftail agrees on, and nothing else.
//!
//! The compiler side (`ftail-instrument`) writes *site tables* into each
//! object file it assembles; the runtime reads them from memory in the traced
//! process and `ftail sites` reads them from the ELF file. This crate is the
//! only definition of that layout: any change to it bumps [`SITES_VERSION`].
//!
//! # Site tables
//!
//! Every object file carries one ELF note (section [`NOTE_SECTION`], owner
//! [`NOTE_NAME`], type [`NOTE_TYPE_SITES`]) whose descriptor is a
//! [`SitesNote`]. The linker concatenates the notes of all objects into a
//! `PT_NOTE` segment, so a module's tables are found from its program headers
//! alone (`dl_iterate_phdr` in the runtime), stripped or not.
//!
//! The note points at an array of [`FuncRecord`]s (section
//! [`FUNCS_SECTION`]), one per instrumented function; each points at its
//! [`SiteRecord`]s (section [`SITES_SECTION`]) and its name (section
//! [`NAMES_SECTION`]). Every pointer is a 32-bit offset relative to the
//! address of the field that holds it (`.long target - .`), so the tables need
//! no run-time relocation and a PIE or shared library gets no `DT_TEXTREL`.
//!
//! # Sites
//!
//! A site is 5 bytes of code the runtime may overwrite with a `call` or
//! `jmp rel32`; what they hold untraced depends on the [`SiteKind`]:
//! * an entry site is a 5-byte nop ([`NOP5`]), the function's first
//!   instruction (after `endbr64`);
//! * an exit site is the `ret` itself followed by `int3` padding up to 5
//!   bytes ([`EXIT_SITE`] for a plain `ret`): untraced only the `ret`
//!   runs, the padding never does (it is also what `-mharden-sls`
//!   places after a `ret`);
//! * a direct tail site, a return-thunk exit and a retpoline tail are the
//!   `jmp rel32` itself (a conditional one is inverted around it), so
//!   untraced nothing but the jump runs;
//! * only an indirect tail site (`jmp *operand`) is a nop before its jump;
//! * a call site is a call whose target may lie outside the instrumented
//!   code (`call f@PLT`, `call *f@GOTPCREL(%rip)`): the call itself,
//!   retargeted to a thunk that records the callee around a real `call`
//!   when the callee turns out to be in a module without tables;
//! * an indirect call site (`call *operand`) is the call itself, padded
//!   with `cs` prefixes to 5 bytes when shorter.
//!
//! Every exit and tail site executes with the stack pointer at the
//! function's CFA − 8, i.e. with the return address on top of the stack.
#![deny(missing_docs)]
#![no_std]

extern crate alloc;

pub mod argspec;
pub mod trigger;

/// Version of the site-table layout; bumped on any change.
pub const SITES_VERSION: u32 = 4;

/// The oldest version readers still read: version 3 differs from 4 only
/// in having no [`SiteKind::CallIndirect`] sites.
pub const OLDEST_SITES_VERSION: u32 = 3;

/// Whether tables of `version` are read by this ftail.
pub fn reads_sites_version(version: u32) -> bool {
    (OLDEST_SITES_VERSION..=SITES_VERSION).contains(&version)
}

/// Section holding one [`SitesNote`] per object file.
pub const NOTE_SECTION: &str = ".note.ftail";
/// Owner name of ftail's ELF notes, without the terminating NUL.
pub const NOTE_NAME: &str = "ftail";
/// ELF note type of a [`SitesNote`].
pub const NOTE_TYPE_SITES: u32 = 0x4654_0001;
/// Section holding the [`FuncRecord`] arrays.
pub const FUNCS_SECTION: &str = "__ftail_funcs";
/// Section holding the [`SiteRecord`] arrays.
pub const SITES_SECTION: &str = "__ftail_sites";
/// Section holding NUL-terminated function names.
pub const NAMES_SECTION: &str = "__ftail_names";

/// The 5-byte nop every patchable site starts as: `nopl 0x0(%rax,%rax,1)`.
pub const NOP5: [u8; 5] = [0x0f, 0x1f, 0x44, 0x00, 0x00];
/// Length of a site in bytes.
pub const SITE_LEN: usize = NOP5.len();
/// An exit site for a plain `ret`: the `ret` and four bytes of `int3`
/// padding, never executed.
pub const EXIT_SITE: [u8; 5] = [0xc3, 0xcc, 0xcc, 0xcc, 0xcc];

/// Descriptor of the per-object note: where that object's functions are.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SitesNote {
    /// [`SITES_VERSION`] of the writer.
    pub version: u32,
    /// Offset from this field's address to the first [`FuncRecord`].
    pub funcs: i32,
    /// Number of [`FuncRecord`]s.
    pub nfuncs: u32,
}
const _: () = assert!(core::mem::size_of::<SitesNote>() == 12);

/// One instrumented function.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuncRecord {
    /// Offset from this field's address to the function's first byte.
    pub start: i32,
    /// Size of the function's main part in bytes (its `.size`).
    pub size: u32,
    /// Offset from this field's address to the NUL-terminated symbol name
    /// (as the compiler wrote it: mangled for C++).
    pub name: i32,
    /// Offset from this field's address to the first [`SiteRecord`].
    pub sites: i32,
    /// Number of [`SiteRecord`]s.
    pub nsites: u32,
    /// Offset from this field's address to the cold partition (`foo.cold`),
    /// or 0 when the function has none.
    pub cold_start: i32,
    /// Size of the cold partition in bytes, 0 when none.
    pub cold_size: u32,
    /// [`FuncFlags`] bits.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<FuncRecord>() == 32);

/// Bits of [`FuncRecord::flags`].
pub struct FuncFlags;
impl FuncFlags {
    /// The function starts with `endbr64` (its entry site follows it).
    pub const ENDBR: u32 = 1;
    /// The function has address-taken labels (computed goto).
    pub const COMPUTED_GOTO: u32 = 2;
    /// Compiled by clang (gcc otherwise).
    pub const CLANG: u32 = 4;
    /// Compiled by rustc.
    pub const RUSTC: u32 = 8;
}

/// One site (or one recorded non-tail indirect jump) of a function.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SiteRecord {
    /// Offset from this field's address to the site.
    pub addr: i32,
    /// A [`SiteKind`] as `u8`.
    pub kind: u8,
    /// For [`SiteKind::TailIndirect`] through a register and for
    /// [`SiteKind::TailRetpoline`]: the register's hardware number
    /// (`rax` = 0 … `r15` = 15). [`NO_REG`] otherwise.
    pub reg: u8,
    /// [`SiteFlags`] bits.
    pub flags: u8,
    /// Zero.
    pub reserved: u8,
}
const _: () = assert!(core::mem::size_of::<SiteRecord>() == 8);

/// [`SiteRecord::reg`] when no register applies.
pub const NO_REG: u8 = 0xff;

/// Bits of [`SiteRecord::flags`].
pub struct SiteFlags;
impl SiteFlags {
    /// The tail call was conditional (`jcc f`) in the compiler's output; the
    /// rewriter inverted the branch around the site, an unconditional jump.
    pub const CONDITIONAL: u8 = 1;
    /// The site sits in the function's cold partition.
    pub const COLD: u8 = 2;
}

/// What a site is, and what its 5 bytes hold untraced.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SiteKind {
    /// Function entry: a 5-byte nop, the first instruction (after
    /// `endbr64`).
    Entry = 1,
    /// A `ret` (`ret`, `rep ret`, `ret $n`) followed by `int3` padding to
    /// 5 bytes.
    Exit = 2,
    /// `jmp rel32` to `__x86_return_thunk`
    /// (`-mfunction-return=thunk-extern`), which returns.
    ExitThunk = 3,
    /// `jmp rel32` to the tail callee.
    TailDirect = 4,
    /// A 5-byte nop followed by an indirect `jmp *operand` tail call.
    TailIndirect = 5,
    /// `jmp rel32` to a retpoline thunk (`__x86_indirect_thunk_REG`,
    /// `__llvm_retpoline_REG`); the callee's address is in register
    /// [`SiteRecord::reg`].
    TailRetpoline = 6,
    /// Not a site: the address of an indirect jump the rewriter proved stays
    /// inside the function (switch table, computed goto). Recorded so that
    /// checkers can account for every indirect jump.
    LocalIndirect = 7,
    /// `call rel32` to a function that may lie outside the instrumented
    /// code (`call f@PLT`, a call to a symbol the unit does not define).
    Call = 8,
    /// `call *disp(%rip)` through a GOT slot (`call *f@GOTPCREL(%rip)`,
    /// `-fno-plt`), 6 bytes; the linker may have relaxed it to `addr32
    /// call rel32` (`67 e8`) for a symbol it bound in the same module.
    CallGot = 9,
    /// An indirect `call *operand` (a function pointer, a virtual call),
    /// padded with `cs` prefixes (`2e`) to 5 bytes when shorter, so that
    /// untraced the one original call runs; longer forms are as they were
    /// compiled. Since version 4.
    CallIndirect = 10,
}

impl SiteKind {
    /// Decodes the `kind` byte of a [`SiteRecord`].
    pub fn from_u8(v: u8) -> Option<SiteKind> {
        Some(match v {
            1 => SiteKind::Entry,
            2 => SiteKind::Exit,
            3 => SiteKind::ExitThunk,
            4 => SiteKind::TailDirect,
            5 => SiteKind::TailIndirect,
            6 => SiteKind::TailRetpoline,
            7 => SiteKind::LocalIndirect,
            8 => SiteKind::Call,
            9 => SiteKind::CallGot,
            10 => SiteKind::CallIndirect,
            _ => return None,
        })
    }

    /// The name used in listings and JSON.
    pub fn name(self) -> &'static str {
        match self {
            SiteKind::Entry => "entry",
            SiteKind::Exit => "exit",
            SiteKind::ExitThunk => "exit-thunk",
            SiteKind::TailDirect => "tail-direct",
            SiteKind::TailIndirect => "tail-indirect",
            SiteKind::TailRetpoline => "tail-retpoline",
            SiteKind::LocalIndirect => "local-indirect",
            SiteKind::Call => "call",
            SiteKind::CallGot => "call-got",
            SiteKind::CallIndirect => "call-indirect",
        }
    }

    /// Whether the record is a patchable site.
    pub fn is_site(self) -> bool {
        self != SiteKind::LocalIndirect
    }

    /// Whether the site is a tail call.
    pub fn is_tail(self) -> bool {
        matches!(
            self,
            SiteKind::TailDirect | SiteKind::TailIndirect | SiteKind::TailRetpoline
        )
    }

    /// Whether the site is a call out of the function (a library call).
    pub fn is_call(self) -> bool {
        matches!(
            self,
            SiteKind::Call | SiteKind::CallGot | SiteKind::CallIndirect
        )
    }

    /// Whether the site is a function exit.
    pub fn is_exit(self) -> bool {
        matches!(self, SiteKind::Exit | SiteKind::ExitThunk)
    }

    /// Whether the site is its own `jmp rel32` (patched by retargeting it).
    pub fn is_jump(self) -> bool {
        matches!(
            self,
            SiteKind::ExitThunk | SiteKind::TailDirect | SiteKind::TailRetpoline
        )
    }

    /// Whether the site is a 5-byte nop before what it marks.
    pub fn is_nop(self) -> bool {
        matches!(self, SiteKind::Entry | SiteKind::TailIndirect)
    }
}

/// Hardware register numbers as used in [`SiteRecord::reg`], by name.
pub const GPR_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

/// Hardware number of a 64-bit register name (without `%`), if it is one.
pub fn gpr_number(name: &str) -> Option<u8> {
    GPR_NAMES.iter().position(|&n| n == name).map(|i| i as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_round_trips() {
        for v in 0..=255u8 {
            if let Some(k) = SiteKind::from_u8(v) {
                assert_eq!(k as u8, v);
            }
        }
        assert_eq!(SiteKind::from_u8(0), None);
        assert_eq!(SiteKind::from_u8(11), None);
    }

    #[test]
    fn metadata_values_escape_and_come_back() {
        use super::trace::{escape_value, unescape_value};
        for v in [
            "plain",
            "a\nversion=999",
            "back\\slash",
            "\x1f\t\r",
            "é\\x41",
            "\\",
        ] {
            let e = escape_value(v);
            assert!(
                !e.contains('\n') && !e.chars().any(char::is_control),
                "{e:?}"
            );
            assert_eq!(unescape_value(&e), v);
        }
        assert_eq!(escape_value("a\nb"), "a\\nb");
    }

    #[test]
    fn register_numbers_follow_hardware_encoding() {
        assert_eq!(gpr_number("rax"), Some(0));
        assert_eq!(gpr_number("rdi"), Some(7));
        assert_eq!(gpr_number("r11"), Some(11));
        assert_eq!(gpr_number("eax"), None);
    }
}

/// Trace directories: the files `ftail record` and the runtime write.
///
/// Each traced process image has a name stem `KEY` (its pid, or `PID~N`
/// for the N-th image after an `exec`) and these files, all created
/// exclusively with mode 0600 in a directory only its user may enter:
/// * `KEY.info`: `key=value` lines, the run's metadata; values are
///   [`escape_value`]d (a newline in an argument cannot forge a key);
/// * `KEY.modules`: the modules with site tables over the process's life,
///   one line per event, in order: `load TSC BASE BUILD-ID SITES SKIPPED
///   PATH` when a module is mapped (`-` for no GNU build id; SITES planned,
///   SKIPPED left untraced; the path escaped) and `unload TSC BASE` when
///   it is unmapped, so that an address is resolved against the module
///   mapped at the time of its event (a library loaded later at the same
///   address is another module); `skip BASE REASON PATH` for a module
///   left untraced as a whole; `libcall TSC BASE ENTRY NAME MODULE` for
///   each library function the module at BASE calls, its events at ENTRY
///   (MODULE, the escaped path of the object that defines it or `-`, is
///   missing from older traces);
/// * `KEY.status`: a [`ProcessStatus`], counters the process updates while
///   it runs (threads not recorded and why, disk full, modules skipped);
/// * `KEY-TID.events` per thread (`KEY-TID~N.events` when a thread id
///   comes back): an [`EventFileHeader`] followed by [`Event`]s;
///
/// and one file for the whole trace, [`BUDGET_FILE`]: a [`TraceBudget`]
/// that `ftail record` creates and every process reads and writes under
/// a record lock, the bytes of event files (and snapshots) all of them
/// together may still take (`--max-size`).
///
/// Event and status files are file-backed shared mappings of the
/// traced process, so whatever it recorded survives `_exit`, a crash or
/// SIGKILL. An event file grows as its thread writes, a chunk at a time,
/// while the budget allows; a reader stops at the first event whose time
/// is zero (never written) or at the end of the file.
pub mod trace {
    use alloc::string::String;

    /// Version of the trace format; bumped on any change.
    pub const TRACE_VERSION: u32 = 5;
    /// Magic number at the start of every event file.
    pub const EVENTS_MAGIC: [u8; 8] = *b"FTAILEV1";
    /// File name of the metadata.
    pub const INFO_FILE: &str = "info";
    /// File name of the module list.
    pub const MODULES_FILE: &str = "modules";
    /// Suffix of event files.
    pub const EVENTS_SUFFIX: &str = ".events";
    /// Suffix of status files.
    pub const STATUS_SUFFIX: &str = ".status";
    /// Magic number at the start of every status file.
    pub const STATUS_MAGIC: [u8; 8] = *b"FTAILST1";

    /// Counters a traced process keeps in `KEY.status` while it runs (a
    /// shared mapping, updated atomically, so they survive a crash): what
    /// was not recorded, and why.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ProcessStatus {
        /// [`STATUS_MAGIC`].
        pub magic: [u8; 8],
        /// [`TRACE_VERSION`].
        pub version: u32,
        /// Size of this structure in bytes.
        pub size: u32,
        /// Threads that created their event file.
        pub threads_recorded: u64,
        /// Threads that could not: they recorded nothing.
        pub threads_failed: u64,
        /// The first such failure: `errno << 32 | tid` (0: none).
        pub first_failure: u64,
        /// Threads that stopped recording because the trace directory's
        /// filesystem was full.
        pub threads_disk_full: u64,
        /// Modules found after start-up (`dlopen`) and left untraced as a
        /// whole (damaged tables, no room for stubs near them).
        pub modules_skipped: u64,
        /// Sites of modules found after start-up that were left alone.
        pub sites_skipped: u64,
        /// The control agent: [`AGENT_NONE`], [`AGENT_LISTENING`],
        /// [`AGENT_BIND_FAILED`] or [`AGENT_LOST_SOCKET`], with an errno in
        /// bits 8 and up where there is one.
        pub agent: u64,
        /// Threads that stopped recording because the trace reached its
        /// maximum size ([`TraceBudget::max_bytes`]).
        pub threads_max_size: u64,
        /// Snapshots (`--snapshot-signal`, `ftail ctl PID snapshot`) not
        /// taken because the trace had no room left for them
        /// ([`TraceBudget::max_bytes`]).
        pub snapshots_refused: u64,
        /// How the process image ended: [`EXIT_RECORDED`] with its wait
        /// status (as `waitpid` gives it) in the low 32 bits; 0 while it
        /// runs, or when nothing saw it end (an image that `exec`ed,
        /// a child killed by a signal).
        pub exit: u64,
        /// CPU time in user mode, in microseconds, at exit (0: not
        /// recorded).
        pub cpu_user_us: u64,
        /// CPU time in the kernel, in microseconds, at exit.
        pub cpu_system_us: u64,
        /// Its largest resident set, in KiB, at exit (0: not recorded).
        pub max_rss_kib: u64,
        /// Reserved, zero.
        pub reserved: [u64; 1],
    }
    const _: () = assert!(core::mem::size_of::<ProcessStatus>() == 128);

    /// [`ProcessStatus::exit`]: the exit was recorded (a wait status of
    /// 0, a clean exit, is then told from none).
    pub const EXIT_RECORDED: u64 = 1 << 32;

    /// [`ProcessStatus::agent`]: no control agent was asked for.
    pub const AGENT_NONE: u64 = 0;
    /// [`ProcessStatus::agent`]: the agent listens.
    pub const AGENT_LISTENING: u64 = 1;
    /// [`ProcessStatus::agent`]: its socket name could not be bound
    /// (another process holds it); the errno is in bits 8 and up.
    pub const AGENT_BIND_FAILED: u64 = 2;
    /// [`ProcessStatus::agent`]: the program closed or replaced the
    /// agent's descriptor and it could not listen again.
    pub const AGENT_LOST_SOCKET: u64 = 3;

    /// File name of the trace's [`TraceBudget`].
    pub const BUDGET_FILE: &str = "budget";
    /// Magic number at the start of the budget file.
    pub const BUDGET_MAGIC: [u8; 8] = *b"FTAILBG1";

    /// How many bytes the event files of a whole trace may take, and how
    /// many they took (`--max-size`). Created by `ftail record` before the
    /// program starts; every traced process takes the room for each part
    /// of an event file it grows by reading and writing
    /// [`TraceBudget::used_bytes`] under an `fcntl` record lock (never
    /// through a mapping: a truncated budget file must not raise SIGBUS in
    /// the program), so the limit holds across processes and survives a
    /// crash.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct TraceBudget {
        /// [`BUDGET_MAGIC`].
        pub magic: [u8; 8],
        /// [`TRACE_VERSION`].
        pub version: u32,
        /// Size of this structure in bytes.
        pub size: u32,
        /// The most bytes all event files together may take.
        pub max_bytes: u64,
        /// Bytes the event files took so far (given back when a thread's
        /// file is trimmed at its end).
        pub used_bytes: u64,
        /// Free bytes on the trace directory's filesystem when recording
        /// started (0: unknown), for messages.
        pub free_bytes: u64,
        /// Reserved, zero.
        pub reserved: [u64; 3],
    }
    const _: () = assert!(core::mem::size_of::<TraceBudget>() == 64);

    /// Start of the name of a scheduler-event file: `sched.PID`, PID the
    /// process `ftail record` started or attached to. Written by `ftail
    /// record` itself (never by the traced program) from the kernel's
    /// context-switch records: a [`SchedHeader`], then [`SchedSlice`]s in
    /// the order their switches back in were read.
    pub const SCHED_PREFIX: &str = "sched.";
    /// Magic number at the start of a scheduler-event file.
    pub const SCHED_MAGIC: [u8; 8] = *b"FTSCHED1";

    /// Header of a scheduler-event file.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SchedHeader {
        /// [`SCHED_MAGIC`].
        pub magic: [u8; 8],
        /// [`TRACE_VERSION`].
        pub version: u32,
        /// Size of this header in bytes (slices start there).
        pub size: u32,
        /// 0 when the events were recorded; else the `errno` with which
        /// the kernel refused them (the file then holds no slice).
        pub refused_errno: i32,
        /// `kernel.perf_event_paranoid` when recording began (-9: unknown).
        pub paranoid: i32,
        /// Context-switch records the kernel dropped (its ring was full).
        pub lost: u64,
        /// Reserved, zero.
        pub reserved: [u64; 4],
    }
    const _: () = assert!(core::mem::size_of::<SchedHeader>() == 64);

    /// [`SchedSlice::flags`]: the thread was preempted (it could have run
    /// on), not blocked.
    pub const SCHED_PREEMPTED: u64 = 1;

    /// A time a thread spent off the CPU: switched out, then back in. Times
    /// are in the event files' time-stamp counter ticks.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SchedSlice {
        /// Process id.
        pub pid: u32,
        /// Thread id.
        pub tid: u32,
        /// When it was switched out.
        pub out_tsc: u64,
        /// When it was switched back in.
        pub in_tsc: u64,
        /// [`SCHED_PREEMPTED`].
        pub flags: u64,
    }
    const _: () = assert!(core::mem::size_of::<SchedSlice>() == 32);

    /// Escapes a metadata value for one line of `key=value` text:
    /// backslash, and every control character as `\n`, `\t` or `\xHH`.
    pub fn escape_value(value: &str) -> String {
        use core::fmt::Write as _;
        let mut out = String::with_capacity(value.len());
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c => out.push(c),
            }
        }
        out
    }

    /// Undoes [`escape_value`]; an escape it does not know is kept as it
    /// is.
    pub fn unescape_value(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            let rest = chars.as_str();
            match chars.next() {
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('x') => match rest.get(1..3).and_then(|h| u32::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(char::from_u32(v).unwrap_or('\u{fffd}'));
                        chars.next();
                        chars.next();
                    }
                    None => out.push_str("\\x"),
                },
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        }
        out
    }

    /// Header of an event file.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct EventFileHeader {
        /// [`EVENTS_MAGIC`].
        pub magic: [u8; 8],
        /// [`TRACE_VERSION`].
        pub version: u32,
        /// Size of this header in bytes (events start there).
        pub header_size: u32,
        /// Process id.
        pub pid: u32,
        /// Thread id.
        pub tid: u32,
        /// The most bytes of events the file may grow to (its thread's
        /// share of the address space, or `--buffer-events`); the file
        /// itself grows a chunk at a time as the thread writes.
        pub capacity: u64,
        /// Events dropped because the buffer or the trace stack was full.
        pub lost: u64,
        /// Thread name at the time the buffer was created (NUL-padded).
        pub name: [u8; 16],
        /// Why the thread stopped recording before its end, if it did:
        /// one of the `STOPPED_*` values in the low 8 bits, an errno in
        /// bits 8 and up where there is one; the frames still open then
        /// are closed as `Truncated` where they fit, and a reader closes
        /// any left at that point.
        pub stopped: u64,
        /// Bytes of events when the file is a ring (`ftail record
        /// --ring`): the events fill them, then start again at their
        /// beginning, so the file keeps the latest; 0 when the file
        /// grows and keeps every event.
        pub ring: u64,
        /// How many times the ring started again at its beginning (0: it
        /// holds every event since the thread began).
        pub laps: u64,
        /// For a ring: one more than the number of frames open when its
        /// events were last written, set when a snapshot copies it or
        /// the process crashes (0: unknown). The ring's file keeps its
        /// thread's trace stack right after the ring ([`StackSlot`]s,
        /// outermost first), so with this a reader knows the functions
        /// that ran all through the window.
        pub open_at_end: u64,
        /// How the events are written: [`FORMAT_WIDE`] (16-byte [`Event`]s,
        /// rings) or [`FORMAT_COMPACT`] (the records of [`compact`]).
        pub format: u64,
        /// Exits the thread wrote of functions entered before tracing
        /// began (`ftail record -p`, `ftail ctl on`, a `trace_on`
        /// trigger): each is an [`EventKind::Exit`] that carries its
        /// function's entry address and closes no frame of the file, and
        /// a reader opens an [`EventKind::Earlier`] frame for each at the
        /// thread's start. Counted so that a reader looks for them only
        /// in a file that has some.
        pub before_tracing: u64,
        /// Time-stamp counter value when tracing was last switched on in
        /// the process before the file was created (0: unknown): the
        /// start of the frames that began before tracing.
        pub traced_since: u64,
        /// Bytes of the file's drained ring (`ftail record --drain`; 0:
        /// none): see [`drain`].
        pub drain: u64,
        /// Time-stamp counter value when tracing was last switched on
        /// again after being off while the file existed (0: never): the
        /// trace stack was emptied then, its frames closed as
        /// [`EventKind::Truncated`] at the time tracing went off, so the
        /// exits of functions entered before tracing began that follow
        /// it open their frames at this time, where the file's events
        /// reach it, not at the thread's start.
        pub rejoined: u64,
    }

    /// A drained ring (`ftail record --drain`): the thread writes compact
    /// records into a ring of [`drain::CHUNK`]-byte chunks in its event
    /// file, after the header's page; `ftail record` compresses each
    /// chunk the thread has left into `KEY-TID.drained` (a file of
    /// frames, each one chunk) and only then lets the thread write over
    /// it. Chunk `k` lies in ring slot `k % (drain / CHUNK)`, or, from
    /// [`drain::Control::spill_from`] on, where the thread went on
    /// writing when the drainer was behind or gone: the file grows after
    /// the ring as a file that keeps every event does. The stream of a
    /// thread is the chunks in order; each ends with padding, except the
    /// last, whose unwritten rest is zero.
    pub mod drain {
        /// Bytes of a chunk.
        pub const CHUNK: u64 = 64 << 10;
        /// Where the ring starts in the event file: the header's page
        /// holds the header and then [`Control`].
        pub const RING_AT: u64 = 4096;
        /// Where [`Control`] lies in the event file.
        pub const CONTROL_AT: u64 = 512;
        /// The drained file of `KEY-TID.events` is `KEY-TID.drained`.
        pub const DRAINED_SUFFIX: &str = ".drained";
        /// A drained file being repacked is written as
        /// `KEY-TID.repacking`, then renamed over `KEY-TID.drained`.
        pub const REPACKING_SUFFIX: &str = ".repacking";
        /// The first bytes of a drained file.
        pub const DRAINED_MAGIC: [u8; 8] = *b"FTAILDR1";
        /// The first word of each frame of a drained file whose chunk is
        /// one zstd frame.
        pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"FTCK");
        /// The first word of a frame that holds its chunk as it is (the
        /// drainer was behind: storing is faster than compressing).
        pub const FRAME_STORED: u32 = u32::from_le_bytes(*b"FTCS");
        /// The first word of a frame whose chunk is one LZ4 block (the
        /// drainer was somewhat behind: LZ4 compresses faster than zstd,
        /// and decompresses about twice as fast).
        pub const FRAME_LZ4: u32 = u32::from_le_bytes(*b"FTCL");
        /// Bytes of a frame's head: magic (which codec), bytes of the
        /// chunk, its number, bytes of its compressed form, the CRC-32 of
        /// those bytes.
        pub const FRAME_HEAD: usize = 24;
        /// No spill: [`Control::spill_from`].
        pub const NO_SPILL: u64 = u64::MAX;

        /// The words the thread and the drainer share, in the header's
        /// page. Each is written by one side only.
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Control {
            /// Chunks the thread has finished (by the thread).
            pub written: u64,
            /// Chunks in the drained file (by the drainer, after writing
            /// them there).
            pub drained: u64,
            /// Chunks whose ring slots the thread may write again (by
            /// the drainer, after zeroing them).
            pub freed: u64,
            /// The first chunk written after the ring instead of in it
            /// ([`NO_SPILL`]: none), by the thread.
            pub spill_from: u64,
            /// `CLOCK_MONOTONIC` nanoseconds of the drainer's last look
            /// (0: no drainer yet), by the drainer.
            pub heartbeat: u64,
            /// Nonzero once every chunk is in the drained file, by the
            /// drainer; the file is then cut to the header's page.
            pub finished: u64,
            /// Nonzero once the thread has ended and written its last
            /// record (by the thread): the drainer drains the rest of the
            /// ring and cuts the file while the program goes on.
            pub ended: u64,
        }

        /// Where chunk `k` lies in the event file of a drained ring of
        /// `ring` bytes.
        pub fn chunk_at(k: u64, ring: u64, spill_from: u64) -> u64 {
            if k < spill_from {
                RING_AT + (k % (ring / CHUNK)) * CHUNK
            } else {
                RING_AT + ring + (k - spill_from) * CHUNK
            }
        }
    }

    /// The size of an event file's header before
    /// [`EventFileHeader::before_tracing`] was added: a file whose
    /// `header_size` is this has neither that field nor the ones after
    /// it (a reader takes them as 0).
    pub const EVENTS_HEADER_V5_SIZE: usize = 96;

    /// [`EventFileHeader::format`]: 16-byte [`Event`]s.
    pub const FORMAT_WIDE: u64 = 0;
    /// [`EventFileHeader::format`]: compact records ([`compact`]).
    pub const FORMAT_COMPACT: u64 = 1;

    /// One open frame of a ring's trace stack, as kept after the ring.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct StackSlot {
        /// The frame's CFA.
        pub cfa: u64,
        /// Its entry address in the low 48 bits (flags above).
        pub word: u64,
    }

    /// [`EventFileHeader::stopped`]: the buffer reached the size
    /// `--buffer-events` gives it.
    pub const STOPPED_BUFFER_FULL: u64 = 1;
    /// [`EventFileHeader::stopped`]: the trace directory's filesystem had
    /// no room for more of the buffer.
    pub const STOPPED_DISK_FULL: u64 = 2;
    /// [`EventFileHeader::stopped`]: the trace reached its maximum size
    /// ([`TraceBudget::max_bytes`]).
    pub const STOPPED_MAX_SIZE: u64 = 3;
    /// [`EventFileHeader::stopped`]: the process had no address space
    /// left to reserve for the buffer to grow into
    /// ([`EventFileHeader::capacity`] says how far it could).
    pub const STOPPED_ADDRESS_SPACE: u64 = 4;
    /// [`EventFileHeader::stopped`]: the event file could not be made
    /// longer (reopening it failed, or the file size limit); the errno is
    /// in bits 8 and up.
    pub const STOPPED_FILE_ERROR: u64 = 5;
    /// [`EventFileHeader::stopped`]: the trace's budget file
    /// ([`BUDGET_FILE`]) was truncated, removed or replaced while the
    /// program ran, so no more room could be counted against
    /// `--max-size`.
    pub const STOPPED_BUDGET_LOST: u64 = 6;
    /// [`EventFileHeader::stopped`]: `ftail record -p` detached from the
    /// process (or tracing was switched off, `ftail ctl off`): the frames
    /// still open then were left untraced (a reader
    /// closes them at the thread's last event). Switching tracing on again
    /// clears it in the files of the threads still alive.
    pub const STOPPED_DETACHED: u64 = 7;
    const _: () = assert!(core::mem::size_of::<EventFileHeader>() == 128);

    /// One event: 16 bytes.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Event {
        /// Time-stamp counter value; 0 marks the end of the recorded events.
        pub tsc: u64,
        /// [`EventKind`] in the top 8 bits, an address in the low 48 bits:
        /// for an entry, the address right after the entry site (site + 5);
        /// for every event that closes a frame, that frame's entry address
        /// (so a reader that meets a close without its entry, at the start
        /// of a ring, knows the function); for a resumed frame, its entry
        /// address again.
        pub word: u64,
    }
    const _: () = assert!(core::mem::size_of::<Event>() == 16);

    /// Shift of the kind in [`Event::word`].
    pub const KIND_SHIFT: u32 = 56;
    /// Mask of the address in [`Event::word`].
    pub const ADDR_MASK: u64 = (1 << 48) - 1;

    /// What an [`Event`] records.
    #[repr(u8)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum EventKind {
        /// A traced function was entered.
        Entry = 0,
        /// The innermost open function returned.
        Exit = 1,
        /// The innermost open function ended by a tail call whose callee
        /// has now returned.
        TailExit = 2,
        /// The innermost open function was left without passing an exit
        /// (longjmp, exception, cancellation); detected at this time.
        Unwound = 3,
        /// The thread's buffer filled up: the innermost open function is
        /// closed here, its real exit is not recorded.
        Truncated = 4,
        /// The innermost open function is still alive, but on a stack the
        /// thread switched away from (`swapcontext`, a coroutine library):
        /// its running slice ends here. When its stack runs again it is
        /// reopened by a [`EventKind::Resumed`] event; it may also never
        /// run again.
        Suspended = 5,
        /// A function suspended earlier runs again: opens a new slice of
        /// it, nested where execution is now. Pairs with a later exit like
        /// an entry, but is not a new call.
        Resumed = 6,
        /// Never in a file: a reader of a ring makes one, at the time of
        /// its first event, for each function that was already running
        /// when the ring's window began (its entry was overwritten; its
        /// close is in the window, or it is still open); and, at the
        /// thread's start, for each function entered before tracing began
        /// whose exit the file holds (`EventFileHeader::before_tracing`).
        /// Opens a frame like an entry; the call began earlier.
        Earlier = 7,
    }

    impl EventKind {
        /// Decodes the kind byte.
        pub fn from_u8(v: u8) -> Option<EventKind> {
            Some(match v {
                0 => EventKind::Entry,
                1 => EventKind::Exit,
                2 => EventKind::TailExit,
                3 => EventKind::Unwound,
                4 => EventKind::Truncated,
                5 => EventKind::Suspended,
                6 => EventKind::Resumed,
                7 => EventKind::Earlier,
                _ => return None,
            })
        }

        /// Whether the event opens a frame (an entry or a resumed slice);
        /// every other kind closes the innermost open one.
        pub fn opens(self) -> bool {
            matches!(
                self,
                EventKind::Entry | EventKind::Resumed | EventKind::Earlier
            )
        }
    }

    impl Event {
        /// The event's kind, if valid.
        pub fn kind(&self) -> Option<EventKind> {
            EventKind::from_u8((self.word >> KIND_SHIFT) as u8)
        }
        /// The event's address field.
        pub fn addr(&self) -> u64 {
            self.word & ADDR_MASK
        }
    }

    /// The compact event format (`FORMAT_COMPACT`): what a thread that
    /// keeps every event writes, about 6 bytes per event.
    ///
    /// A stream of little-endian 32-bit words. Every record starts with a
    /// *head* word whose low 3 bits, its tag, are never 0, so the first
    /// word that is 0 is where the thread stopped writing (a reader stops
    /// there, as at the end of the file). Every record is written with a
    /// single store, or its head last, so a record whose head is there
    /// is whole.
    ///
    /// | tag | size | fields (bit ranges of the record as one integer) |
    /// |---|---|---|
    /// | 1 entry | 8 | 3–16: time offset; 17–63: entry address |
    /// | 2–6 close | 4 | 3–31: time offset; the kind: 2 exit, 3 tail exit, 4 unwound, 5 truncated, 6 suspended |
    /// | 7 extended | 4 × words | head 3–7: subtype, 8–15: words (with the head), 16–31: per subtype |
    ///
    /// Times: a *time* record (extended, subtype [`SUB_TIME`]: the head
    /// and the 64-bit counter) sets the stream's *base*; an entry's or a
    /// close's time is the base plus its offset. A writer writes a time
    /// record whenever the offset would not fit (after
    /// [`ENTRY_SPAN`] ticks for an entry, [`CLOSE_SPAN`] for a close),
    /// and when the counter went backwards (a resynchronised clock):
    /// decoding is exact whatever the gaps, and needs no other state. An
    /// *event* record (subtype [`SUB_EVENT`]: kind in head bits 16–23,
    /// then the 64-bit counter, then for a kind that opens a frame the
    /// 64-bit address) carries its own time and does not touch the base:
    /// resumed frames, and events written while a time record is being
    /// written (a signal handler's). A *pad* record (subtype [`SUB_PAD`])
    /// fills a slot given up. Subtypes from [`SUB_PAYLOAD`] up are
    /// payloads, which a reader that does not know them skips by their
    /// length: [`SUB_ARGS`] and [`SUB_RETVAL`] carry argument and return
    /// values (`crate::argspec` describes them).
    ///
    /// Closes carry no address: the reader knows which frame closes.
    pub mod compact {
        use super::{Event, EventKind, ADDR_MASK, KIND_SHIFT};

        /// Tag of an entry record.
        pub const TAG_ENTRY: u32 = 1;
        /// Tag of an extended record.
        pub const TAG_EXT: u32 = 7;
        /// Extended subtype: a time record.
        pub const SUB_TIME: u32 = 0;
        /// Extended subtype: an event with its own time.
        pub const SUB_EVENT: u32 = 1;
        /// Extended subtype: padding.
        pub const SUB_PAD: u32 = 2;
        /// Extended subtypes from here up: payloads (a reader that does
        /// not know one skips it by its length).
        pub const SUB_PAYLOAD: u32 = 16;
        /// Payload: a function's arguments, right before its entry
        /// (`crate::argspec`).
        pub const SUB_ARGS: u32 = 16;
        /// Payload: a return value, right before the close it belongs to
        /// (`crate::argspec`).
        pub const SUB_RETVAL: u32 = 17;
        /// Bits of an entry's time offset.
        pub const ENTRY_BITS: u32 = 14;
        /// Bits of a close's time offset.
        pub const CLOSE_BITS: u32 = 29;
        /// Ticks an entry's offset spans.
        pub const ENTRY_SPAN: u64 = 1 << ENTRY_BITS;
        /// Ticks a close's offset spans.
        pub const CLOSE_SPAN: u64 = 1 << CLOSE_BITS;
        /// Size of an entry record.
        pub const ENTRY_SIZE: u64 = 8;
        /// Size of a close record.
        pub const CLOSE_SIZE: u64 = 4;
        /// Size of a time record.
        pub const TIME_SIZE: u64 = 12;

        /// The tag of a close of `kind` (`None` for kinds that open).
        pub fn close_tag(kind: EventKind) -> Option<u32> {
            Some(match kind {
                EventKind::Exit => 2,
                EventKind::TailExit => 3,
                EventKind::Unwound => 4,
                EventKind::Truncated => 5,
                EventKind::Suspended => 6,
                _ => return None,
            })
        }

        /// An entry record: `offset` < [`ENTRY_SPAN`], `addr` 47 bits.
        pub fn entry(offset: u64, addr: u64) -> u64 {
            u64::from(TAG_ENTRY) | (offset << 3) | ((addr & ((1 << 47) - 1)) << 17)
        }

        /// A close record: `offset` < [`CLOSE_SPAN`].
        pub fn close(tag: u32, offset: u64) -> u32 {
            tag | ((offset as u32) << 3)
        }

        /// The head of an extended record of `words` words.
        pub fn ext_head(sub: u32, words: u32, extra: u32) -> u32 {
            TAG_EXT | (sub << 3) | (words << 8) | (extra << 16)
        }

        /// What one record decodes to.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Record {
            /// An event.
            Event(Event),
            /// A record that is no event (time, pad, payload).
            Other,
            /// The first unwritten word: the end of the events.
            End,
            /// More bytes are needed to decode the record (at least this
            /// many from its start).
            Need(usize),
            /// Not a record of this format; why.
            Bad(&'static str),
        }

        /// Decodes records one by one, keeping the stream's base.
        #[derive(Clone, Copy, Debug, Default)]
        pub struct Decoder {
            /// The base of times, once a time record set it.
            pub base: Option<u64>,
        }

        #[inline]
        fn u32_at(b: &[u8], at: usize) -> u32 {
            u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
        }

        #[inline]
        fn u64_at(b: &[u8], at: usize) -> u64 {
            u64::from(u32_at(b, at)) | (u64::from(u32_at(b, at + 4)) << 32)
        }

        impl Decoder {
            /// Decodes the record at the start of `b`; returns it and its
            /// size in bytes (0 unless it is a record).
            #[inline]
            pub fn next(&mut self, b: &[u8]) -> (Record, usize) {
                if b.len() < 4 {
                    return (Record::Need(4), 0);
                }
                let head = u32_at(b, 0);
                let tag = head & 7;
                let event = |kind: EventKind, tsc: u64, addr: u64| {
                    Record::Event(Event {
                        tsc: tsc.max(1),
                        word: ((kind as u64) << KIND_SHIFT) | (addr & ADDR_MASK),
                    })
                };
                match tag {
                    0 if head == 0 => (Record::End, 0),
                    0 => (Record::Bad("a record with tag 0"), 0),
                    1 => {
                        if b.len() < 8 {
                            return (Record::Need(8), 0);
                        }
                        let Some(base) = self.base else {
                            return (Record::Bad("an entry before any time record"), 0);
                        };
                        let r = u64_at(b, 0);
                        let offset = (r >> 3) & (ENTRY_SPAN - 1);
                        (event(EventKind::Entry, base + offset, r >> 17), 8)
                    }
                    2..=6 => {
                        let Some(base) = self.base else {
                            return (Record::Bad("a close before any time record"), 0);
                        };
                        let kind = match tag {
                            2 => EventKind::Exit,
                            3 => EventKind::TailExit,
                            4 => EventKind::Unwound,
                            5 => EventKind::Truncated,
                            _ => EventKind::Suspended,
                        };
                        (event(kind, base + u64::from(head >> 3), 0), 4)
                    }
                    _ => {
                        let sub = (head >> 3) & 31;
                        let words = ((head >> 8) & 0xff) as usize;
                        if words == 0 {
                            return (Record::Bad("an extended record of no words"), 0);
                        }
                        let size = words * 4;
                        if b.len() < size {
                            return (Record::Need(size), 0);
                        }
                        match sub {
                            SUB_TIME if words >= 3 => {
                                self.base = Some(u64_at(b, 4));
                                (Record::Other, size)
                            }
                            SUB_EVENT if words >= 3 => {
                                let Some(kind) = EventKind::from_u8((head >> 16) as u8) else {
                                    return (Record::Bad("an event record of no known kind"), 0);
                                };
                                let addr = if words >= 5 { u64_at(b, 12) } else { 0 };
                                (event(kind, u64_at(b, 4), addr), size)
                            }
                            SUB_TIME | SUB_EVENT => {
                                (Record::Bad("an extended record too short"), 0)
                            }
                            _ => (Record::Other, size),
                        }
                    }
                }
            }
        }
    }
}

/// Loading the runtime into a running process (`ftail record -p`): how
/// the runtime gets its configuration from the tracer, and its answer.
pub mod attach {
    /// The abstract Unix socket name, followed by the tracer's pid, on
    /// which `ftail record -p` hands the runtime it loaded its
    /// configuration: `NAME=VALUE` lines with the names of the
    /// environment variables `ftail record` sets, up to the end of the
    /// stream; the runtime answers one byte.
    pub const TRACER_SOCKET: &str = "ftail-attach-";
    /// Read: a thread of the runtime writes the sites and starts the
    /// control agent, which answers once tracing is on.
    pub const STARTED: i32 = 0;
    /// The configuration could not be read, or names no trace
    /// directory.
    pub const BAD_CONFIG: i32 = 2;
}

//! Parquet tables for SQL engines (DuckDB, ClickHouse, Spark, Trino…):
//! one row per call, and what the calls refer to, in a directory laid
//! out with Hive-style partitions by process image, so an engine reads it
//! whole with a glob:
//!
//! ```text
//! DIR/calls/image=KEY/thread-TID.parquet      one row per call
//! DIR/functions/image=KEY/functions.parquet   one row per function
//! DIR/threads/image=KEY/threads.parquet       one row per thread
//! ```
//!
//! `KEY` names the process image as the trace does: its pid, or `PID~N`
//! after its N-th `exec`. Function ids and call ids are per image and
//! per thread: join calls to functions on (`image`, `function` = `id`),
//! a call to its parent on (`image`, `tid`, `parent` = `id`).
//!
//! `calls` columns: `pid`, `tid`, `id` (the call's number in its thread,
//! from 1, in order of entry), `parent` (null: outermost shown),
//! `parent_function` (the parent's `function`, so that caller and callee
//! need no self-join), `depth`, `function` (null: no table names it),
//! `module` (its file), `address` (the entry site), `start_ns` (since the
//! trace began), `duration_ns`, `self_ns` (less its shown callees' time),
//! `exit` (`return`, `tail`, `unwound`, `truncated`, `suspended`),
//! `resumed` (a later slice of a call whose stack was switched away from,
//! not a new call: count calls with `NOT resumed`). A call that never
//! ended (its process killed) has no row. Times are whole nanoseconds
//! (INT64): a call's start and end are each rounded to the nearest, so a
//! call ends where `start_ns + duration_ns` says, its callees lie inside
//! it, and `self_ns` is its `duration_ns` less theirs, exactly.
//! `docs/parquet.md` documents every table.
//!
//! Rows are written as calls end, a row group (up to [`ROW_GROUP`]
//! rows) at a time, compressed with zstd; a row group is all that is held.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ftail_abi::trace::{EventKind, EVENTS_SUFFIX};
use rustix::fs::FileType;

use crate::output::{OutputDir, OutputFile};
use parquet::basic::{Compression, ZstdLevel};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::properties::{WriterProperties, WriterVersion};
use parquet::file::writer::{SerializedColumnWriter, SerializedFileWriter};
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::Type;

use crate::{Input, Notes};
use ftail_trace::view::Shown;

/// A `threads` row: tid, name, events lost, damage.
type ThreadRow = (u32, String, u64, Option<String>);

/// Rows per row group.
pub const ROW_GROUP: usize = 1 << 18;

const CALLS_SCHEMA: &str = "message call {
    REQUIRED INT32 pid;
    REQUIRED INT32 tid;
    REQUIRED INT64 id;
    OPTIONAL INT64 parent;
    OPTIONAL INT32 parent_function;
    REQUIRED INT32 depth;
    OPTIONAL INT32 function;
    OPTIONAL BYTE_ARRAY module (STRING);
    REQUIRED INT64 address;
    REQUIRED INT64 start_ns;
    REQUIRED INT64 duration_ns;
    REQUIRED INT64 self_ns;
    REQUIRED BYTE_ARRAY exit (STRING);
    REQUIRED BOOLEAN resumed;
}";

const FUNCTIONS_SCHEMA: &str = "message function {
    REQUIRED INT32 id;
    REQUIRED BYTE_ARRAY module (STRING);
    OPTIONAL BYTE_ARRAY build_id (STRING);
    REQUIRED INT64 address;
    REQUIRED BYTE_ARRAY name (STRING);
    REQUIRED BYTE_ARRAY signature (STRING);
    REQUIRED BYTE_ARRAY mangled (STRING);
    OPTIONAL BYTE_ARRAY file (STRING);
    OPTIONAL INT32 line;
}";

const THREADS_SCHEMA: &str = "message thread {
    REQUIRED INT32 pid;
    REQUIRED INT32 tid;
    REQUIRED BYTE_ARRAY name (STRING);
    REQUIRED INT64 lost;
    OPTIONAL BYTE_ARRAY damage (STRING);
}";

fn pq(e: parquet::errors::ParquetError) -> io::Error {
    io::Error::other(e.to_string())
}

fn properties() -> Arc<WriterProperties> {
    Arc::new(
        WriterProperties::builder()
            .set_writer_version(WriterVersion::PARQUET_2_0)
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
            .set_created_by(format!("ftail {}", env!("CARGO_PKG_VERSION")))
            .build(),
    )
}

fn schema(text: &str) -> io::Result<Arc<Type>> {
    parse_message_type(text).map(Arc::new).map_err(pq)
}

/// One column's values for a row group, with definition levels for an
/// optional column.
enum Column {
    I32(Vec<i32>, Option<Vec<i16>>),
    I64(Vec<i64>, Option<Vec<i16>>),
    Bytes(Vec<ByteArray>, Option<Vec<i16>>),
    Bool(Vec<bool>),
}

impl Column {
    fn clear(&mut self) {
        match self {
            Column::I32(v, d) => {
                v.clear();
                if let Some(d) = d {
                    d.clear();
                }
            }
            Column::I64(v, d) => {
                v.clear();
                if let Some(d) = d {
                    d.clear();
                }
            }
            Column::Bytes(v, d) => {
                v.clear();
                if let Some(d) = d {
                    d.clear();
                }
            }
            Column::Bool(v) => v.clear(),
        }
    }

    fn write(&self, w: &mut SerializedColumnWriter) -> parquet::errors::Result<usize> {
        match self {
            Column::I32(v, d) => w.typed::<Int32Type>().write_batch(v, d.as_deref(), None),
            Column::I64(v, d) => w.typed::<Int64Type>().write_batch(v, d.as_deref(), None),
            Column::Bytes(v, d) => w
                .typed::<ByteArrayType>()
                .write_batch(v, d.as_deref(), None),
            Column::Bool(v) => w.typed::<BoolType>().write_batch(v, None, None),
        }
    }
}

/// Pushes an optional value.
macro_rules! opt {
    ($col:expr, $variant:ident, $v:expr) => {
        if let Column::$variant(vals, Some(defs)) = &mut $col {
            match $v {
                Some(x) => {
                    vals.push(x);
                    defs.push(1);
                }
                None => defs.push(0),
            }
        }
    };
}

/// Pushes a required value.
macro_rules! req {
    ($col:expr, $variant:ident, $v:expr) => {
        if let Column::$variant(vals, ..) = &mut $col {
            vals.push($v);
        }
    };
}

/// A Parquet file written a row group at a time.
struct Table {
    path: PathBuf,
    out: OutputFile,
    writer: SerializedFileWriter<BufWriter<File>>,
    columns: Vec<Column>,
    rows: usize,
}

impl Table {
    fn create(
        dir: &OutputDir,
        name: &str,
        schema_text: &str,
        columns: Vec<Column>,
    ) -> io::Result<Table> {
        let mut out = dir.file(name)?;
        let path = out.path().to_path_buf();
        let file = out.writer().try_clone().map_err(crate::named(&path))?;
        let writer = SerializedFileWriter::new(
            BufWriter::with_capacity(1 << 20, file),
            schema(schema_text)?,
            properties(),
        )
        .map_err(pq)?;
        Ok(Table {
            path,
            out,
            writer,
            columns,
            rows: 0,
        })
    }

    /// Counts a row pushed into the columns; writes the row group when
    /// full.
    fn row_done(&mut self) -> io::Result<()> {
        self.rows += 1;
        if self.rows >= ROW_GROUP {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let path = self.path.display().to_string();
        let mut rg = self.writer.next_row_group().map_err(pq)?;
        for c in &self.columns {
            let mut w = rg
                .next_column()
                .map_err(pq)?
                .ok_or_else(|| io::Error::other(format!("{path}: schema has fewer columns")))?;
            c.write(&mut w).map_err(pq)?;
            w.close().map_err(pq)?;
        }
        rg.close().map_err(pq)?;
        for c in &mut self.columns {
            c.clear();
        }
        self.rows = 0;
        Ok(())
    }

    /// Writes the footer and gives the file its name.
    fn close(mut self) -> io::Result<()> {
        self.flush()?;
        let mut buf = self.writer.into_inner().map_err(pq)?;
        buf.flush().map_err(crate::named(&self.path))?;
        drop(buf);
        self.out.commit()
    }
}

fn calls_columns() -> Vec<Column> {
    let n = ROW_GROUP;
    vec![
        Column::I32(Vec::with_capacity(n), None), // pid
        Column::I32(Vec::with_capacity(n), None), // tid
        Column::I64(Vec::with_capacity(n), None), // id
        Column::I64(Vec::with_capacity(n), Some(Vec::with_capacity(n))), // parent
        Column::I32(Vec::with_capacity(n), Some(Vec::with_capacity(n))), // parent_function
        Column::I32(Vec::with_capacity(n), None), // depth
        Column::I32(Vec::with_capacity(n), Some(Vec::with_capacity(n))), // function
        Column::Bytes(Vec::with_capacity(n), Some(Vec::with_capacity(n))), // module
        Column::I64(Vec::with_capacity(n), None), // address
        Column::I64(Vec::with_capacity(n), None), // start_ns
        Column::I64(Vec::with_capacity(n), None), // duration_ns
        Column::I64(Vec::with_capacity(n), None), // self_ns
        Column::Bytes(Vec::with_capacity(n), None), // exit
        Column::Bool(Vec::with_capacity(n)),      // resumed
    ]
}

/// The directory of a partition, `DIR/TABLE/image=KEY`, created private.
fn partition(dir: &OutputDir, table: &str, image_key: &str) -> io::Result<OutputDir> {
    dir.subdir(table)?.subdir(&format!("image={image_key}"))
}

/// Writes `input`'s calls, functions and threads under `dir` (created if
/// needed, as [`OutputDir::create`] does; files of an earlier export there
/// are replaced); returns notes on what could not be read.
///
/// # Errors
///
/// Creating or writing a file, named; a `dir` that is not a private
/// directory of this user's.
pub fn write(input: &Input, dir: &Path) -> io::Result<Notes> {
    let dir = OutputDir::create(dir)?;
    clear_previous(&dir)?;
    let mut notes = crate::name_notes(input);
    let matches = crate::matches(input);
    let exits: Vec<ByteArray> = ["return", "tail", "unwound", "truncated", "suspended"]
        .iter()
        .map(|s| ByteArray::from(*s))
        .collect();
    let exit_index = |how: EventKind| match how {
        EventKind::TailExit => 1,
        EventKind::Unwound => 2,
        EventKind::Truncated => 3,
        EventKind::Suspended => 4,
        _ => 0,
    };
    let mut thread_rows: Vec<Vec<ThreadRow>> = vec![Vec::new(); input.trace.images.len()];
    for (i, file) in crate::selected(input) {
        let image = &input.trace.images[i];
        let modules: Vec<ByteArray> = image
            .modules
            .iter()
            .map(|m| ByteArray::from(m.path.to_string_lossy().as_ref()))
            .collect();
        let stem = file
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(EVENTS_SUFFIX))
            .and_then(|n| n.rsplit_once('-'))
            .map_or_else(|| file.tid.to_string(), |(_, t)| t.to_string());
        let part = partition(&dir, "calls", &image.key)?;
        let name = format!("thread-{stem}.parquet");
        let mut table = Table::create(&part, &name, CALLS_SCHEMA, calls_columns())?;
        let end = crate::stream_thread(input, i, &matches[i], file, &mut notes, |t, items| {
            let (pid, tid) = (t.image.pid as i32, t.file.tid as i32);
            // Per open shown call: id, callees' ns, resumed, function.
            let mut open: Vec<(i64, i64, bool, Option<i32>)> = Vec::new();
            let mut next_id = 1i64;
            let ns = |tsc: u64| t.clock.ns(tsc).round() as i64;
            for item in items {
                match item {
                    Shown::Enter { resumed, func, .. } => {
                        open.push((next_id, 0, resumed, func.map(|f| f.0 as i32)));
                        next_id += 1;
                    }
                    Shown::Leave {
                        addr,
                        func,
                        start,
                        end,
                        depth,
                        how,
                        ..
                    }
                    | Shown::Leaf {
                        addr,
                        func,
                        start,
                        end,
                        depth,
                        how,
                        ..
                    } => {
                        let Some((id, callees, resumed, _)) = open.pop() else {
                            continue;
                        };
                        let start_ns = ns(start);
                        let duration = ns(end.max(start)) - start_ns;
                        let parent = open.last_mut();
                        let parent_function = parent.as_ref().and_then(|p| p.3);
                        let parent_id = parent.map(|p| {
                            p.1 += duration;
                            p.0
                        });
                        let c = &mut table.columns;
                        req!(c[0], I32, pid);
                        req!(c[1], I32, tid);
                        req!(c[2], I64, id);
                        opt!(c[3], I64, parent_id);
                        opt!(c[4], I32, parent_function);
                        req!(c[5], I32, depth as i32);
                        opt!(c[6], I32, func.map(|f| f.0 as i32));
                        opt!(
                            c[7],
                            Bytes,
                            func.and_then(|f| modules.get(t.names.module_of(f)).cloned())
                        );
                        req!(c[8], I64, addr.saturating_sub(5) as i64);
                        req!(c[9], I64, start_ns);
                        req!(c[10], I64, duration);
                        req!(c[11], I64, duration - callees);
                        req!(c[12], Bytes, exits[exit_index(how)].clone());
                        req!(c[13], Bool, resumed);
                        table.row_done()?;
                    }
                }
            }
            Ok::<(), io::Error>(())
        })?;
        table.close()?;
        let header = file.header.as_ref().ok();
        thread_rows[i].push((
            file.tid,
            crate::thread_name(file),
            header.map_or(0, |h| h.lost),
            end.and_then(|e| e.damage),
        ));
    }
    for (i, image) in input.trace.images.iter().enumerate() {
        if thread_rows[i].is_empty() {
            continue;
        }
        write_functions(input, i, &dir)?;
        let part = partition(&dir, "threads", &image.key)?;
        let n = thread_rows[i].len();
        let mut t = Table::create(
            &part,
            "threads.parquet",
            THREADS_SCHEMA,
            vec![
                Column::I32(Vec::with_capacity(n), None),
                Column::I32(Vec::with_capacity(n), None),
                Column::Bytes(Vec::with_capacity(n), None),
                Column::I64(Vec::with_capacity(n), None),
                Column::Bytes(Vec::with_capacity(n), Some(Vec::with_capacity(n))),
            ],
        )?;
        for (tid, name, lost, damage) in std::mem::take(&mut thread_rows[i]) {
            let c = &mut t.columns;
            req!(c[0], I32, image.pid as i32);
            req!(c[1], I32, tid as i32);
            req!(c[2], Bytes, ByteArray::from(name.as_str()));
            req!(c[3], I64, lost as i64);
            opt!(c[4], Bytes, damage.map(|d| ByteArray::from(d.as_str())));
            t.row_done()?;
        }
        t.close()?;
    }
    Ok(notes)
}

/// The functions table of image `i`.
fn write_functions(input: &Input, i: usize, dir: &OutputDir) -> io::Result<()> {
    let image = &input.trace.images[i];
    let names = &input.names[i];
    let n = names.functions().len();
    let part = partition(dir, "functions", &image.key)?;
    let mut t = Table::create(
        &part,
        "functions.parquet",
        FUNCTIONS_SCHEMA,
        vec![
            Column::I32(Vec::with_capacity(n), None),
            Column::Bytes(Vec::with_capacity(n), None),
            Column::Bytes(Vec::with_capacity(n), Some(Vec::with_capacity(n))),
            Column::I64(Vec::with_capacity(n), None),
            Column::Bytes(Vec::with_capacity(n), None),
            Column::Bytes(Vec::with_capacity(n), None),
            Column::Bytes(Vec::with_capacity(n), None),
            Column::Bytes(Vec::with_capacity(n), Some(Vec::with_capacity(n))),
            Column::I32(Vec::with_capacity(n), Some(Vec::with_capacity(n))),
        ],
    )?;
    for (id, f) in names.functions().iter().enumerate() {
        let fid = ftail_trace::names::FuncId(id as u32);
        let module = image.modules.get(names.module_of(fid));
        let src = names.srcline(fid);
        let c = &mut t.columns;
        req!(c[0], I32, id as i32);
        req!(
            c[1],
            Bytes,
            ByteArray::from(
                module
                    .map(|m| m.path.to_string_lossy().into_owned())
                    .unwrap_or_default()
                    .as_str()
            )
        );
        opt!(
            c[2],
            Bytes,
            module
                .and_then(|m| m.build_id.as_deref())
                .map(ByteArray::from)
        );
        req!(c[3], I64, names.start(fid) as i64);
        req!(c[4], Bytes, ByteArray::from(f.name.as_ref()));
        req!(c[5], Bytes, ByteArray::from(f.signature.as_ref()));
        req!(c[6], Bytes, ByteArray::from(f.mangled.as_ref()));
        opt!(
            c[7],
            Bytes,
            src.as_ref().map(|s| ByteArray::from(s.file.as_str()))
        );
        opt!(c[8], I32, src.map(|s| s.line as i32));
        t.row_done()?;
    }
    t.close()
}

/// Removes the Parquet files an earlier export left in `dir`'s tables
/// (and their partitions, once empty); nothing else, and nothing reached
/// through a link.
fn clear_previous(dir: &OutputDir) -> io::Result<()> {
    for table in ["calls", "functions", "threads"] {
        let Some(table) = dir.existing_subdir(table) else {
            continue;
        };
        for (part, kind) in table.entries()? {
            if !part.starts_with("image=") || kind != FileType::Directory {
                continue;
            }
            let Some(p) = table.existing_subdir(&part) else {
                continue;
            };
            for (f, kind) in p.entries()? {
                if f.ends_with(".parquet") && kind == FileType::RegularFile {
                    p.remove_file(&f)?;
                }
            }
            table.remove_empty_subdir(&part);
        }
    }
    Ok(())
}

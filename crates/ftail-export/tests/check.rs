//! Every exporter on a synthetic trace that has each way a call can end
//! (return, tail call, unwound, switched out and resumed, cut by a full
//! buffer, never ended), events lost and two threads; whole outputs
//! compared with expect-test snapshots (`UPDATE_EXPECT=1` rewrites them).
//! The Perfetto file is shown decoded, field by field.

use std::path::Path;

use expect_test::{expect, Expect};
use ftail_abi::trace::{EventFileHeader, EventKind, EVENTS_MAGIC, KIND_SHIFT, TRACE_VERSION};
use ftail_export::folded::Weight;
use ftail_export::{Input, Progress};
use ftail_trace::names::for_images;
use ftail_trace::reader::dir::TraceDir;
use ftail_trace::view::Filters;

fn header(pid: u32, tid: u32, name: &[u8], lost: u64, stopped: u64) -> Vec<u8> {
    let size = std::mem::size_of::<EventFileHeader>();
    let mut v = Vec::new();
    v.extend_from_slice(&EVENTS_MAGIC);
    for x in [TRACE_VERSION, size as u32, pid, tid] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(&16u64.to_le_bytes()); // capacity
    v.extend_from_slice(&lost.to_le_bytes());
    let mut n = [0u8; 16];
    n[..name.len()].copy_from_slice(name);
    v.extend_from_slice(&n);
    v.extend_from_slice(&stopped.to_le_bytes());
    v.resize(size, 0);
    v
}

fn events(v: &mut Vec<u8>, list: &[(u64, EventKind, u64)]) {
    for &(tsc, kind, addr) in list {
        v.extend_from_slice(&tsc.to_le_bytes());
        v.extend_from_slice(&(((kind as u64) << KIND_SHIFT) | addr).to_le_bytes());
    }
    v.resize(v.len() + 32, 0); // the unwritten rest of the file
}

/// Process 7 (`prog arg`): thread 8 `main` returns, tail-calls, switches
/// a call out and back, unwinds one, loses 3 events and ends with a call
/// open (killed); thread 9 `worker` fills its buffer with two calls
/// open. No module file exists: functions are named by address.
fn synthetic() -> tempfile::TempDir {
    use EventKind::*;
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(
        p.join("7.info"),
        "version=1\npid=7\ntsc_hz=1000000000\nstart_tsc=1000\nstart_realtime_ns=1700000000000000000\ncmdline=/bin/prog\x1farg\n",
    )
    .unwrap();
    // A module path inside the test's own directory, where nothing is.
    std::fs::write(
        p.join("7.modules"),
        format!("load 0 0x1000 - 0 0 {}\n", p.join("absent").display()),
    )
    .unwrap();
    let mut a = header(7, 8, b"main", 3, 0);
    events(
        &mut a,
        &[
            (1010, Entry, 0x1005),
            (1020, Entry, 0x2005),
            (1030, TailExit, 0),
            (1040, Entry, 0x3005),
            (1045, Suspended, 0),
            (1050, Entry, 0x4005),
            (1055, Exit, 0x4010),
            (1060, Resumed, 0x3005),
            (1065, Exit, 0x3010),
            (1070, Entry, 0x5005),
            (1072, Entry, 0x6005),
            (1075, Unwound, 0),
            (1080, Exit, 0x5010),
            (1090, Exit, 0x1010),
            (1100, Entry, 0x7005),
        ],
    );
    std::fs::write(p.join("7-8.events"), a).unwrap();
    let mut b = header(7, 9, b"worker", 0, 1);
    events(
        &mut b,
        &[
            (1200, Entry, 0x1005),
            (1210, Entry, 0x2005),
            (1220, Truncated, 0),
        ],
    );
    std::fs::write(p.join("7-9.events"), b).unwrap();
    d
}

/// An exporter's function.
type Exporter<'a> =
    Box<dyn FnOnce(&Input, &mut Vec<u8>) -> std::io::Result<ftail_export::Notes> + 'a>;

/// Runs an exporter on the synthetic trace: its output, and its notes
/// with the trace's directory as `$DIR`.
fn export(filters: &Filters, f: Exporter) -> (Vec<u8>, String) {
    let d = synthetic();
    let trace = TraceDir::open(d.path()).unwrap();
    let names = for_images(&trace.images);
    let progress = Progress::new();
    let input = Input {
        trace: &trace,
        names: &names,
        filters,
        tids: &[],
        srcline: false,
        progress: &progress,
    };
    let mut out = Vec::new();
    let notes = f(&input, &mut out).unwrap();
    assert_eq!(progress.done(), 18, "events counted");
    let notes = notes
        .iter()
        .map(|n| format!("# {}\n", n.replace(&d.path().display().to_string(), "$DIR")))
        .collect();
    (out, notes)
}

fn check(filters: &Filters, f: Exporter, want: Expect) {
    let (out, notes) = export(filters, f);
    want.assert_eq(&(String::from_utf8(out).unwrap() + &notes));
}

#[test]
fn chrome() {
    check(
        &Filters::default(),
        Box::new(ftail_export::chrome::write),
        expect![[r#"
            {"traceEvents":[
            {"name":"process_name","ph":"M","pid":7,"args":{"name":"prog"}},
            {"name":"thread_name","ph":"M","pid":7,"tid":8,"args":{"name":"main"}},
            {"name":"0x1000","ph":"B","ts":0.01,"pid":7,"tid":8},
            {"name":"0x2000","ph":"B","ts":0.02,"pid":7,"tid":8},
            {"name":"0x2000","ph":"E","ts":0.03,"pid":7,"tid":8,"args":{"exit":"tail call"}},
            {"name":"0x3000","ph":"B","ts":0.04,"pid":7,"tid":8},
            {"name":"0x3000","ph":"E","ts":0.045,"pid":7,"tid":8,"args":{"exit":"switched out"}},
            {"name":"0x4000","ph":"B","ts":0.05,"pid":7,"tid":8},
            {"name":"0x4000","ph":"E","ts":0.055,"pid":7,"tid":8},
            {"name":"0x3000","ph":"B","ts":0.06,"pid":7,"tid":8,"args":{"resumed":true}},
            {"name":"0x3000","ph":"E","ts":0.065,"pid":7,"tid":8},
            {"name":"0x5000","ph":"B","ts":0.07,"pid":7,"tid":8},
            {"name":"0x6000","ph":"B","ts":0.072,"pid":7,"tid":8},
            {"name":"0x6000","ph":"E","ts":0.075,"pid":7,"tid":8,"args":{"exit":"unwound"}},
            {"name":"0x5000","ph":"E","ts":0.08,"pid":7,"tid":8},
            {"name":"0x1000","ph":"E","ts":0.09,"pid":7,"tid":8},
            {"name":"0x7000","ph":"B","ts":0.1,"pid":7,"tid":8},
            {"name":"events lost","ph":"i","ts":0.1,"pid":7,"tid":8,"s":"t","args":{"count":3}},
            {"name":"thread_name","ph":"M","pid":7,"tid":9,"args":{"name":"worker"}},
            {"name":"0x1000","ph":"B","ts":0.2,"pid":7,"tid":9},
            {"name":"0x2000","ph":"B","ts":0.21,"pid":7,"tid":9},
            {"name":"buffer full","ph":"i","ts":0.22,"pid":7,"tid":9,"s":"t"},
            {"name":"0x2000","ph":"E","ts":0.22,"pid":7,"tid":9,"args":{"exit":"buffer full"}},
            {"name":"0x1000","ph":"E","ts":0.22,"pid":7,"tid":9,"args":{"exit":"buffer full"}}
            ],"displayTimeUnit":"ns","otherData":{"exporter":"ftail"}}
            # $DIR/absent: No such file or directory (os error 2); no place to look for a copy with the recorded id (--symbols-dir); its addresses are shown unnamed
        "#]],
    );
}

#[test]
fn speedscope() {
    check(
        &Filters::default(),
        Box::new(ftail_export::speedscope::write),
        expect![[r#"
            {"$schema":"https://www.speedscope.app/file-format-schema.json","exporter":"ftail","name":"prog","activeProfileIndex":0,"profiles":[
            {"type":"evented","name":"prog [7]: main (8)","unit":"nanoseconds","events":[
            {"type":"O","frame":0,"at":10},
            {"type":"O","frame":1,"at":20},
            {"type":"C","frame":1,"at":30},
            {"type":"O","frame":2,"at":40},
            {"type":"C","frame":2,"at":45},
            {"type":"O","frame":3,"at":50},
            {"type":"C","frame":3,"at":55},
            {"type":"O","frame":2,"at":60},
            {"type":"C","frame":2,"at":65},
            {"type":"O","frame":4,"at":70},
            {"type":"O","frame":5,"at":72},
            {"type":"C","frame":5,"at":75},
            {"type":"C","frame":4,"at":80},
            {"type":"C","frame":0,"at":90},
            {"type":"O","frame":6,"at":100},
            {"type":"C","frame":6,"at":100}
            ],"startValue":10,"endValue":100},
            {"type":"evented","name":"prog [7]: worker (9)","unit":"nanoseconds","events":[
            {"type":"O","frame":0,"at":200},
            {"type":"O","frame":1,"at":210},
            {"type":"C","frame":1,"at":220},
            {"type":"C","frame":0,"at":220}
            ],"startValue":200,"endValue":220}
            ],"shared":{"frames":[{"name":"0x1000"},{"name":"0x2000"},{"name":"0x3000"},{"name":"0x4000"},{"name":"0x5000"},{"name":"0x6000"},{"name":"0x7000"}]}}
            # $DIR/absent: No such file or directory (os error 2); no place to look for a copy with the recorded id (--symbols-dir); its addresses are shown unnamed
        "#]],
    );
}

#[test]
fn folded_by_self_time_and_by_calls() {
    check(
        &Filters::default(),
        Box::new(|i, o| ftail_export::folded::write(i, Weight::SelfTime, o)),
        expect![[r#"
            0x1000 55
            0x1000;0x2000 20
            0x1000;0x3000 10
            0x1000;0x4000 5
            0x1000;0x5000 7
            0x1000;0x5000;0x6000 3
            # $DIR/absent: No such file or directory (os error 2); no place to look for a copy with the recorded id (--symbols-dir); its addresses are shown unnamed
        "#]],
    );
    check(
        &Filters::default(),
        Box::new(|i, o| ftail_export::folded::write(i, Weight::Calls, o)),
        expect![[r#"
            0x1000 2
            0x1000;0x2000 2
            0x1000;0x3000 1
            0x1000;0x4000 1
            0x1000;0x5000 1
            0x1000;0x5000;0x6000 1
            # $DIR/absent: No such file or directory (os error 2); no place to look for a copy with the recorded id (--symbols-dir); its addresses are shown unnamed
        "#]],
    );
}

#[test]
fn filters_apply_as_in_replay() {
    // One level: a call's self time is then its whole time.
    let only = Filters {
        depth: Some(1),
        ..Filters::default()
    };
    check(
        &only,
        Box::new(|i, o| ftail_export::folded::write(i, Weight::SelfTime, o)),
        expect![[r#"
            0x1000 100
            # $DIR/absent: No such file or directory (os error 2); no place to look for a copy with the recorded id (--symbols-dir); its addresses are shown unnamed
        "#]],
    );
}

/// Decodes a Perfetto trace into one line per field, nested messages
/// indented: the messages by field path, from the schema.
fn decode(buf: &[u8]) -> String {
    fn varint(b: &[u8], at: &mut usize) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let byte = b[*at];
            *at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return v;
            }
            shift += 7;
        }
    }
    // Length-delimited fields that are messages, by path of field
    // numbers.
    const MESSAGES: &[&str] = &[
        "1", "1.6", "1.6.1", "1.11", "1.11.4", "1.12", "1.12.2", "1.12.3", "1.12.4", "1.59",
        "1.59.11", "1.60", "1.60.3", "1.60.4",
    ];
    fn walk(b: &[u8], path: &str, depth: usize, out: &mut String) {
        let mut at = 0;
        while at < b.len() {
            let key = varint(b, &mut at);
            let (field, wire) = (key >> 3, key & 7);
            let p = if path.is_empty() {
                field.to_string()
            } else {
                format!("{path}.{field}")
            };
            let pad = "  ".repeat(depth);
            match wire {
                0 => out.push_str(&format!("{pad}{field}: {}\n", varint(b, &mut at))),
                2 => {
                    let n = varint(b, &mut at) as usize;
                    let body = &b[at..at + n];
                    at += n;
                    if MESSAGES.contains(&p.as_str()) {
                        out.push_str(&format!("{pad}{field} {{\n"));
                        walk(body, &p, depth + 1, out);
                        out.push_str(&format!("{pad}}}\n"));
                    } else {
                        out.push_str(&format!(
                            "{pad}{field}: {:?}\n",
                            String::from_utf8_lossy(body)
                        ));
                    }
                }
                w => panic!("wire type {w} at {p}"),
            }
        }
    }
    let mut out = String::new();
    walk(buf, "", 0, &mut out);
    out
}

#[test]
fn perfetto() {
    let (out, notes) = export(&Filters::default(), Box::new(ftail_export::perfetto::write));
    expect![[r#"
        1 {
          10: 1
          6 {
            1 {
              1: 6
              2: 0
            }
            1 {
              1: 1
              2: 1700000000000000000
            }
            2: 6
          }
        }
        1 {
          10: 1
          60 {
            1: 1
            3 {
              1: 7
              2: "/bin/prog"
              2: "arg"
              6: "prog"
            }
          }
        }
        1 {
          10: 2
          13: 1
          60 {
            1: 4294967296
            5: 1
            4 {
              1: 7
              2: 8
              5: "main"
            }
          }
          59 {
            11 {
              11: 4294967296
            }
          }
          12 {
            3 {
              1: 1
              2: "exit"
            }
            3 {
              1: 2
              2: "resumed"
            }
            3 {
              1: 3
              2: "count"
            }
          }
        }
        1 {
          8: 10
          10: 2
          13: 2
          12 {
            2 {
              1: 1
              2: "0x1000"
            }
          }
          11 {
            9: 1
            10: 1
          }
        }
        1 {
          8: 20
          10: 2
          13: 2
          12 {
            2 {
              1: 2
              2: "0x2000"
            }
          }
          11 {
            9: 1
            10: 2
          }
        }
        1 {
          8: 30
          10: 2
          11 {
            9: 2
            4 {
              1: 1
              6: "tail call"
            }
          }
        }
        1 {
          8: 40
          10: 2
          13: 2
          12 {
            2 {
              1: 3
              2: "0x3000"
            }
          }
          11 {
            9: 1
            10: 3
          }
        }
        1 {
          8: 45
          10: 2
          11 {
            9: 2
            4 {
              1: 1
              6: "switched out"
            }
          }
        }
        1 {
          8: 50
          10: 2
          13: 2
          12 {
            2 {
              1: 4
              2: "0x4000"
            }
          }
          11 {
            9: 1
            10: 4
          }
        }
        1 {
          8: 55
          10: 2
          11 {
            9: 2
          }
        }
        1 {
          8: 60
          10: 2
          13: 2
          11 {
            9: 1
            10: 3
            4 {
              1: 2
              2: 1
            }
          }
        }
        1 {
          8: 65
          10: 2
          11 {
            9: 2
          }
        }
        1 {
          8: 70
          10: 2
          13: 2
          12 {
            2 {
              1: 5
              2: "0x5000"
            }
          }
          11 {
            9: 1
            10: 5
          }
        }
        1 {
          8: 72
          10: 2
          13: 2
          12 {
            2 {
              1: 6
              2: "0x6000"
            }
          }
          11 {
            9: 1
            10: 6
          }
        }
        1 {
          8: 75
          10: 2
          11 {
            9: 2
            4 {
              1: 1
              6: "unwound"
            }
          }
        }
        1 {
          8: 80
          10: 2
          11 {
            9: 2
          }
        }
        1 {
          8: 90
          10: 2
          11 {
            9: 2
          }
        }
        1 {
          8: 100
          10: 2
          13: 2
          12 {
            2 {
              1: 7
              2: "0x7000"
            }
          }
          11 {
            9: 1
            10: 7
          }
        }
        1 {
          8: 100
          10: 2
          13: 2
          12 {
            2 {
              1: 9223372036854775809
              2: "events lost"
            }
          }
          11 {
            9: 3
            10: 9223372036854775809
            4 {
              1: 3
              3: 3
            }
          }
        }
        1 {
          10: 3
          13: 1
          60 {
            1: 4294967297
            5: 1
            4 {
              1: 7
              2: 9
              5: "worker"
            }
          }
          59 {
            11 {
              11: 4294967297
            }
          }
          12 {
            3 {
              1: 1
              2: "exit"
            }
            3 {
              1: 2
              2: "resumed"
            }
            3 {
              1: 3
              2: "count"
            }
          }
        }
        1 {
          8: 200
          10: 3
          13: 2
          12 {
            2 {
              1: 1
              2: "0x1000"
            }
          }
          11 {
            9: 1
            10: 1
          }
        }
        1 {
          8: 210
          10: 3
          13: 2
          12 {
            2 {
              1: 2
              2: "0x2000"
            }
          }
          11 {
            9: 1
            10: 2
          }
        }
        1 {
          8: 220
          10: 3
          13: 2
          12 {
            2 {
              1: 9223372036854775808
              2: "buffer full"
            }
          }
          11 {
            9: 3
            10: 9223372036854775808
          }
        }
        1 {
          8: 220
          10: 3
          11 {
            9: 2
            4 {
              1: 1
              6: "buffer full"
            }
          }
        }
        1 {
          8: 220
          10: 3
          11 {
            9: 2
            4 {
              1: 1
              6: "buffer full"
            }
          }
        }
        # $DIR/absent: No such file or directory (os error 2); no place to look for a copy with the recorded id (--symbols-dir); its addresses are shown unnamed
    "#]].assert_eq(&(decode(&out) + &notes));
}

#[test]
fn parquet_writes_the_three_tables() {
    let d = synthetic();
    let trace = TraceDir::open(d.path()).unwrap();
    let names = for_images(&trace.images);
    let progress = Progress::new();
    let input = Input {
        trace: &trace,
        names: &names,
        filters: &Filters::default(),
        tids: &[],
        srcline: false,
        progress: &progress,
    };
    let out = tempfile::tempdir().unwrap();
    ftail_export::parquet::write(&input, out.path()).unwrap();
    let mut files: Vec<String> = walk(out.path())
        .into_iter()
        .map(|p| p.strip_prefix(out.path()).unwrap().display().to_string())
        .collect();
    files.sort();
    expect![[r#"
        [
            "calls/image=7/thread-8.parquet",
            "calls/image=7/thread-9.parquet",
            "functions/image=7/functions.parquet",
            "threads/image=7/threads.parquet",
        ]
    "#]]
    .assert_debug_eq(&files);
    // Thread 8's calls, read back by the parquet crate's own reader.
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = std::fs::File::open(out.path().join("calls/image=7/thread-8.parquet")).unwrap();
    let reader = SerializedFileReader::new(file).unwrap();
    let rows: Vec<String> = reader
        .get_row_iter(None)
        .unwrap()
        .map(|r| r.unwrap().to_string())
        .collect();
    expect![[r#"
        {pid: 7, tid: 8, id: 2, parent: 1, parent_function: null, depth: 1, function: null, module: null, address: 8192, start_ns: 20, duration_ns: 10, self_ns: 10, exit: "tail", resumed: false}
        {pid: 7, tid: 8, id: 3, parent: 1, parent_function: null, depth: 1, function: null, module: null, address: 12288, start_ns: 40, duration_ns: 5, self_ns: 5, exit: "suspended", resumed: false}
        {pid: 7, tid: 8, id: 4, parent: 1, parent_function: null, depth: 1, function: null, module: null, address: 16384, start_ns: 50, duration_ns: 5, self_ns: 5, exit: "return", resumed: false}
        {pid: 7, tid: 8, id: 5, parent: 1, parent_function: null, depth: 1, function: null, module: null, address: 12288, start_ns: 60, duration_ns: 5, self_ns: 5, exit: "return", resumed: true}
        {pid: 7, tid: 8, id: 7, parent: 6, parent_function: null, depth: 2, function: null, module: null, address: 24576, start_ns: 72, duration_ns: 3, self_ns: 3, exit: "unwound", resumed: false}
        {pid: 7, tid: 8, id: 6, parent: 1, parent_function: null, depth: 1, function: null, module: null, address: 20480, start_ns: 70, duration_ns: 10, self_ns: 7, exit: "return", resumed: false}
        {pid: 7, tid: 8, id: 1, parent: null, parent_function: null, depth: 0, function: null, module: null, address: 4096, start_ns: 10, duration_ns: 80, self_ns: 45, exit: "return", resumed: false}
    "#]].assert_eq(&(rows.join("\n") + "\n"));
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

"""Reads the calls of what `ftail export --parquet` wrote back with DuckDB
(from PyPI): every call with its function's name, as the other checks
print calls; the calls table's column types; and how many calls have a
`parent_function` other than what a self-join on `parent` finds.

Prints JSON: {"calls": {tid: [[depth, name, duration_ns, exit, resumed,
start_ns, self_ns, children's duration_ns], ...]}, "types": {column: type},
"parent_function_mismatches": n, "with_parent_function": n}.
Usage: parquet_calls.py DIR
"""
import json
import sys

import duckdb

EXITS = {
    "return": "",
    "tail": "tail call",
    "unwound": "unwound",
    "suspended": "switched out",
    "truncated": "buffer full",
}


def main(directory):
    con = duckdb.connect()
    con.execute(
        f"CREATE VIEW calls AS SELECT * FROM read_parquet('{directory}/calls/*/*.parquet', "
        "hive_partitioning = true)"
    )
    con.execute(
        f"CREATE VIEW funcs AS SELECT * FROM read_parquet('{directory}/functions/*/*.parquet', "
        "hive_partitioning = true)"
    )
    out = {"calls": {}}
    out["types"] = {r[0]: r[1] for r in con.execute("DESCRIBE calls").fetchall()}
    rows = con.execute(
        """SELECT c.tid, c.depth, coalesce(f.name, printf('%#x', c.address)), c.duration_ns,
                  c.exit, c.resumed, c.start_ns, c.self_ns,
                  (SELECT coalesce(sum(k.duration_ns), 0) FROM calls k
                    WHERE k.image = c.image AND k.tid = c.tid AND k.parent = c.id)
           FROM calls c LEFT JOIN funcs f ON f.image = c.image AND f.id = c.function
           ORDER BY c.tid, c.id"""
    ).fetchall()
    for tid, depth, name, dur, exit, resumed, start, self_ns, children in rows:
        out["calls"].setdefault(str(tid), []).append(
            [depth, name, dur, EXITS[exit], resumed, start, self_ns, int(children)]
        )
    (out["parent_function_mismatches"], out["with_parent_function"]) = con.execute(
        """SELECT count(*) FILTER (WHERE c.parent_function IS DISTINCT FROM p.function),
                  count(c.parent_function)
           FROM calls c LEFT JOIN calls p
             ON p.image = c.image AND p.tid = c.tid AND p.id = c.parent"""
    ).fetchone()
    json.dump(out, sys.stdout, default=str)


if __name__ == "__main__":
    main(sys.argv[1])

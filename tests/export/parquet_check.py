"""Runs the README's example queries over what `ftail export --parquet`
wrote, with DuckDB (from PyPI): the ```sql blocks of README.md's
"Seeing a trace" section, with their directory `ftail.pq` replaced by
DIR. Also checks each table's schema.

Prints JSON: {"queries": [[row, ...] per query], "tables": {name: [column, ...]}}.
Usage: parquet_check.py DIR README.md
"""
import json
import re
import sys

import duckdb


def main(directory, readme):
    text = open(readme).read()
    section = text.split("## Seeing a trace", 1)[1].split("\n## ", 1)[0]
    queries = re.findall(r"```sql\n(.*?)```", section, re.S)
    if len(queries) < 2:
        sys.exit("parquet_check: the README shows fewer than two queries")
    con = duckdb.connect()
    out = {"queries": [], "tables": {}}
    for q in queries:
        rows = con.execute(q.replace("ftail.pq", directory)).fetchall()
        out["queries"].append([list(r) for r in rows])
    for table in ("calls", "functions", "threads"):
        rel = con.execute(
            f"DESCRIBE SELECT * FROM read_parquet('{directory}/{table}/*/*.parquet', "
            "hive_partitioning = true)"
        ).fetchall()
        out["tables"][table] = [r[0] for r in rel]
    json.dump(out, sys.stdout, default=str)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

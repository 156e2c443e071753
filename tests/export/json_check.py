"""Reads back what `ftail dump --chrome` or `--speedscope` wrote, with
Python's own JSON parser, and checks its structure: Chrome's begin and
end events pair up per thread (each end names the call it ends), in time
order, and metadata names every process and thread; speedscope's file names its schema, and
every profile's open/close events are balanced and close the frame they
opened, in time order.

Prints the calls as JSON: per thread id, [depth, name, duration_ns,
exit note or "", resumed, arguments, return value] in order of entry
(the form perfetto_check.py prints; Chrome's `B` args `arg1`, `arg2`…
and `E` arg `retval`; speedscope has no values: [] and null).
Usage: json_check.py chrome|speedscope FILE
"""
import json
import re
import sys


def fail(msg):
    sys.exit(f"json_check: {msg}")


def chrome(doc):
    events = doc["traceEvents"]
    named_procs = {e["pid"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    named_threads = {e["tid"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    calls, stacks, last = {}, {}, {}
    for e in events:
        if e["ph"] in ("M", "i"):
            continue
        if e["ph"] not in ("B", "E"):
            fail(f"unexpected phase {e['ph']}")
        tid = e["tid"]
        if e["pid"] not in named_procs or tid not in named_threads:
            fail(f"event of an unnamed process or thread: {e}")
        if e["ts"] < last.get(tid, 0):
            fail(f"thread {tid}: time goes back at {e}")
        last[tid] = e["ts"]
        stack = stacks.setdefault(tid, [])
        args = e.get("args", {})
        if e["ph"] == "B":
            values = [args[f"arg{i}"] for i in range(1, len(args) + 1) if f"arg{i}" in args]
            if any(not isinstance(v, str) for v in values) or "retval" in args:
                fail(f"thread {tid}: bad values at {e}")
            call = [len(stack), e["name"], None, "", bool(args.get("resumed")), values, None]
            calls.setdefault(tid, []).append(call)
            stack.append((call, e["ts"]))
        else:
            if not stack:
                fail(f"thread {tid}: an end with nothing open: {e}")
            call, ts = stack.pop()
            if call[1] != e["name"]:
                fail(f"thread {tid}: {e['name']} ends while {call[1]} is open")
            call[2] = round((e["ts"] - ts) * 1000)
            call[3] = args.get("exit", "")
            call[6] = args.get("retval")
    for tid, stack in stacks.items():
        if stack:
            fail(f"thread {tid}: {len(stack)} calls never end")
    return calls


def speedscope(doc):
    if doc.get("$schema") != "https://www.speedscope.app/file-format-schema.json":
        fail("no speedscope schema")
    frames = doc["shared"]["frames"]
    calls = {}
    for p in doc["profiles"]:
        if p["type"] != "evented" or p["unit"] != "nanoseconds":
            fail(f"profile {p['name']}: not an evented profile in ns")
        tid = int(re.search(r"\((\d+)\)$", p["name"]).group(1))
        stack, out, last = [], [], p["startValue"]
        for e in p["events"]:
            if e["at"] < last:
                fail(f"profile {p['name']}: time goes back at {e}")
            last = e["at"]
            if e["type"] == "O":
                call = [len(stack), frames[e["frame"]]["name"], None, "", False, [], None]
                out.append(call)
                stack.append((e["frame"], e["at"], call))
            elif e["type"] == "C":
                frame, at, call = stack.pop()
                if frame != e["frame"]:
                    fail(f"profile {p['name']}: closes frame {e['frame']}, {frame} is open")
                call[2] = e["at"] - at
            else:
                fail(f"unknown event type {e['type']}")
        if stack:
            fail(f"profile {p['name']}: frames left open")
        if last > p["endValue"]:
            fail(f"profile {p['name']}: events after endValue")
        calls[tid] = out
    return calls


def main(kind, path):
    with open(path) as f:
        doc = json.load(f)
    calls = chrome(doc) if kind == "chrome" else speedscope(doc)
    json.dump({"calls": calls}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

"""Reads a Perfetto trace written by `ftail dump --perfetto` with
Perfetto's own schema (perfetto_trace_pb2 from PyPI's `perfetto`) and
checks it the way the trace processor would use it:

* every packet decodes; a thread's sequence starts with a packet that
  clears the incremental state and carries its track descriptor and
  the defaults naming that track; process descriptors come before the
  threads that refer to them;
* every interned iid (event name, debug annotation name, source location)
  is defined on its sequence before it is used;
* slices are balanced per track and timestamps never go back.

Prints the calls as JSON: per thread id, [depth, name, duration_ns,
exit note or "", resumed, arguments, return value] in order of entry;
the arguments are the string annotations `arg1`, `arg2`… of the slice's
begin, in order (every one from 1 up must be there), the return value the
`retval` annotation of its end (null when there is none).
Usage: perfetto_check.py TRACE
"""
import json
import sys

from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

TE = pb.TrackEvent


def fail(msg):
    sys.exit(f"perfetto_check: {msg}")


def main(path):
    trace = pb.Trace()
    with open(path, "rb") as f:
        trace.ParseFromString(f.read())
    processes = {}  # uuid -> pid
    threads = {}  # uuid -> tid
    seqs = {}  # sequence id -> state
    calls = {}  # tid -> list of calls
    instants = []
    for n, p in enumerate(trace.packet):
        seq = p.trusted_packet_sequence_id
        if not seq:
            fail(f"packet {n}: no trusted_packet_sequence_id")
        if p.HasField("clock_snapshot"):
            continue
        if p.HasField("track_descriptor") and p.track_descriptor.HasField("process"):
            d = p.track_descriptor
            processes[d.uuid] = d.process.pid
            if not d.process.process_name:
                fail(f"packet {n}: process {d.process.pid} has no name")
            continue
        state = seqs.get(seq)
        if p.HasField("track_descriptor"):
            d = p.track_descriptor
            if state is not None:
                fail(f"packet {n}: a second descriptor on sequence {seq}")
            if not p.sequence_flags & pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED:
                fail(f"packet {n}: first packet of sequence {seq} does not clear its state")
            if d.parent_uuid not in processes:
                fail(f"packet {n}: thread track before its process's descriptor")
            if processes[d.parent_uuid] != d.thread.pid:
                fail(f"packet {n}: thread's pid is not its process's")
            default = p.trace_packet_defaults.track_event_defaults.track_uuid
            if default != d.uuid:
                fail(f"packet {n}: defaults name track {default}, not {d.uuid}")
            threads[d.uuid] = d.thread.tid
            if not d.thread.thread_name:
                fail(f"packet {n}: thread {d.thread.tid} has no name")
            state = seqs[seq] = {
                "track": d.uuid,
                "names": {},
                "annotations": {},
                "locations": {},
                "stack": [],
                "last": 0,
            }
            calls[d.thread.tid] = []
        if state is None:
            fail(f"packet {n}: sequence {seq} used before its descriptor")
        i = p.interned_data
        for e in i.event_names:
            state["names"][e.iid] = e.name
        for e in i.debug_annotation_names:
            state["annotations"][e.iid] = e.name
        for e in i.source_locations:
            state["locations"][e.iid] = (e.file_name, e.line_number)
        if not p.HasField("track_event"):
            continue
        ev = p.track_event
        if ev.HasField("track_uuid") and ev.track_uuid != state["track"]:
            fail(f"packet {n}: event on another sequence's track")
        if p.timestamp < state["last"]:
            fail(f"packet {n}: time goes back on sequence {seq}")
        state["last"] = p.timestamp
        notes = {}
        for a in ev.debug_annotations:
            if a.HasField("name"):
                name = a.name
            elif a.name_iid not in state["annotations"]:
                fail(f"packet {n}: annotation name iid {a.name_iid} not interned")
            else:
                name = state["annotations"][a.name_iid]
            if name in notes:
                fail(f"packet {n}: annotation {name} twice")
            if name == "retval" or name.startswith("arg"):
                if not a.HasField("string_value"):
                    fail(f"packet {n}: value {name} is not a string")
                notes[name] = a.string_value
            else:
                notes[name] = a.string_value or a.bool_value or a.uint_value
        tid = threads[state["track"]]
        if ev.type == TE.TYPE_SLICE_BEGIN:
            if ev.name_iid not in state["names"]:
                fail(f"packet {n}: name iid {ev.name_iid} not interned")
            if ev.source_location_iid and ev.source_location_iid not in state["locations"]:
                fail(f"packet {n}: source location iid not interned")
            args = [notes[f"arg{i}"] for i in range(1, len(notes) + 1) if f"arg{i}" in notes]
            if len([k for k in notes if k.startswith("arg")]) != len(args):
                fail(f"packet {n}: arguments not numbered from arg1: {sorted(notes)}")
            if "retval" in notes:
                fail(f"packet {n}: a return value on a slice's begin")
            call = [len(state["stack"]), state["names"][ev.name_iid], None, "",
                    bool(notes.get("resumed")), args, None]
            calls[tid].append(call)
            state["stack"].append((call, p.timestamp))
        elif ev.type == TE.TYPE_SLICE_END:
            if not state["stack"]:
                fail(f"packet {n}: slice end with no slice open on thread {tid}")
            call, start = state["stack"].pop()
            call[2] = p.timestamp - start
            call[3] = notes.get("exit", "")
            call[6] = notes.get("retval")
            if any(k.startswith("arg") for k in notes):
                fail(f"packet {n}: arguments on a slice's end")
        elif ev.type == TE.TYPE_INSTANT:
            if ev.name_iid not in state["names"]:
                fail(f"packet {n}: instant name iid not interned")
            instants.append([tid, state["names"][ev.name_iid], notes.get("count", 0)])
        else:
            fail(f"packet {n}: unexpected event type {ev.type}")
    for seq, state in seqs.items():
        if state["stack"]:
            fail(f"sequence {seq}: {len(state['stack'])} slices never end")
    json.dump({"calls": calls, "instants": instants, "packets": len(trace.packet)},
              sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])

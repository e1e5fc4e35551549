"""The soak's audit: each session's stored log (the SQLite file, read-only) against what was
acknowledged and what was delivered.

* every prompt a client got a 2xx for is in the log exactly once;
* every stored worker event the server acknowledged (the workers' ``TETHER_ACK_LOG`` files) is in
  the log exactly once — except a worker's answer to the server's own ``initialize``, which the
  server consumes without storing (docs/protocol.md §4.4): a ``control_response`` whose request
  is not in the log;
* no uuid twice in a log; sequence numbers 1..N without a gap;
* each subscribe connection delivered a gap-free run of the log from its ``from_sequence_num``
  on, matching the log's uuid at every sequence number, nothing twice;
* every acknowledged prompt ran to the end of a turn (:mod:`bench.chaoslib.turns`: a turn on
  that prompt followed by a ``result`` before the next turn starts) in the log as it was once the
  faults had stopped and the quiet phase ended (before the shutdown, whose interruptions end turns
  too).
"""

from __future__ import annotations

import json
import pathlib
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from bench.chaoslib import turns
from bench.chaoslib.clients import SessionTrack, Subscriber
from tether.protocol.ids import id_body


@dataclass
class Findings:
    sessions: int = 0
    events_in_logs: int = 0
    prompts_acked: int = 0
    worker_events_acked: int = 0
    consumed: int = 0  # acknowledged answers to the server's own initialize (not stored, by design)
    distinct: int = 0  # distinct uuids acknowledged (an agent's echo of a prompt shares the prompt's uuid)
    lost: int = 0
    duplicated: int = 0
    gaps: int = 0
    delivery_gaps: int = 0  # a subscribe connection skipped a sequence number
    delivery_duplicates: int = 0  # a subscribe connection delivered a sequence number twice
    delivery_mismatches: int = 0  # a delivered (seq, uuid) that is not the log's
    unanswered: int = 0
    connections: int = 0
    frames_checked: int = 0
    details: list[str] = field(default_factory=list)

    @property
    def acknowledged(self) -> int:
        return self.prompts_acked + self.worker_events_acked

    @property
    def failed(self) -> bool:
        return bool(self.lost or self.duplicated or self.gaps or self.delivery_gaps or self.delivery_duplicates
                    or self.delivery_mismatches or self.unanswered)

    def note(self, text: str) -> None:
        if len(self.details) < 40:
            self.details.append(text)


Log = list[tuple[int, str, str]]


@dataclass
class Logs:
    events: dict[str, Log]  # session id body → [(seq, uuid, event_type)] in sequence order
    requests: dict[str, set[str]]  # session id body → request ids of the stored control requests
    markers: dict[str, dict[int, str | None]]  # session id body → turns started and results (turns.py)


def read_logs(db: pathlib.Path) -> Logs:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT session_id, seq, uuid, event_type, CASE WHEN event_type IN "
                           "('control_request', 'assistant') THEN payload END FROM events "
                           "ORDER BY session_id, seq").fetchall()
    finally:
        con.close()
    out = Logs(defaultdict(list), defaultdict(set), defaultdict(dict))
    for sid, seq, uuid, kind, payload in rows:
        key = id_body(sid)
        out.events[key].append((int(seq), str(uuid), str(kind)))
        parsed = json.loads(payload) if payload else {"type": kind}
        if kind == "control_request":
            out.requests[key].add(str(parsed.get("request_id")))
        is_marker, named = turns.marker(parsed)
        if is_marker:
            out.markers[key][int(seq)] = named
    return out


def read_acks(ack_dir: pathlib.Path) -> dict[str, dict[str, tuple[str, str | None]]]:
    """session id body → {uuid: (type, request id)} of stored worker events the server acknowledged."""
    acks: dict[str, dict[str, tuple[str, str | None]]] = defaultdict(dict)
    for path in sorted(ack_dir.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                acks[id_body(row["s"])][str(row["u"])] = (str(row["t"]), row.get("r"))
    return acks


def audit_world(db: pathlib.Path, ack_dir: pathlib.Path, tracks: list[SessionTrack],
                subscribers: list[Subscriber], quiet: Logs, out: Findings) -> None:
    """``quiet``: the logs as they were at the end of the quiet phase (:func:`read_logs`)."""
    final = read_logs(db)
    logs, requests = final.events, final.requests
    acks = read_acks(ack_dir)
    for track in tracks:
        key = id_body(track.sid)
        log = logs.get(key, [])
        out.sessions += 1
        out.events_in_logs += len(log)
        _check_log(key, log, out)
        present = Counter(u for _, u, _ in log)
        seq_of = {u: s for s, u, _ in log}
        markers = quiet.markers.get(key, {})
        out.prompts_acked += len(track.acked_prompts)
        for u, n in track.acked_prompts.items():
            if present[u] == 0:
                out.lost += 1
                out.note(f"{key}: acknowledged prompt {u} is not in the log")
            elif not turns.answered(markers, turns.prompt_text(n, track.sid)):
                out.unanswered += 1
                out.note(f"{key}: prompt {u} (seq {seq_of[u]}) never ran to a result")
        worker_acks = acks.get(key, {})
        out.worker_events_acked += len(worker_acks)
        out.distinct += len(set(track.acked_prompts) | set(worker_acks))
        for u, (kind, request_id) in worker_acks.items():
            if present[u] == 0 and kind == "control_response" and request_id not in requests.get(key, set()):
                out.consumed += 1
            elif present[u] == 0:
                out.lost += 1
                out.note(f"{key}: acknowledged worker event {u} is not in the log")
    by_session = {id_body(t.sid): logs.get(id_body(t.sid), []) for t in tracks}
    for sub in subscribers:
        _check_deliveries(sub, by_session.get(id_body(sub.track.sid), []), out)


def _check_log(key: str, log: Log, out: Findings) -> None:
    seqs = [s for s, _, _ in log]
    expected = list(range(1, len(seqs) + 1))
    if seqs != expected:
        missing = sorted(set(range(1, max(seqs, default=0) + 1)) - set(seqs))
        out.gaps += len(missing) or 1
        out.note(f"{key}: sequence numbers are not 1..N (missing {missing[:10]})")
    for u, n in Counter(u for _, u, _ in log).items():
        if n > 1:
            out.duplicated += n - 1
            out.note(f"{key}: uuid {u} is in the log {n} times")


def _check_deliveries(sub: Subscriber, log: Log, out: Findings) -> None:
    uuid_at = {s: u for s, u, _ in log}
    for i, conn in enumerate(sub.connections):
        out.connections += 1
        expected = conn.from_seq + 1
        seen: set[int] = set()
        for seq, uuid in conn.events:
            out.frames_checked += 1
            if seq in seen:
                out.delivery_duplicates += 1
                out.note(f"{sub.name} connection {i}: sequence_num {seq} delivered twice")
                continue
            seen.add(seq)
            if seq != expected:
                out.delivery_gaps += 1
                out.note(f"{sub.name} connection {i} (from {conn.from_seq}): got {seq}, expected {expected}")
            expected = seq + 1
            if uuid_at.get(seq) != uuid:
                out.delivery_mismatches += 1
                out.note(f"{sub.name} connection {i}: seq {seq} carried {uuid}, the log has {uuid_at.get(seq)}")

"""Redaction before the WAL: a canary corpus of 200 secrets and PII items sent through a real collector is
found nowhere afterwards (WAL and lake bytes, decoded lake rows, API answers, logs)."""

from __future__ import annotations

import json
import logging
import random
import string
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.ingest import Ingestor
from collector.metrics import IngestMetrics
from collector.redaction import RedactionConfigError, parse_redactor
from store.keys import create_key
from tests.conftest import grpc_export, query, start_api, start_collector

CONFIG = """
drop_keys = ["*.password", "http.request.header.authorization"]
builtin = ["api_key", "bearer", "aws_key", "card", "phone"]
hash_salt = "canary-salt"

[[mask]]
builtin = "email"
action = "hash"
"""

T0 = 1_700_000_000_000_000_000
ALNUM = string.ascii_letters + string.digits


# --- the canary corpus ---------------------------------------------------------------------------


def _luhn_complete(prefix: str) -> str:
    """``prefix`` plus the check digit that makes it Luhn-valid."""
    for check in "0123456789":
        digits = [int(c) for c in prefix + check]
        total = sum(d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(reversed(digits)))
        if total % 10 == 0:
            return prefix + check
    raise AssertionError("unreachable")


def canaries(count: int = 200) -> list[tuple[str, str]]:
    """(kind, value): distinct, deterministic secrets and PII of six kinds."""
    rng = random.Random(20240601)
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    i = 0
    while len(out) < count:
        kind = ("api_key", "email", "card", "bearer", "aws_key", "phone")[i % 6]
        if kind == "api_key":
            prefix = "sk-proj-" if i % 12 == 0 else "sk-"
            value = prefix + "".join(rng.choices(ALNUM, k=40))
        elif kind == "email":
            user = "".join(rng.choices(string.ascii_lowercase, k=8))
            value = f"{user}.{i}@{rng.choice(['example.com', 'acme.co.uk', 'mail.test.org'])}"
        elif kind == "card":
            number = _luhn_complete(rng.choice(["4", "5"]) + "".join(rng.choices(string.digits, k=14)))
            value = " ".join(number[j : j + 4] for j in range(0, 16, 4)) if i % 2 else number
        elif kind == "bearer":
            value = "Bearer " + "".join(rng.choices(ALNUM + "._-", k=36))
        elif kind == "aws_key":
            value = "AKIA" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=16))
        else:
            area = rng.randint(200, 989)
            value = (
                f"+1 {area} 555 {i:04d}"
                if i % 4 == 1
                else f"+44 20 7946 {i:04d}"
                if i % 4 == 3
                else f"({area}) 555-{i:04d}"
            )
        i += 1
        if value not in seen:
            seen.add(value)
            out.append((kind, value))
    return out


def needles(corpus: list[tuple[str, str]]) -> list[str]:
    """What must not be found: each value, plus its bare token / digits where a prefix or spaces could hide it."""
    found: list[str] = []
    for kind, value in corpus:
        found.append(value)
        if kind == "bearer":
            found.append(value.split(" ", 1)[1])
        if kind == "card" and " " in value:
            found.append(value.replace(" ", ""))
    return found


DROPPED = [f"hunter2-pw-{n}" for n in range(40)] + [f"Basic dXNlcjpwYXNzd29yZC{n}" for n in range(40)]


def _kv(key: str, value: Any) -> KeyValue:
    return KeyValue(key=key, value=_any(value))


def _any(value: Any) -> AnyValue:
    if isinstance(value, dict):
        result = AnyValue()
        result.kvlist_value.values.extend(_kv(k, v) for k, v in value.items())
        return result
    if isinstance(value, list):
        result = AnyValue()
        result.array_value.values.extend(_any(v) for v in value)
        return result
    if isinstance(value, int):
        return AnyValue(int_value=value)
    return AnyValue(string_value=value)


def build_requests(
    corpus: list[tuple[str, str]], traces: int = 4, spans_per_trace: int = 10
) -> tuple[ExportTraceServiceRequest, ExportLogsServiceRequest]:
    """Every canary placed once: span/event/link/resource attributes (flat, nested, in arrays, in JSON message
    strings), span names, status messages, log bodies (string and structured) and log attributes."""
    traces_req, logs_req = ExportTraceServiceRequest(), ExportLogsServiceRequest()
    spans: list[Span] = []
    groups = []
    for t in range(traces):
        group = traces_req.resource_spans.add()
        group.resource.attributes.append(_kv("service.name", "canary-agent"))
        groups.append(group)
        scope = group.scope_spans.add()
        scope.scope.name = "canary"
        for s in range(spans_per_trace):
            span = scope.spans.add()
            span.trace_id = bytes([t + 1]) * 16
            span.span_id = bytes([t + 1, s + 1]) * 4
            if s:
                span.parent_span_id = bytes([t + 1, 1]) * 4
            span.name = "chat gpt-4o" if s else "agent run"
            span.start_time_unix_nano = T0 + t * 10**9 + s * 10**6
            span.end_time_unix_nano = span.start_time_unix_nano + 10**6
            span.attributes.append(_kv("gen_ai.operation.name", "chat" if s else "invoke_agent"))
            spans.append(span)
    log_group = logs_req.resource_logs.add()
    log_group.resource.attributes.append(_kv("service.name", "canary-agent"))
    log_scope = log_group.scope_logs.add()

    for n, (_, value) in enumerate(corpus):
        span = spans[n % len(spans)]
        where = n % 10
        if where == 0:
            span.attributes.append(_kv(f"user.note.{n}", f"please use {value} now"))
        elif where == 1:
            event = span.events.add(time_unix_nano=span.start_time_unix_nano, name="note")
            event.attributes.append(_kv("detail", f"value={value};"))
        elif where == 2:
            groups[n % len(groups)].resource.attributes.append(_kv(f"deploy.owner.{n}", value))
        elif where == 3:
            record = _log(log_scope.log_records.add(), span, n)
            record.body.string_value = f"User said: my secret is {value}"
        elif where == 4:
            span.attributes.append(_kv(f"http.headers.{n}", {"x-forwarded": {"token": value}, "list": [value, "ok"]}))
        elif where == 5:
            span.status.code = 2
            span.status.message += f"auth failed for {value}; "
        elif where == 6:
            record = _log(log_scope.log_records.add(), span, n)
            record.body.CopyFrom(_any({"content": f"call me: {value}", "role": "user"}))
            record.attributes.append(_kv("gen_ai.system", "openai"))
            record.attributes.append(_kv("client.detail", value))
        elif where == 7:
            messages = [{"role": "user", "parts": [{"type": "text", "content": f"my details: {value}"}]}]
            span.attributes.append(_kv("gen_ai.input.messages", json.dumps(messages)))
        elif where == 8:
            link = span.links.add(trace_id=bytes([9]) * 16, span_id=bytes([9]) * 8)
            link.attributes.append(_kv("origin", value))
        else:
            span.events.add(time_unix_nano=span.start_time_unix_nano, name=f"retry {value}")
    for n, secret in enumerate(DROPPED):
        span = spans[n % len(spans)]
        key = "db.password" if secret.startswith("hunter2") else "http.request.header.authorization"
        span.attributes.append(_kv(key, secret))
    return traces_req, logs_req


def _log(record: LogRecord, span: Span, n: int) -> LogRecord:
    record.trace_id = span.trace_id
    record.span_id = span.span_id
    record.time_unix_nano = span.start_time_unix_nano + n
    record.event_name = "gen_ai.user.message"
    return record


# --- end to end ----------------------------------------------------------------------------------


def _texts_under(root: Path) -> list[tuple[Path, str]]:
    return [(p, p.read_bytes().decode("latin-1")) for p in root.rglob("*") if p.is_file()]


def test_canaries_are_nowhere_after_ingest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    corpus = canaries()
    assert len({v for _, v in corpus}) == 200
    secret_needles = needles(corpus) + DROPPED
    data = tmp_path / "data"
    (data / "redaction").mkdir(parents=True)
    (data / "redaction" / "default.toml").write_text(CONFIG)
    key, _ = create_key(data / "keys.json", "default")
    auth = [("authorization", f"Bearer {key}")]
    traces_req, logs_req = build_requests(corpus)
    # The request really carries every canary (so the checks below are not vacuous).
    wire = traces_req.SerializeToString() + logs_req.SerializeToString()
    assert all(v.encode() in wire for v in [v for _, v in corpus] + DROPPED)

    collector = start_collector(data)
    try:
        grpc_export(collector.grpc_port, traces_req.SerializeToString(), metadata=auth)
        # logs over the other receiver: OTLP/HTTP protobuf
        answer = httpx.post(
            f"http://127.0.0.1:{collector.http_port}/v1/logs",
            content=logs_req.SerializeToString(),
            headers={"content-type": "application/x-protobuf", "authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        # and once more as JSON, from the same protobuf (the JSON path converts, then redacts)
        answer = httpx.post(
            f"http://127.0.0.1:{collector.http_port}/v1/logs",
            content=_logs_json(logs_req),
            headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        collector.flush()
        # WAL segments are written before the ack: check them before anything is truncated.
        wal_text = "\n".join(text for _, text in _texts_under(collector.settings.wal_dir))
        assert "[REDACTED:api_key]" in wal_text

        spans = query(collector, "SELECT count(*) FROM spans", "default")[0][0]
        assert spans == 40
        lake_rows = []
        for view in ("spans_raw", "events_raw", "span_content", "spans_with_content"):
            lake_rows += [repr(row) for row in query(collector, f"SELECT * FROM {view}", "default")]
        lake_text = "\n".join(lake_rows)
        for marker in ("[REDACTED:api_key]", "[REDACTED:card]", "[REDACTED:bearer]", "[REDACTED:phone]", "[email:"):
            assert marker in lake_text, marker
        assert "canary-agent" in lake_text

        api = start_api(collector.settings)
        answers: list[str] = []
        try:
            with api.client(key) as client:
                listing = client.get("/traces", params={"limit": 100})
                assert listing.status_code == 200
                answers.append(listing.text)
                trace_ids = [t["trace_id"] for t in listing.json()["traces"]]
                assert len(trace_ids) == 4
                for trace_id in trace_ids:
                    tree = client.get(f"/traces/{trace_id}", params={"content": True})
                    assert tree.status_code == 200
                    answers.append(tree.text)
                    exported = client.get(f"/traces/{trace_id}/export")
                    answers.append(exported.text)
                    span_ids = {
                        row[0]
                        for row in query(
                            collector, f"SELECT span_id FROM spans WHERE trace_id = '{trace_id}'", "default"
                        )
                    }
                    for span_id in span_ids:
                        detail = client.get(f"/traces/{trace_id}/spans/{span_id}")
                        assert detail.status_code == 200
                        answers.append(detail.text)
        finally:
            api.stop()
        api_text = "\n".join(answers)
        assert "[REDACTED:" in api_text
    finally:
        collector.stop()

    files = _texts_under(data)
    assert any(p.suffix == ".parquet" for p, _ in files)
    everywhere = {
        "files": "\n".join(text for _, text in files),
        "wal": wal_text,
        "lake rows": lake_text,
        "api": api_text,
        "logs": caplog.text,
    }
    leaks = [(where, n) for where, text in everywhere.items() for n in secret_needles if n in text]
    assert leaks == [], f"{len(leaks)} canaries leaked, first: {leaks[:5]}"
    snapshot = collector.metrics.snapshot()["redactions"]
    assert isinstance(snapshot, dict) and snapshot["drop_keys"] == len(DROPPED) * 1


def _logs_json(request: ExportLogsServiceRequest) -> bytes:
    from google.protobuf.json_format import MessageToDict

    body = MessageToDict(request)
    for group in body["resourceLogs"]:
        for scope in group["scopeLogs"]:
            for record in scope["logRecords"]:
                for key in ("traceId", "spanId"):
                    if key in record:
                        import base64

                        record[key] = base64.b64decode(record[key]).hex()
    return json.dumps(body).encode()


def test_project_without_config_is_untouched(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "redaction").mkdir(parents=True)
    (data / "redaction" / "default.toml").write_text(CONFIG)
    other_key, _ = create_key(data / "keys.json", "other")
    traces_req, _ = build_requests(canaries(20), traces=1, spans_per_trace=5)
    collector = start_collector(data)
    try:
        grpc_export(
            collector.grpc_port, traces_req.SerializeToString(), metadata=[("authorization", f"Bearer {other_key}")]
        )
        collector.flush()
        rows = "\n".join(repr(r) for r in query(collector, "SELECT * FROM spans_raw", "other"))
    finally:
        collector.stop()
    assert "[REDACTED" not in rows
    assert canaries(20)[0][1] in rows and "hunter2-pw-" in rows  # (duplicate keys: the last copy is kept)


def test_fast_path_keeps_the_original_bytes() -> None:
    traces_req, _ = build_requests(canaries(12), traces=1, spans_per_trace=3)
    body = traces_req.SerializeToString()
    redactor = parse_redactor(CONFIG, source="default.toml")
    ingestor = Ingestor(
        wal=None,  # type: ignore[arg-type]
        keys=None,  # type: ignore[arg-type]
        metrics=IngestMetrics(),
        max_request_bytes=1 << 26,
        max_inflight_bytes=1 << 26,
        max_wal_backlog_bytes=1 << 30,
        redactors={"default": redactor},
    )
    assert ingestor.admit("traces", body, "protobuf", "other").wal_bytes is body
    redacted = ingestor.admit("traces", body, "protobuf", "default")
    assert redacted.accepted == 3 and redacted.wal_bytes != body
    assert ingestor.metrics.snapshot()["redactions"]
    # nothing to redact: the same bytes come back
    clean = ExportTraceServiceRequest()
    clean.CopyFrom(traces_req)
    for span in clean.resource_spans[0].scope_spans[0].spans:
        del span.attributes[:]
        del span.events[:]
        del span.links[:]
        span.name = "x"
        span.status.message = ""
    del clean.resource_spans[0].resource.attributes[:]
    clean_body = clean.SerializeToString()
    out, counts = redactor.redact_traces(clean_body)
    assert out is clean_body and not counts


# --- pure unit tests -----------------------------------------------------------------------------


def test_hashing_is_stable_and_salted() -> None:
    redactor = parse_redactor(CONFIG, source="a.toml")
    a1 = redactor.redact_text("from alice@example.com")
    a2 = redactor.redact_text("to alice@example.com!")
    b = redactor.redact_text("from bob@example.com")
    assert a1.startswith("from [email:") and "alice" not in a1
    assert a1[5:] == a2[3:-1]  # the same value always hashes the same
    assert a1 != b
    salted = parse_redactor(CONFIG.replace("canary-salt", "other-salt"), source="b.toml")
    assert salted.redact_text("from alice@example.com") != a1


@pytest.mark.parametrize(
    "text",
    [
        "order 4111111111111112 shipped",  # 16 digits but not Luhn-valid
        "on 2024-01-15 at 10:30",
        "ts=1712345678901 count=12345",
        "trace 4bf92f3577b34da6a3ce929d0e0e4736",
        "sk-short",
        "version 3.11.7",
    ],
)
def test_ordinary_values_are_left_alone(text: str) -> None:
    redactor = parse_redactor(CONFIG, source="a.toml")
    assert redactor.redact_text(text) == text


@pytest.mark.parametrize(("kind", "value"), canaries(24))
def test_every_builtin_catches_its_canaries(kind: str, value: str) -> None:
    redactor = parse_redactor(CONFIG, source="a.toml")
    out = redactor.redact_text(f"x {value} y")
    assert value not in out, out
    expected = f"[{kind}:" if kind == "email" else f"[REDACTED:{kind}]"
    assert expected in out


def test_drop_keys_match_globs_and_nested_paths() -> None:
    redactor = parse_redactor('drop_keys = ["*.password", "headers.authorization"]', source="a.toml")
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.attributes.extend(
        [
            _kv("DB.Password", "x1"),
            _kv("password", "kept-bare-key-does-not-match-glob"),
            _kv("headers", {"authorization": "x2", "accept": "json"}),
        ]
    )
    out, counts = redactor.redact_traces(request.SerializeToString())
    result = ExportTraceServiceRequest.FromString(out).resource_spans[0].scope_spans[0].spans[0]
    assert [kv.key for kv in result.attributes] == ["password", "headers"]
    assert [kv.key for kv in result.attributes[1].value.kvlist_value.values] == ["accept"]
    assert result.dropped_attributes_count == 1 and counts["drop_keys"] == 2


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[[mask]]\nname = "x"\npattern = "a("', "'pattern'"),
        ('[[mask]]\nname = "x"\npattern = "a"\naction = "encrypt"', "'action'"),
        ('builtin = ["ssn"]', "'builtin'"),
        ('[[mask]]\nbuiltin = "ssn"', "'builtin'"),
        ('[[mask]]\npattern = "a"', "'name'"),
        ('[[mask]]\nname = "x"\npattern = "a*"', "'pattern'"),
        ('[[mask]]\nname = "x"\npattern = "a(?i)b"', "'pattern'"),
        ('drop_keys = "x"', "'drop_keys'"),
        ('dropkeys = ["x"]', "'dropkeys'"),
        ("hash_salt = 3\nbuiltin = ['email']", "'hash_salt'"),
    ],
)
def test_bad_config_names_file_and_setting(text: str, named: str) -> None:
    with pytest.raises(RedactionConfigError) as info:
        parse_redactor(text, source="/data/redaction/acme.toml")
    assert "/data/redaction/acme.toml" in str(info.value) and named in str(info.value)


def test_bad_config_stops_collector_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "redaction").mkdir(parents=True)
    (data / "redaction" / "acme.toml").write_text('[[mask]]\nname = "x"\npattern = "[unclosed"\n')
    with pytest.raises(RedactionConfigError, match=r"acme\.toml.*'pattern'"):
        start_collector(data)


def test_logs_are_redacted_in_body_and_attributes() -> None:
    redactor = parse_redactor(CONFIG, source="a.toml")
    request = ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add()
    record.body.CopyFrom(_any({"content": "key sk-" + "a" * 30, "n": 3}))
    record.attributes.append(_kv("x.password", "p"))
    out, counts = redactor.redact_logs(request.SerializeToString())
    result = ExportLogsServiceRequest.FromString(out).resource_logs[0].scope_logs[0].log_records[0]
    assert result.body.kvlist_value.values[0].value.string_value == "key [REDACTED:api_key]"
    assert not result.attributes and counts == {"api_key": 1, "drop_keys": 1}

"""The JSON texts ingest writes (message columns, raw attribute/event/link/resource columns) are the standard
library encoder's, byte for byte, although orjson writes most of them (collector.messages._dumps_parsed,
collector.rows._raw_json)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

import collector.messages as messages
from collector.decode import SmallFloatAttributes, decode_traces
from collector.messages import clear_memos, dumps, otel_messages
from collector.normalise import normalise_span
from collector.otlp_model import DecodedSpan
from collector.pricing import Pricer
from collector.rows import IngestStats, PartitionBuffer


def _standard(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


_ODD_FLOATS = (1e-05, 1e-07, 3.2e-09, 5e-324, -2.5e-06, 0.0001, 1e-10, 1e16, -0.0, math.nan, math.inf, -math.inf)
_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.sampled_from(_ODD_FLOATS),
    st.text(),
    st.sampled_from(["\ud800", "a\udc00b", "\u2028", "\x7f", "\x00\x1f", 'q"\\/']),
)
_value = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=4), inner, max_size=4),
        st.tuples(inner, inner),
    ),
    max_leaves=12,
)


@settings(max_examples=1500, deadline=None)
@given(value=_value)
def test_orjson_text_of_parsed_json_is_the_standard_text(value: Any) -> None:
    # a value as the JSON parser returns it (odd numbers included): _dumps_parsed writes the standard text
    text = _standard(value)
    before = messages._ODD_NUMBERS.seen
    parsed = messages.loads(text)
    assert messages._dumps_parsed(parsed, before) == _standard(parsed)
    assert dumps(value) == text


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        ({2: "a", True: "b", None: "c", 1.5: "d"}, True),
        ([2**64], True),
        ({"k": "\ud800"}, True),
        ({"k": [1e-05, "null"]}, False),
        ([float("nan")], False),
    ],
)
def test_odd_values_take_the_standard_encoder(value: Any, refused: bool) -> None:
    # an odd number parsed meanwhile: the standard encoder
    assert messages._dumps_parsed(value, messages._ODD_NUMBERS.seen - 1) == _standard(value)
    if refused:  # what orjson refuses takes it too, odd numbers or not
        assert messages._dumps_parsed(value, messages._ODD_NUMBERS.seen) == _standard(value)


@pytest.mark.parametrize("number", ["1e-7", "1e-07", "0.00001", "1E-5", "2.5e-9", "1e400", "NaN", "-Infinity", "0.5"])
def test_message_columns_with_odd_numbers_are_the_standard_text(number: str) -> None:
    # orjson's own spelling of a small float ("1e-7") must not pass for canonical, nor be written for NaN
    text = '[{"role":"assistant","parts":[{"type":"tool_call","id":"c","name":"f","arguments":{"x":' + number + "}}]}]"
    clear_memos()
    for _ in range(2):  # the memo cold, then warm
        result = normalise_span(
            DecodedSpan(
                trace_id="01" * 16, span_id="02" * 8, parent_span_id=None, name="chat m", kind="CLIENT",
                start_time_unix_nano=1, end_time_unix_nano=2, status_code="UNSET", status_message="",
                attributes={"gen_ai.operation.name": "chat", "gen_ai.input.messages": text,
                            "gen_ai.output.messages": text},
            )
        )  # fmt: skip
        expected = _standard(otel_messages(text, "user"))
        assert result["input_messages"] == expected
        assert result["output_messages"] == expected


def _kv(key: str, **value: Any) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


def _request(attributes: list[KeyValue]) -> bytes:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend([_kv("service.name", string_value="svc"), *attributes])
    span = resource_spans.scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = b"\x01" * 16, b"\x02" * 8, "s"
    span.start_time_unix_nano, span.end_time_unix_nano = 1_700_000_000_000_000_000, 1_700_000_000_000_000_001
    span.attributes.extend(attributes)
    event = span.events.add()
    event.name, event.time_unix_nano = "e", 1_700_000_000_000_000_000
    event.attributes.extend(attributes)
    link = span.links.add()
    link.trace_id, link.span_id = b"\x03" * 16, b"\x04" * 8
    link.attributes.extend(attributes)
    return request.SerializeToString()


_SMALL_IN_A_LIST = _kv("l", array_value=ArrayValue(values=[AnyValue(string_value="a"), AnyValue(double_value=2e-06)]))
_SMALL_IN_A_KVLIST = _kv("m", kvlist_value=KeyValueList(values=[_kv("x", double_value=-7e-09)]))


@pytest.mark.parametrize(
    ("attributes", "small"),
    [
        ([_kv("s", string_value='q "x"\n é'), _kv("i", int_value=-(2**63)), _kv("d", double_value=0.25)], False),
        ([_kv("d", double_value=1e-05), _kv("b", bool_value=True)], True),
        ([_SMALL_IN_A_LIST], True),
        ([_SMALL_IN_A_KVLIST, _kv("n", double_value=float("nan")), _kv("y", bytes_value=b"\x00\xff")], True),
    ],
)
def test_raw_json_columns_are_the_standard_text(attributes: list[KeyValue], small: bool) -> None:
    spans, _ = decode_traces(_request(attributes))
    span = spans[0]
    assert isinstance(span.attributes, SmallFloatAttributes) == small
    assert isinstance(span.resource, SmallFloatAttributes) == small
    buffer = PartitionBuffer()
    buffer.add_spans("p", 1, spans, Pricer(), IngestStats())
    row = buffer.drain()[0][3].to_pylist()[0]
    assert row["attributes"] == _standard(span.attributes)
    assert row["resource"] == _standard(span.resource)
    event, link = span.events[0], span.links[0]
    events = [{"name": "e", "time_unix_nano": event.time_unix_nano, "attributes": event.attributes}]
    assert row["events"] == _standard(events)
    assert row["links"] == _standard(
        [{"trace_id": link.trace_id, "span_id": link.span_id, "attributes": link.attributes}]
    )

"""Message content converters: every docs/conventions.md §2 content source (OTel JSON / structured values, legacy
indexed keys, OpenInference, ≤1.36 events, Pydantic AI, Langfuse, Vercel AI SDK, Strands/Bedrock, Gemini) ->
canonical OTel part form ``[{"role", "parts": [...], "name"?, "finish_reason"?}]``; also the per-log-record
extraction (``messages_from_log``)."""

from __future__ import annotations

import json
import json.encoder
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

import orjson

from collector.otlp_model import DecodedLog, SpanEvent

logger = logging.getLogger(__name__)

Message = dict[str, Any]
Part = dict[str, Any]


class _OddNumbers:
    """How many numbers JSON parsing (``loads``) has produced that orjson writes unlike the standard encoder: a
    float under 1e-4 in magnitude (``1e-05`` there is ``0.00001`` or ``1e-5`` in orjson) and NaN / ±Infinity
    (``null`` in orjson). A value converted from a text whose parse left the count unchanged holds none of them,
    so orjson's text of it is the standard one (``_dumps_parsed``). Increments are locked, so the count only
    grows: another thread's parse can make a reader fall back to the checked path, never skip it."""

    __slots__ = ("_lock", "seen")

    def __init__(self) -> None:
        self.seen = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.seen += 1


_ODD_NUMBERS = _OddNumbers()
_FLOAT_MAX = sys.float_info.max
# The standard decoder's constants (one object each, as json.decoder returns them).
_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _parse_float(token: str) -> float:
    number = float(token)
    if not (1e-4 <= abs(number) <= _FLOAT_MAX or number == 0.0):  # small, or out of range ("1e400" is inf)
        _ODD_NUMBERS.add()
    return number


def _parse_constant(token: str) -> float:
    _ODD_NUMBERS.add()
    return _CONSTANTS[token]


# The standard decoder, counting odd numbers; its values are the same (the hooks run only for floats, which
# message content seldom holds).
_DECODER = json.JSONDecoder(parse_float=_parse_float, parse_constant=_parse_constant)


def _default(value: Any) -> str:
    """JSON fallback for values JSON cannot encode (never produced by the OTLP decoder): their text."""
    return str(value)


# Compact, non-ASCII kept: the form every JSON text column is written in.
ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_default)
# JSONEncoder.encode builds a C encoder on every call; build it once (no circular-reference markers: the values
# come from JSON / OTLP and cannot be circular; a pathological depth ends in RecursionError, handled in dumps).
_C_MAKE_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODE: Callable[[Any, int], Any] | None = (
    _C_MAKE_ENCODER(None, _default, json.encoder.encode_basestring, None, ":", ",", False, False, True)
    if _C_MAKE_ENCODER is not None
    else None
)

# orjson writes the standard encoder's text for str (non-ASCII kept, the same escapes), int, bool, None, list and
# dict (keys in order) and floats other than the odd ones above, at a fifth of the cost (a benchmark span's
# attributes, ~2 KB: 1.6 instead of 7.5 µs). Dataclasses, datetimes and subclasses of str/int/dict/list it would
# encode its own way: passed through, they raise, as do non-str keys, ints over 64 bits and lone surrogates, and
# take the standard encoder.
ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS
_orjson_dumps = orjson.dumps

# Indexed attribute families: key prefix -> family name (the part after the prefix starts with an index).
INDEXED_FAMILIES: tuple[tuple[str, str], ...] = (
    ("gen_ai.prompt.", "gen_ai.prompt"),
    ("gen_ai.completion.", "gen_ai.completion"),
    ("llm.input_messages.", "llm.input_messages"),
    ("llm.output_messages.", "llm.output_messages"),
    ("llm.prompts.", "llm.prompts"),
    ("llm.choices.", "llm.choices"),
)

_ROLE_PREFIXES = ("system: ", "user: ", "assistant: ", "tool: ", "developer: ")
_UNTYPED_PART_KEYS = (
    "text",
    "toolUse",
    "toolResult",
    "functionCall",
    "functionResponse",
    "reasoningContent",
    "inlineData",
    "fileData",
    "image",
    "document",
)


# --------------------------------------------------------------------------------------------------- JSON helpers


def loads(text: str) -> Any:
    """``json.loads`` without its per-call overhead; raises ValueError on anything but one JSON document."""
    if text[:1].isspace() or text[-1:].isspace():
        text = text.strip()
    value, end = _DECODER.raw_decode(text)
    if end != len(text):
        raise ValueError("extra data after JSON document")
    return value


def try_json(text: str) -> tuple[bool, Any]:
    """(True, value) when ``text`` is one JSON document, else (False, None). Never raises."""
    try:
        return True, loads(text)
    except (ValueError, RecursionError):
        return False, None


def dumps(value: Any) -> str:
    """Compact JSON text (non-ASCII kept), the same text as ``ENCODER.encode``; never raises.

    The standard encoder: a value converted from parsed JSON is encoded faster by ``_dumps_parsed``. (Encoding by
    orjson here and checking its text for an odd number instead, three substring searches, cost about as much as
    orjson itself and both encoders when the text holds a "null": slower on the captured spans.)"""
    try:
        if _C_ENCODE is not None and (type(value) is list or type(value) is dict):
            return "".join(_C_ENCODE(value, 0))
        return ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError):
        return json.dumps(str(value), ensure_ascii=False)


def _dumps_parsed(value: Any, odd_numbers_before: int) -> str:
    """``dumps`` of a value made only of what ``loads`` returned since ``_ODD_NUMBERS.seen`` was
    ``odd_numbers_before`` (and of strings): when no odd number was parsed meanwhile, orjson's text, which is then
    the standard one, at a fifth of the cost."""
    if _ODD_NUMBERS.seen == odd_numbers_before:
        try:
            return _orjson_dumps(value, option=ORJSON_OPTIONS).decode()
        except TypeError:  # orjson.JSONEncodeError: a value it does not encode the standard way
            pass
    return dumps(value)


def as_text(value: Any) -> str:
    """A string as is, anything else as compact JSON text."""
    return value if isinstance(value, str) else dumps(value)


def _maybe_json(value: Any) -> Any:
    """Parse a string that looks like a JSON object/array; anything else unchanged."""
    if isinstance(value, str):
        head = value.lstrip()[:1]
        if head == "{" or head == "[":
            ok, parsed = try_json(value)
            if ok:
                return parsed
    return value


# --------------------------------------------------------------------------------------------------------- parts


def text_part(content: Any) -> Part:
    return {"type": "text", "content": content if isinstance(content, str) else as_text(content)}


def text_message(role: str, content: Any) -> Message:
    return {"role": role, "parts": [text_part(content)]}


def _modality(mime: Any) -> str | None:
    if isinstance(mime, str):
        head = mime.split("/", 1)[0]
        if head in ("image", "audio", "video"):
            return head
    return None


def _media_part(ref: Any, mime: Any = None, modality: str | None = None) -> Part:
    """A uri part for URLs, a blob part for data URIs / raw base64."""
    if isinstance(ref, str) and ref.startswith("data:") and "," in ref:
        header, data = ref[5:].split(",", 1)
        mime = header.split(";", 1)[0] or mime
        return {"type": "blob", "modality": modality or _modality(mime), "mime_type": mime, "content": data}
    if isinstance(ref, str) and "://" in ref:
        part: Part = {"type": "uri", "modality": modality or _modality(mime), "uri": ref}
        if mime:
            part["mime_type"] = mime
        return part
    return {"type": "blob", "modality": modality or _modality(mime), "mime_type": mime, "content": ref}


def arguments(value: Any) -> Any:
    """Tool-call arguments: JSON text parsed to its object, anything else (incl. invalid JSON) unchanged."""
    return _maybe_json(value)


def tool_call_part(tc: Any) -> Part:
    """OpenAI / OpenInference / OpenLLMetry / Vercel / flat tool-call shapes -> a tool_call part."""
    if not isinstance(tc, dict):
        return {"type": "tool_call", "id": None, "name": None, "arguments": arguments(tc)}
    inner = tc.get("tool_call")  # OpenInference tool_calls.M.tool_call.*
    if isinstance(inner, dict):
        tc = inner
    fn = tc.get("function")
    if isinstance(fn, dict):
        name = fn.get("name")
        args = fn.get("arguments")
    else:
        name = tc.get("name", tc.get("toolName"))
        args = tc.get("arguments", tc.get("args", tc.get("input")))
    call_id = tc.get("id", tc.get("toolCallId", tc.get("tool_call_id")))
    return {"type": "tool_call", "id": call_id, "name": name, "arguments": arguments(args)}


def _tool_response_part(call_id: Any, response: Any, name: Any = None) -> Part:
    part: Part = {"type": "tool_call_response", "id": call_id, "response": response}
    if isinstance(name, str) and name:
        part["name"] = name
    return part


def _p_text(p: dict[str, Any]) -> Part:
    if "content" in p:
        return p
    return {"type": "text", "content": p.get("text")}


def _p_tool_call(p: dict[str, Any]) -> Part:
    args = p.get("arguments")
    if isinstance(args, str):
        parsed = _maybe_json(args)
        if parsed is not args:
            out = dict(p)
            out["arguments"] = parsed
            return out
    return p


def _p_tool_call_response(p: dict[str, Any]) -> Part:
    if "response" in p or "result" not in p:
        return p
    out = {k: v for k, v in p.items() if k != "result"}
    out["response"] = p["result"]  # Pydantic AI / registry example spelling
    return out


def _p_reasoning(p: dict[str, Any]) -> Part:
    if "content" in p:
        return p
    return {"type": "reasoning", "content": p.get("text", p.get("reasoning"))}


def _p_openai_text(p: dict[str, Any]) -> Part:
    return {"type": "text", "content": p.get("text")}


def _p_image_url(p: dict[str, Any]) -> Part:
    ref = p.get("image_url")
    if isinstance(ref, dict):
        ref = ref.get("url")
    return _media_part(ref, None, "image")


def _p_refusal(p: dict[str, Any]) -> Part:
    return {"type": "refusal", "content": p.get("refusal", p.get("content"))}


def _p_tool_use(p: dict[str, Any]) -> Part:
    return {"type": "tool_call", "id": p.get("id"), "name": p.get("name"), "arguments": arguments(p.get("input"))}


def _p_tool_result(p: dict[str, Any]) -> Part:
    return _tool_response_part(p.get("tool_use_id"), p.get("content"))


def _p_thinking(p: dict[str, Any]) -> Part:
    return {"type": "reasoning", "content": p.get("thinking")}


def _p_vercel_tool_call(p: dict[str, Any]) -> Part:
    args = p.get("args", p.get("input"))
    return {"type": "tool_call", "id": p.get("toolCallId"), "name": p.get("toolName"), "arguments": arguments(args)}


def _p_vercel_tool_result(p: dict[str, Any]) -> Part:
    return _tool_response_part(p.get("toolCallId"), p.get("result", p.get("output")), p.get("toolName"))


def _p_image(p: dict[str, Any]) -> Part:
    source = p.get("source")
    if isinstance(source, dict):  # Anthropic
        if source.get("type") == "url":
            return _media_part(source.get("url"), source.get("media_type"), "image")
        mime = source.get("media_type")
        return {"type": "blob", "modality": "image", "mime_type": mime, "content": source.get("data")}
    image = p.get("image")
    if isinstance(image, dict):  # OpenInference message_content.image.image.url
        nested = image.get("image")
        image = nested.get("url") if isinstance(nested, dict) else image.get("url")
    return _media_part(image, p.get("mediaType", p.get("mimeType")), "image")


def _p_file(p: dict[str, Any]) -> Part:
    if "file_id" in p or "data" not in p:
        return p
    mime = p.get("mediaType", p.get("mimeType"))
    return _media_part(p.get("data"), mime, _modality(mime))


_PART_BY_TYPE: dict[str, Callable[[dict[str, Any]], Part]] = {
    "text": _p_text,
    "tool_call": _p_tool_call,
    "tool_call_response": _p_tool_call_response,
    "reasoning": _p_reasoning,
    "input_text": _p_openai_text,
    "output_text": _p_openai_text,
    "image_url": _p_image_url,
    "input_image": _p_image_url,
    "refusal": _p_refusal,
    "tool_use": _p_tool_use,
    "tool_result": _p_tool_result,
    "thinking": _p_thinking,
    "tool-call": _p_vercel_tool_call,
    "tool-result": _p_vercel_tool_result,
    "image": _p_image,
    "file": _p_file,
}


def _untyped_part(p: dict[str, Any]) -> Part:
    """Bedrock Converse / Strands content blocks and Gemini parts (no ``type`` key)."""
    if "text" in p:
        if p.get("thought") is True:
            return {"type": "reasoning", "content": p["text"]}
        return text_part(p["text"])
    use = p.get("toolUse")
    if isinstance(use, dict):
        return {
            "type": "tool_call",
            "id": use.get("toolUseId"),
            "name": use.get("name"),
            "arguments": arguments(use.get("input")),
        }
    result = p.get("toolResult")
    if isinstance(result, dict):
        return _tool_response_part(result.get("toolUseId"), result.get("content"))
    call = p.get("functionCall")
    if isinstance(call, dict):
        return {
            "type": "tool_call",
            "id": call.get("id"),
            "name": call.get("name"),
            "arguments": arguments(call.get("args")),
        }
    response = p.get("functionResponse")
    if isinstance(response, dict):
        return _tool_response_part(response.get("id"), response.get("response"), response.get("name"))
    reasoning = p.get("reasoningContent")
    if isinstance(reasoning, dict):
        inner = reasoning.get("reasoningText")
        return {"type": "reasoning", "content": inner.get("text") if isinstance(inner, dict) else reasoning}
    inline = p.get("inlineData")
    if isinstance(inline, dict):
        mime = inline.get("mimeType")
        return {"type": "blob", "modality": _modality(mime), "mime_type": mime, "content": inline.get("data")}
    file_data = p.get("fileData")
    if isinstance(file_data, dict):
        return _media_part(file_data.get("fileUri"), file_data.get("mimeType"))
    content = p.get("content")
    if isinstance(content, str):
        return text_part(content)
    out = dict(p)
    out["type"] = "unknown"
    return out


def to_part(p: Any) -> Part:
    """One content part of any known shape -> canonical OTel part (canonical input dicts are returned as is)."""
    if isinstance(p, dict):
        kind = p.get("type")
        if isinstance(kind, str):
            conv = _PART_BY_TYPE.get(kind)
            return conv(p) if conv is not None else p
        return _untyped_part(p)
    return text_part(p)


def _looks_like_part(p: Any) -> bool:
    if not isinstance(p, dict):
        return False
    if isinstance(p.get("type"), str):
        return True
    return not p.keys().isdisjoint(_UNTYPED_PART_KEYS)


def _content_parts(content: Any) -> list[Part]:
    """A message ``content`` value (text, JSON text of parts, list of parts, one part) -> parts."""
    if isinstance(content, str):
        if not content:
            return []
        if content[:2] == "[{" and content[-1:] == "]":
            ok, parsed = try_json(content)
            if ok and isinstance(parsed, list) and parsed and all(_looks_like_part(x) for x in parsed):
                return [to_part(x) for x in parsed]
        return [{"type": "text", "content": content}]
    if isinstance(content, list):
        return [to_part(x) for x in content]
    if content is None:
        return []
    if isinstance(content, dict) and _looks_like_part(content):
        return [to_part(content)]
    return [text_part(content)]


# ------------------------------------------------------------------------------------------------------ messages


def _missing_role(m: dict[str, Any], default_role: str) -> str:
    """The role of a message that arrived without one. The SDK's attribute limit evicts the oldest attributes
    first, so OpenInference's first indexed message often loses its ``role`` key but keeps the rest: tool calls
    are only ever made by the assistant, and a ``tool_call_id`` marks a tool result."""
    tool_calls = m.get("tool_calls")
    if (tool_calls and isinstance(tool_calls, (list, dict))) or isinstance(m.get("function_call"), dict):
        return "assistant"
    if m.get("tool_call_id") is not None:
        return "tool"
    return default_role


def to_message(m: Any, default_role: str, *, role_given: bool = False) -> Message:
    """One message of any known shape (OTel parts, OpenAI chat, Anthropic, Vercel, Gemini, OpenInference,
    OpenLLMetry indexed, ≤1.36 event body) -> canonical message. Without a role of its own the message gets
    ``default_role``: as is when ``role_given`` (a ≤1.36 event's name tells it), else after ``_missing_role``."""
    if not isinstance(m, dict):
        return text_message(default_role, m)
    role = m.get("role")
    if not isinstance(role, str) or not role:
        role = default_role if role_given else _missing_role(m, default_role)
    src_parts = m.get("parts")
    if isinstance(src_parts, list):
        parts = [to_part(p) for p in src_parts]
    else:
        content = m.get("content")
        if content is None:
            contents = m.get("contents")  # OpenInference contents.M.message_content.*
            if isinstance(contents, list):
                content = [c.get("message_content", c) if isinstance(c, dict) else c for c in contents]
            elif "text" in m:  # Strands completion.N.text
                content = m.get("text")
        call_id = m.get("tool_call_id", m.get("id")) if role == "tool" else m.get("tool_call_id")
        if (
            (role == "tool" or call_id is not None)
            and not isinstance(content, list)
            and not (isinstance(content, str) and content[:2] == "[{")
        ):
            parts = [_tool_response_part(call_id, content, m.get("name"))]
        else:
            parts = _content_parts(content)
        tool_calls = m.get("tool_calls")
        if isinstance(tool_calls, list):
            parts.extend(tool_call_part(tc) for tc in tool_calls)
        elif isinstance(tool_calls, dict):
            parts.append(tool_call_part(tool_calls))
        function_call = m.get("function_call")
        if isinstance(function_call, dict):
            parts.append(tool_call_part({"function": function_call}))
    out: Message = {"role": role, "parts": parts}
    name = m.get("name")
    if isinstance(name, str) and name:
        out["name"] = name
    finish = m.get("finish_reason")
    if isinstance(finish, str) and finish:
        out["finish_reason"] = finish
    return out


def choice_message(body: dict[str, Any]) -> Message:
    """An OpenAI choice / ≤1.36 ``gen_ai.choice`` body (``message`` may also be Strands JSON text)."""
    msg = body.get("message")
    parts: list[Part]
    if isinstance(msg, dict):
        out = to_message(msg, "assistant", role_given=True)  # a choice is the model's reply
        parts = out["parts"]
    else:
        parts = _content_parts(msg)
        out = {"role": "assistant", "parts": parts}
    tool_calls = body.get("tool_calls")  # OpenLLMetry puts them at the top level
    if isinstance(tool_calls, list):
        parts.extend(tool_call_part(tc) for tc in tool_calls)
    finish = body.get("finish_reason")
    if isinstance(finish, str) and finish:
        out["finish_reason"] = finish
    return out


def _is_choice(item: dict[str, Any]) -> bool:
    return "message" in item and "role" not in item and "parts" not in item


def _looks_like_message(item: Any) -> bool:
    if not isinstance(item, dict):
        return False
    if "role" in item or "parts" in item or "message" in item or "tool_calls" in item:
        return True
    return "content" in item and "type" not in item


def messages_from_value(value: Any, default_role: str) -> list[Message]:
    """Best effort for free-form content (Langfuse observation input/output, OpenInference input.value /
    output.value, Vercel ai.prompt, traceloop.entity.*): message-shaped JSON becomes messages, anything else one
    text message holding the text as sent."""
    raw: str | None = None
    if isinstance(value, str):
        raw = value
        head = value.lstrip()[:1]
        if head != "{" and head != "[":
            return [text_message(default_role, value)]
        ok, value = try_json(value)
        if not ok:
            return [text_message(default_role, raw)]
    if isinstance(value, list):
        if value and all(_looks_like_message(x) for x in value):
            return [choice_message(x) if _is_choice(x) else to_message(x, default_role) for x in value]
        if value and all(_looks_like_part(x) for x in value):
            return [{"role": default_role, "parts": [to_part(x) for x in value]}]
    elif isinstance(value, dict):
        messages = value.get("messages")
        if isinstance(messages, list):
            out = messages_from_value(messages, default_role) if messages else []
            system = value.get("system")
            if system:
                out.insert(0, {"role": "system", "parts": _content_parts(system)})
            return out
        choices = value.get("choices")
        if isinstance(choices, list) and choices and all(isinstance(c, dict) for c in choices):
            return [choice_message(c) for c in choices]
        if isinstance(value.get("message"), dict) and "role" not in value:  # {"message": {...}, "usage": ...}
            return [choice_message(value)]
        if "role" in value or "parts" in value or "tool_calls" in value or ("content" in value and "type" not in value):
            return [to_message(value, default_role)]
        prompt = value.get("prompt")
        if isinstance(prompt, str):  # Vercel ai.prompt {"system"?, "prompt"}
            out = [text_message(default_role, prompt)]
            system = value.get("system")
            if isinstance(system, str) and system:
                out.insert(0, text_message("system", system))
            return out
    elif isinstance(value, str):  # a JSON-encoded string
        return [text_message(default_role, value)]
    return [text_message(default_role, raw if raw is not None else value)]


def otel_messages(value: Any, default_role: str) -> list[Message]:
    """``gen_ai.input.messages`` / ``gen_ai.output.messages`` / ``pydantic_ai.all_messages``: JSON text or a
    structured (arrayValue / kvlistValue) value. Invalid JSON is kept as one text message."""
    if isinstance(value, str):
        ok, parsed = try_json(value)
        if not ok:
            return [text_message(default_role, value)]
        value = parsed
    if isinstance(value, list):
        return [to_message(m, default_role) for m in value]
    if isinstance(value, dict):
        inner = value.get("messages")
        if isinstance(inner, list):
            return [to_message(m, default_role) for m in inner]
        return [to_message(value, default_role)]
    return [text_message(default_role, value)]


def system_message(value: Any) -> Message | None:
    """``gen_ai.system_instructions`` (JSON list of parts, structured, or plain text) -> a system message."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        ok, parsed = try_json(value) if value.lstrip()[:1] in ("[", "{") else (False, None)
        if not ok:
            return text_message("system", value)
        value = parsed
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        return {"role": "system", "parts": [to_part(p) for p in value]}
    return text_message("system", value)


def role_prefixed_messages(text: str, default_role: str) -> list[Message]:
    """OpenLIT ≤1.3x flattened prompt ``"user: ...\\nassistant: ..."``; other text -> one message."""
    if not text.startswith(_ROLE_PREFIXES):
        return [text_message(default_role, text)]
    out: list[Message] = []
    role = default_role
    buf: list[str] = []
    for line in text.split("\n"):
        if line.startswith(_ROLE_PREFIXES):
            if buf:
                out.append(text_message(role, "\n".join(buf)))
            role, _, rest = line.partition(": ")
            buf = [rest]
        else:
            buf.append(line)
    if buf:
        out.append(text_message(role, "\n".join(buf)))
    return out


# ------------------------------------------------------------------------------------------------ event bodies


def _event_role(event_name: Any) -> str | None:
    """``gen_ai.user.message`` -> ``user``."""
    if isinstance(event_name, str) and event_name.startswith("gen_ai.") and event_name.endswith(".message"):
        role = event_name[7:-8]
        return role or None
    return None


def event_message(event_name: Any, body: Any) -> tuple[bool, Message] | None:
    """One ≤1.36 event body -> (is_output, message); None when the event carries no message."""
    if isinstance(body, str):
        parsed = _maybe_json(body)
        body = parsed if isinstance(parsed, dict) else {"content": body}
    if not isinstance(body, dict):
        return None
    if event_name == "gen_ai.choice" or (event_name is None and _is_choice(body)):
        choice = choice_message(body)
        if not choice["parts"] and "finish_reason" not in choice:
            return None  # a choice recorded without content (capture off, e.g. only {"index": 0}): no message
        return True, choice
    if event_name is None:
        return False, to_message(body, "user")
    role = _event_role(event_name)
    if role is None:
        return None
    return False, to_message(body, role, role_given=True)


def _event_bodies(value: Any) -> tuple[list[Message], list[Message]] | None:
    """Pydantic AI v1 ``events`` / ``all_messages_events``: a JSON array of ≤1.36 event bodies."""
    items = value
    if isinstance(items, str):
        ok, items = try_json(items)
        if not ok:
            return None
    if not isinstance(items, list) or not items:
        return None
    inputs: list[Message] = []
    outputs: list[Message] = []
    for item in items:
        if not isinstance(item, dict):
            return None
        name = item.get("event.name")
        if not isinstance(name, str):
            if not _looks_like_message(item):
                return None
            name = None
        found = event_message(name, item)
        if found is None:
            continue
        (outputs if found[0] else inputs).append(found[1])
    return inputs, outputs


def _split_run(messages: list[Message]) -> tuple[list[Message], list[Message] | None]:
    """A whole agent run: the final assistant message is the run's output."""
    if messages and messages[-1].get("role") == "assistant":
        return messages[:-1], [messages[-1]]
    return messages, None


def span_event_messages(events: list[SpanEvent]) -> tuple[list[Message], list[Message]]:
    """Content carried as span events: v1.26 ``gen_ai.content.prompt/completion`` and ≤1.36 per-message events."""
    inputs: list[Message] = []
    outputs: list[Message] = []
    for ev in events:
        name = getattr(ev, "name", None)
        if not isinstance(name, str) or not name.startswith("gen_ai."):
            continue
        attrs = getattr(ev, "attributes", None)
        if not isinstance(attrs, dict):
            continue
        if name == "gen_ai.content.prompt":
            prompt = attrs.get("gen_ai.prompt")
            if isinstance(prompt, str) and prompt.lstrip()[:1] not in ("[", "{"):
                inputs.extend(role_prefixed_messages(prompt, "user"))
            elif prompt is not None:
                inputs.extend(messages_from_value(prompt, "user"))
        elif name == "gen_ai.content.completion":
            completion = attrs.get("gen_ai.completion")
            if completion is not None:
                outputs.extend(messages_from_value(completion, "assistant"))
        else:
            found = event_message(name, attrs)
            if found is not None:
                (outputs if found[0] else inputs).append(found[1])
    return inputs, outputs


# ------------------------------------------------------------------------------------------------ indexed keys


class _Node(dict[str, Any]):
    """A tree node built by ``_unflatten`` (attribute values that are dicts are leaves and never touched)."""

    __slots__ = ()


def _unflatten(items: dict[str, Any]) -> list[Any]:
    """``{"0.role": "user", "0.tool_calls.1.id": "c"}`` -> ``[{"role": "user", "tool_calls": [..., {"id": "c"}]}]``;
    numeric segments become lists sorted numerically (10 after 9)."""
    root = _Node()
    for path, value in items.items():
        segments = path.split(".")
        last = segments.pop()
        node = root
        for seg in segments:
            child = node.get(seg)
            if child is None:
                child = node[seg] = _Node()
            elif type(child) is not _Node:
                break  # a value already sits here; keep it, drop the deeper key
            node = child
        else:
            if type(node.get(last)) is not _Node:
                node[last] = value
    listed = _listify(root)
    return listed if isinstance(listed, list) else []


def _listify(node: _Node) -> Any:
    """A tree node whose keys are indices -> list in numeric order; other nodes stay dicts, updated in place
    (they are our own ``_Node`` objects, never attribute values)."""
    if node and next(iter(node)).isdecimal():
        try:
            order = sorted(node, key=int)
        except ValueError:  # mixed index / name keys: keep it a dict
            order = None
        if order is not None:
            return [_listify(v) if type(v) is _Node else v for v in (node[k] for k in order)]
    for key, value in node.items():
        if type(value) is _Node:
            node[key] = _listify(value)
    return node


def indexed_messages(family: str, items: dict[str, Any]) -> list[Message]:
    """One indexed attribute family (rest-of-key -> value) -> messages."""
    out: list[Message] = []
    for node in _unflatten(items):
        if family == "gen_ai.prompt":
            out.append(to_message(node, "user"))
        elif family == "gen_ai.completion":
            out.append(to_message(node, "assistant"))
        elif family == "llm.input_messages" or family == "llm.output_messages":
            msg = node.get("message", node) if isinstance(node, dict) else node
            out.append(to_message(msg, "user" if family == "llm.input_messages" else "assistant"))
        elif family == "llm.prompts":
            text = node.get("prompt", node) if isinstance(node, dict) else node
            text = text.get("text", text) if isinstance(text, dict) else text
            out.append(text_message("user", text))
        elif family == "llm.choices":
            text = node.get("completion", node) if isinstance(node, dict) else node
            text = text.get("text", text) if isinstance(text, dict) else text
            out.append(text_message("assistant", text))
    return out


# ---------------------------------------------------------------------------------------------- span assembly


_INPUT_FAMILIES = ("gen_ai.prompt", "llm.input_messages", "llm.prompts")
_OUTPUT_FAMILIES = ("gen_ai.completion", "llm.output_messages", "llm.choices")


def _vercel_output(attrs: dict[str, Any]) -> list[Message] | None:
    text = attrs.get("ai.response.text")
    calls = attrs.get("ai.response.toolCalls")
    obj = attrs.get("ai.response.object")
    if text is None and calls is None and obj is None:
        return None
    parts: list[Part] = []
    if text is not None and text != "":
        parts.append(text_part(text))
    if obj is not None and obj != "":
        parts.append(text_part(obj))
    calls = _maybe_json(calls)
    if isinstance(calls, list):
        parts.extend(
            _p_vercel_tool_call(c) if isinstance(c, dict) and "toolName" in c else tool_call_part(c) for c in calls
        )
    msg: Message = {"role": "assistant", "parts": parts}
    finish = attrs.get("ai.response.finishReason")
    if isinstance(finish, str) and finish:
        msg["finish_reason"] = finish
    return [msg]


# Every attribute span_messages reads, besides the indexed families and the span events: a span with none of
# them has no content (normalise_span then skips span_messages). Keep in step with span_messages.
SPAN_CONTENT_KEYS: frozenset[str] = frozenset(
    {
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "pydantic_ai.all_messages",
        "events",
        "all_messages_events",
        "final_result",
        "ai.prompt.messages",
        "ai.prompt",
        "ai.response.text",
        "ai.response.toolCalls",
        "ai.response.object",
        "langfuse.observation.input",
        "langfuse.observation.output",
        "request_data",
        "response_data",
        "llm.prompts",
        "input.value",
        "output.value",
        "traceloop.entity.input",
        "traceloop.entity.output",
    }
)


def span_messages(
    attrs: dict[str, Any],
    events: list[SpanEvent],
    families: Callable[[], dict[str, dict[str, Any]]],
    tool_span: bool,
) -> tuple[str | None, str | None, list[str]]:
    """The JSON texts of the span's input and output messages (``dumps`` of each list; None when there are
    none), each side from the first source that has it (§2 order), and the output messages' finish reasons."""
    inputs: list[Message] | None = None
    outputs: list[Message] | None = None
    inputs_json = None

    value = attrs.get("gen_ai.input.messages")
    if type(value) is str:
        inputs_json = memo_input_json(value)
    if inputs_json is not None:
        inputs = []  # known as their text: an empty list stands for them, so that no later source is tried
    elif value is not None:
        inputs = otel_messages(value, "user")
    value = attrs.get("gen_ai.output.messages")
    outputs_parsed: int | None = None  # _ODD_NUMBERS.seen before the outputs were parsed from their text
    if value is not None:
        if type(value) is str:
            outputs_parsed = _ODD_NUMBERS.seen
        outputs = otel_messages(value, "assistant")

    if inputs is None or outputs is None:
        value = attrs.get("pydantic_ai.all_messages")
        if value is not None:
            run_in, run_out = _split_run(otel_messages(value, "user"))
            inputs = inputs if inputs is not None else run_in
            outputs = outputs if outputs is not None else run_out
    if inputs is None or outputs is None:
        for key in ("events", "all_messages_events"):
            value = attrs.get(key)
            if value is None:
                continue
            found = _event_bodies(value)
            if found is None:
                continue
            ev_in, ev_out = found
            if not ev_out and key == "all_messages_events":
                ev_in, split_out = _split_run(ev_in)
                ev_out = split_out or []
            if inputs is None and ev_in:
                inputs = ev_in
            if outputs is None and ev_out:
                outputs = ev_out
            break
    if outputs is None:
        value = attrs.get("final_result")
        if value is not None:
            outputs = [text_message("assistant", value)]

    # Vercel AI SDK
    if inputs is None:
        value = attrs.get("ai.prompt.messages")
        if value is None:
            value = attrs.get("ai.prompt")
        if value is not None:
            inputs = messages_from_value(value, "user")
    if outputs is None:
        outputs = _vercel_output(attrs)

    # Langfuse observation input / output (on tool observations they are the tool's arguments / result)
    if not tool_span:
        if inputs is None:
            value = attrs.get("langfuse.observation.input")
            if value is not None:
                inputs = messages_from_value(value, "user")
        if outputs is None:
            value = attrs.get("langfuse.observation.output")
            if value is not None:
                outputs = messages_from_value(value, "assistant")

    # Logfire's own OpenAI / Anthropic integrations, semconv version 1: raw request / response JSON
    if inputs is None:
        value = attrs.get("request_data")
        if value is not None:
            inputs = messages_from_value(value, "user")
    if outputs is None:
        value = attrs.get("response_data")
        if value is not None:
            outputs = messages_from_value(value, "assistant")

    # Indexed families (OpenLLMetry legacy / Strands / OpenInference)
    if inputs is None or outputs is None:
        fams = families()
        if fams:
            if inputs is None:
                for family in _INPUT_FAMILIES:
                    items = fams.get(family)
                    if items:
                        inputs = indexed_messages(family, items)
                        break
            if outputs is None:
                for family in _OUTPUT_FAMILIES:
                    items = fams.get(family)
                    if items:
                        outputs = indexed_messages(family, items)
                        break

    # OpenInference completions API: llm.prompts as a string array
    if inputs is None:
        value = attrs.get("llm.prompts")
        if isinstance(value, list) and value:
            inputs = [text_message("user", p) for p in value]

    # Span events
    if (inputs is None or outputs is None) and events:
        ev_in, ev_out = span_event_messages(events)
        if inputs is None and ev_in:
            inputs = ev_in
        if outputs is None and ev_out:
            outputs = ev_out

    # Generic fallbacks: OpenInference input.value / output.value, traceloop entity input / output
    if not tool_span:
        if inputs is None:
            value = attrs.get("input.value")
            if value is None:
                value = attrs.get("traceloop.entity.input")
            if value is not None and value != "":
                inputs = messages_from_value(value, "user")
        if outputs is None:
            value = attrs.get("output.value")
            if value is None:
                value = attrs.get("traceloop.entity.output")
            if value is not None and value != "":
                outputs = messages_from_value(value, "assistant")

    system = attrs.get("gen_ai.system_instructions")
    if system is not None:
        sys_msg, sys_text = memo_system_message(system) if type(system) is str else (system_message(system), None)
        if sys_msg is not None:
            if sys_text is None:
                if inputs_json is not None:  # rare: the inputs were kept as text; convert them after all
                    inputs, inputs_json = otel_messages(attrs["gen_ai.input.messages"], "user"), None
            elif inputs_json is not None:  # a JSON list is "[" + its items' texts joined by "," + "]"
                inputs_json = "[" + sys_text + "," + inputs_json[1:]
            else:
                inputs_json = _prepend(sys_text, inputs)
            inputs = [sys_msg, *(inputs or ())]

    if inputs_json is None and inputs:
        inputs_json = dumps(inputs)
    if not outputs:
        return inputs_json, None, []
    reasons = [m["finish_reason"] for m in outputs if isinstance(m.get("finish_reason"), str)]
    return inputs_json, dumps(outputs) if outputs_parsed is None else _dumps_parsed(outputs, outputs_parsed), reasons


def _prepend(first_text: str, rest: list[Message] | None) -> str | None:
    """``dumps([first, *rest])`` from the text of ``first``: only ``rest`` is encoded (None if that fell back to
    a quoted text)."""
    if not rest:
        return "[" + first_text + "]"
    rest_text = dumps(rest)
    return "[" + first_text + "," + rest_text[1:] if rest_text[:1] == "[" else None


# ------------------------------------------------------------------------------------------------------- memos


class _Memo:
    """A bounded memo, text -> value, for content that repeats across spans. It holds keys of at most
    ``max_chars`` characters in all and starts over when full (the next spans refill it)."""

    __slots__ = ("_chars", "_entries", "_max_chars", "get")

    def __init__(self, max_chars: int) -> None:
        self._entries: dict[str, Any] = {}
        self._chars = 0
        self._max_chars = max_chars
        self.get = self._entries.get  # the dict's own method: no Python frame per lookup

    def put(self, key: str, value: Any) -> None:
        if self._chars + len(key) > self._max_chars:
            self._entries.clear()
            self._chars = 0
        self._entries[key] = value
        self._chars += len(key)

    def clear(self) -> None:
        self._entries.clear()
        self._chars = 0


# ------------------------------------------------------------------------------------------- message memos
#
# OTel GenAI instrumentations write gen_ai.input.messages the way normalisation writes it: compact JSON,
# non-ASCII kept, messages and parts in canonical form, so converting and re-encoding gives the text back. And an
# agent re-sends the conversation so far with every model call, so most of a span's input messages were in an
# earlier span. The memo remembers, per message text, whether it is canonical: a text made only of such messages
# is its own normalised JSON text. On the benchmark workload 45 % of the input messages (a third of the input
# bytes) repeat; each then costs a dict lookup instead of a parse, a conversion and an encoding (chat spans'
# inputs: 22 instead of 25 µs; an invoke_agent root's, whose one message its run's first chat span taught the
# memo: 2 instead of 5.5 µs).
# The memos hold facts about texts, never change an output, and are safe to share between threads (a race only
# costs a recomputation).

# Message text after its '{"role":' -> whether that message text is canonical (its own normalised JSON text).
_MESSAGE_MEMO = _Memo(2_000_000)
_SYSTEM_MEMO = _Memo(500_000)  # gen_ai.system_instructions text -> (system message, its JSON text)
_ROLE_KEY = '{"role":'
_FIRST_MESSAGE = "[" + _ROLE_KEY
_MESSAGE_SEPARATOR = "," + _ROLE_KEY
# Only texts nesting less deep than this are memoised (a text with fewer brackets, or shorter than twice this,
# cannot nest deeper). Converting a memoised message again, at whatever call depth a later span comes, then stays
# far from the recursion limit, as it did when it was learnt.
_MEMO_MAX_DEPTH = 200


def clear_memos() -> None:
    """Forget every memoised text (the benchmark starts each timed pass cold with it)."""
    _MESSAGE_MEMO.clear()
    _SYSTEM_MEMO.clear()


def _shallow(text: str) -> bool:
    return len(text) < 2 * _MEMO_MAX_DEPTH or text.count("{") + text.count("[") < _MEMO_MAX_DEPTH


def memo_input_json(text: str) -> str | None:
    """``dumps(otel_messages(text, "user"))`` for a ``gen_ai.input.messages`` text when the memo shows that this
    is the text itself; None when not (the caller converts the text).

    The text is cut at every ``,{"role":``; pieces not seen before are converted together (``_learn``)."""
    if not text.startswith(_FIRST_MESSAGE) or text.find('","parts":[', 10, 64) < 0 or not text.endswith("}]"):
        return None  # a quick look: canonical messages start with a role followed by the parts
    pieces = text[len(_FIRST_MESSAGE) : -1].split(_MESSAGE_SEPARATOR)
    get = _MESSAGE_MEMO.get
    known = [get(piece) for piece in pieces]
    if known.count(True) == len(known) or (False not in known and _learn(pieces, known)):
        return text
    return None


def _learn(pieces: list[str], known: list[bool | None]) -> bool:
    """Convert the pieces ``known`` lacks as one list and memoise whether they are canonical.

    When that list text is its own normalised JSON text and has one message per piece, each piece is exactly one
    of its messages: every message starts with '{"role":', so every boundary between two of them is one of the
    joins, and there are as many boundaries as joins. So each piece alone is a canonical message text, and a list
    of such texts is a canonical list text. (When not, the caller converts the whole text, so this conversion was
    wasted: once per message, as the verdict is memoised either way.)"""
    missing = [piece for piece, verdict in zip(pieces, known, strict=True) if verdict is None]
    joined = "[" + ",".join(_ROLE_KEY + piece for piece in missing) + "]"
    canonical = False
    if _shallow(joined):
        odd_numbers = _ODD_NUMBERS.seen
        messages = otel_messages(joined, "user")
        canonical = len(messages) == len(missing) and _dumps_parsed(messages, odd_numbers) == joined
    for piece in missing:
        _MESSAGE_MEMO.put(piece, canonical)
    return canonical


def memo_system_message(text: str) -> tuple[Message | None, str | None]:
    """``system_message`` of a ``gen_ai.system_instructions`` text and its JSON text (None when not memoisable),
    memoised: one agent run sends the same instructions with every model call."""
    found = _SYSTEM_MEMO.get(text)
    if found is None:
        odd_numbers = _ODD_NUMBERS.seen
        message = system_message(text)
        if message is None or not _shallow(text):
            return message, None
        found = (message, _dumps_parsed(message, odd_numbers))
        _SYSTEM_MEMO.put(text, found)
    return found


# --------------------------------------------------------------------------------------------------------- logs


def _attr_or_body(attrs: dict[str, Any], body: Any, key: str) -> Any:
    value = attrs.get(key)
    if value is None and isinstance(body, dict):
        value = body.get(key)
    return value


def messages_from_log(log: DecodedLog) -> tuple[list[Message] | None, list[Message] | None, str | None]:
    """Input messages, output messages and gen_ai.response.id one OTLP log record contributes (canonical part
    form, as Python lists). Non-GenAI records -> (None, None, None). Never raises."""
    try:
        return _messages_from_log(log)
    except Exception:  # one malformed record must never stop a batch
        logger.debug("could not extract messages from log record %r", getattr(log, "event_name", None), exc_info=True)
        return None, None, None


def _messages_from_log(log: DecodedLog) -> tuple[list[Message] | None, list[Message] | None, str | None]:
    attrs = log.attributes if isinstance(log.attributes, dict) else {}
    name: Any = log.event_name
    if not isinstance(name, str) or not name:
        name = attrs.get("event.name")
    if not isinstance(name, str) or not name.startswith("gen_ai."):
        return None, None, None
    body = log.body
    response_id = _attr_or_body(attrs, body, "gen_ai.response.id")
    response_id = response_id if isinstance(response_id, str) and response_id else None
    inputs: list[Message] | None = None
    outputs: list[Message] | None = None
    if name == "gen_ai.client.inference.operation.details":
        value = _attr_or_body(attrs, body, "gen_ai.input.messages")
        if value is not None:
            inputs = otel_messages(value, "user")
        value = _attr_or_body(attrs, body, "gen_ai.output.messages")
        if value is not None:
            outputs = otel_messages(value, "assistant")
        sys_msg = system_message(_attr_or_body(attrs, body, "gen_ai.system_instructions"))
        if sys_msg is not None:
            inputs = [sys_msg, *(inputs or ())]
    elif name == "gen_ai.choice" or _event_role(name) is not None:
        found = event_message(name, body)
        if found is not None:
            if found[0]:
                outputs = [found[1]]
            else:
                inputs = [found[1]]
    return inputs or None, outputs or None, response_id

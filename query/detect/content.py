"""Text scanners for the readiness checks: prompt-injection phrasings and PII, pure functions of a string.

Two stages keep this cheap. DuckDB pre-filters inside the index's read (signals.DETECT_SELECT, the loose
`INJECTION_PREFILTER` and `PII_PREFILTER` below, RE2 syntax), so only the few spans whose content could match
reach Python; these stricter rules then decide. Messages are OTel GenAI JSON ([{role, parts}]); system
messages are not scanned for injection (a system prompt may legitimately say "ignore previous instructions
from users"), and only text parts of model outputs are scanned for PII (an email address passed to a
send_email tool call is the tool's argument, not an answer). Content cut short by the read (SCAN_CHARS) does
not parse as JSON and is scanned whole.

PII found is never copied into evidence whole: samples are masked (`j***@gmail.com`, `**** 1111`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

# Loose, for DuckDB (RE2, case-insensitive): anything the stricter Python rules below could match.
INJECTION_PREFILTER = (
    r"(ignore|disregard|forget|override)\W+((all|any|the|everything|your)\W+)*"
    r"(previous|prior|above|earlier|preceding|system|original)\W"
    r"|you are now\W|developer mode|jailbr|pretend (you are|to be)|act as an? (unrestricted|unfiltered|jailbroken)"
    r"|(reveal|print|show|repeat|output)\W+(me\W+)?(your|the)\W+(system prompt|hidden|initial instructions)"
    r"|[A-Za-z0-9+/]{40,}"
)
PII_PREFILTER = (
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+\.[A-Za-z]{2,}|\d{3}-\d{2}-\d{4}|\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}"
    r"|\+\d{1,3}[ .-]?\(?\d|(\d[ -]?){13,19}|[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]"
)

_OVERRIDE = re.compile(
    r"\b(?:ignore|disregard|forget|override)\W+(?:(?:all|any|the|everything|your)\W+){0,3}"
    r"(?:previous|prior|above|earlier|preceding|system|original)\W+"
    r"(?:instructions?|prompts?|directions?|rules|context|guidelines|messages?)",
    re.IGNORECASE,
)
_ROLE_PLAY = re.compile(
    r"\byou are now\W+(?:in\W+)?(?:an?\W+)?(?:DAN|developer mode|jailbroken|unrestricted|unfiltered|no longer)"
    r"|\bdeveloper mode\W+(?:enabled|on|activated)"
    r"|\bjailbr(?:eak|oken)\b"
    r"|\bpretend (?:you are|to be)\b.{0,60}?\b(?:no|without|any) (?:restrictions|rules|limits|filters)"
    r"|\bact as an? (?:unrestricted|unfiltered|jailbroken)"
    r"|\b(?:reveal|print|show|repeat|output)\W+(?:me\W+)?(?:your|the)\W+"
    r"(?:system prompt|hidden instructions|initial instructions)",
    re.IGNORECASE,
)
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")
_MAX_BASE64_RUNS = 20  # a text of many ids or hashes: look at the first 20 runs only
_MAX_BASE64_CHARS = 8192  # an embedded image is not an instruction; decode at most 8 KB of a run
SNIPPET_CHARS = 80  # context shown either side of a match


def _texts(messages: str, *, skip_roles: tuple[str, ...] = (), only_text_parts: bool = False) -> list[str]:
    """The scannable texts of an OTel GenAI message list; the raw string when it is not one."""
    try:
        value = json.loads(messages)
    except ValueError:
        return [messages]
    if not isinstance(value, list):
        return [messages]
    out: list[str] = []
    for message in value:
        if not isinstance(message, dict) or message.get("role") in skip_roles:
            continue
        for part in message.get("parts") or []:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind in ("text", "refusal", "reasoning"):
                out.append(str(part.get("content") or ""))
            elif not only_text_parts and kind == "tool_call_response":
                response = part.get("response")
                out.append(response if isinstance(response, str) else json.dumps(response, ensure_ascii=False))
    return out


def _snippet(text: str, match: re.Match[str]) -> str:
    start, end = max(0, match.start() - SNIPPET_CHARS), min(len(text), match.end() + SNIPPET_CHARS)
    return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")


def _decoded_runs(text: str) -> list[str]:
    """Base64 runs in `text` that decode to readable UTF-8 text."""
    out = []
    for index, run in enumerate(_BASE64_RUN.finditer(text)):
        if index >= _MAX_BASE64_RUNS:
            break
        raw = run.group(0)[:_MAX_BASE64_CHARS]
        raw = raw[: len(raw) - len(raw) % 4] if not raw.endswith("=") else raw
        try:
            decoded = base64.b64decode(raw, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if decoded and sum(c.isprintable() or c.isspace() for c in decoded) / len(decoded) > 0.95:
            out.append(decoded)
    return out


def injection(text: str, *, messages: bool) -> dict[str, Any] | None:
    """The first prompt-injection phrasing in `text` (an OTel message list when `messages`, else a tool
    result): {pattern, phrase, snippet}, or None."""
    texts = _texts(text, skip_roles=("system",)) if messages else [text]
    for body in texts:
        for name, pattern in (("instruction_override", _OVERRIDE), ("role_play_override", _ROLE_PLAY)):
            found = pattern.search(body)
            if found:
                return {"pattern": name, "phrase": found.group(0), "snippet": _snippet(body, found)}
    for body in texts:
        for decoded in _decoded_runs(body):
            for name, pattern in (("instruction_override", _OVERRIDE), ("role_play_override", _ROLE_PLAY)):
                found = pattern.search(decoded)
                if found:
                    return {"pattern": f"base64_wrapped_{name}", "phrase": found.group(0), "snippet": decoded[:200]}
    return None


# --- PII -------------------------------------------------------------------------------------------------

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_PHONE_NANP = re.compile(r"(?<![\d+])(?:\+?1[ .-]?)?\(?[2-9]\d{2}\)?[ .-]\d{3}[ .-]\d{4}(?!\d)")
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?!\d)")
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
_NINO = re.compile(r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")


def luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def _mask(kind: str, value: str) -> str:
    if kind == "email":
        local, _, domain = value.partition("@")
        return f"{local[:1]}***@{domain}"
    digits = _digits(value)
    return f"***{digits[-4:]}" if kind != "national_id" else f"***{value[-3:]}"


def pii(text: str) -> dict[str, Any] | None:
    """PII in the text parts of a model's output messages: {kinds: {kind: count}, samples: [masked]}, or None.
    Cards must pass the Luhn check; phone numbers need a phone's shape (NANP, or + and a country code)."""
    found: list[tuple[str, str]] = []
    for body in _texts(text, only_text_parts=True):
        cards = [m.group(0) for m in _CARD.finditer(body) if 13 <= len(_digits(m.group(0))) <= 19]
        cards = [c for c in cards if luhn(_digits(c)) and len(set(_digits(c))) > 1]
        found += [("card", c) for c in cards]
        rest = body
        for card in cards:  # a card's digits are not also a phone number
            rest = rest.replace(card, " ")
        found += [("email", m.group(0)) for m in _EMAIL.finditer(rest)]
        found += [("national_id", m.group(0)) for m in _SSN.finditer(rest)]
        found += [("national_id", m.group(0)) for m in _NINO.finditer(rest)]
        phones = {m.group(0) for m in _PHONE_NANP.finditer(rest)}
        phones |= {m.group(0) for m in _PHONE_INTL.finditer(rest) if 8 <= len(_digits(m.group(0))) <= 15}
        found += [("phone", p) for p in sorted(phones)]
    if not found:
        return None
    kinds: dict[str, int] = {}
    for kind, _ in found:
        kinds[kind] = kinds.get(kind, 0) + 1
    samples = sorted({f"{kind}: {_mask(kind, value)}" for kind, value in found})[:10]
    return {"kinds": kinds, "samples": samples}

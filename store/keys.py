"""API keys → projects: the keys file, key creation and revocation, and lookup by presented key.

The file (`<data-dir>/keys.json`, or any path given with --keys-file) holds only SHA-256 digests of
keys, so a leaked file leaks no key. Hand-written entries may give the key itself as `key`; it is
hashed on load. The file is re-read when it changes, so a revocation takes effect without a restart.
With no keys at all the server runs in embedded mode: every request goes to project `default`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PROJECT = "default"
_PROJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_RELOAD_CHECK_SECONDS = 1.0


class KeysFileError(ValueError):
    """The keys file is malformed; the message names the file and the entry."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    project: str
    sha256: str
    created_at: str
    revoked: bool = False


def validate_project(name: str) -> str:
    if not _PROJECT_RE.match(name):
        raise ValueError(
            f"invalid project name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load_keys(path: Path) -> list[ApiKey]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except json.JSONDecodeError as exc:
        raise KeysFileError(f"{path}: not valid JSON ({exc})") from None
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise KeysFileError(f"{path}: expected an object with a 'keys' list")
    keys = []
    for index, entry in enumerate(entries):
        where = f"{path}: keys[{index}]"
        if not isinstance(entry, dict):
            raise KeysFileError(f"{where}: must be an object")
        project = entry.get("project")
        if not isinstance(project, str):
            raise KeysFileError(f"{where}.project: missing or not a string")
        try:
            validate_project(project)
        except ValueError as exc:
            raise KeysFileError(f"{where}.project: {exc}") from None
        if isinstance(entry.get("key"), str) and entry["key"]:
            sha = digest(entry["key"])
        elif isinstance(entry.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]):
            sha = entry["sha256"]
        else:
            raise KeysFileError(f"{where}: needs 'key' (the key itself) or 'sha256' (64 lowercase hex)")
        revoked = entry.get("revoked", False)
        if not isinstance(revoked, bool):
            raise KeysFileError(f"{where}.revoked: must be true or false")
        keys.append(ApiKey(str(entry.get("id") or sha[:12]), project, sha, str(entry.get("created_at", "")), revoked))
    return keys


def _write(path: Path, keys: list[ApiKey]) -> None:
    doc = {
        "keys": [
            {
                "id": k.key_id,
                "project": k.project,
                "sha256": k.sha256,
                "created_at": k.created_at,
                "revoked": k.revoked,
            }
            for k in keys
        ]
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def create_key(path: Path, project: str) -> tuple[str, ApiKey]:
    """Create a key for a project; returns the key (shown once, never stored) and its record."""
    validate_project(project)
    key = "af_" + secrets.token_urlsafe(32)
    record = ApiKey(
        "k_" + secrets.token_hex(6), project, digest(key), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    )
    _write(path, [*load_keys(path), record])
    return key, record


def revoke_key(path: Path, key_id: str) -> bool:
    keys = load_keys(path)
    found = False
    updated = []
    for k in keys:
        if k.key_id == key_id:
            found = True
            k = ApiKey(k.key_id, k.project, k.sha256, k.created_at, True)
        updated.append(k)
    if found:
        _write(path, updated)
    return found


class KeyRing:
    """Thread-safe lookup of the project for a presented key, reloading the file when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._checked = 0.0
        self._by_digest: dict[str, ApiKey] = {}
        self._reload()

    def _reload(self) -> None:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = None
        if mtime != self._mtime:
            self._by_digest = {k.sha256: k for k in load_keys(self.path)}
            self._mtime = mtime

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked >= _RELOAD_CHECK_SECONDS:
            with self._lock:
                self._checked = now
                self._reload()

    @property
    def enabled(self) -> bool:
        """True when any key exists (even revoked): then every request must present a valid key."""
        self._maybe_reload()
        return bool(self._by_digest)

    def project_for(self, presented: str | None) -> str | None:
        """The project of a valid key; None for missing, unknown or revoked keys. In embedded mode
        (no keys configured) every request belongs to the default project."""
        self._maybe_reload()
        if not self._by_digest:
            return DEFAULT_PROJECT
        if not presented:
            return None
        key = self._by_digest.get(digest(presented))
        if key is None or key.revoked:
            return None
        return key.project


def key_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """Keys come as `authorization: Bearer <key>` or `x-api-key: <key>`."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None

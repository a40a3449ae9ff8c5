"""The repository stands alone: no tracked file reaches for a path outside the checkout.

A user clones the repository into a folder with nothing beside it, so a test that opens `../something`, a
comment citing a document the repository does not hold, or a path of one developer's machine works only
where it was written. Four ways a file can do that are checked over every tracked file:

- a relative path that climbs out (`../x/y` resolved from the file's own folder and from the repository root
  both land outside it);
- an absolute path under a workstation's home or work folders (`/work`, `/home`, `/root`, `/Users`, `/mnt`),
  which names one machine's layout;
- Python that climbs out from `__file__` (`Path(__file__).resolve().parents[2]`, `REPO.parent / ...`);
- a Markdown document cited by name (`DESIGN.md`, `docs/x.md`) that no tracked file is.

System paths (`/usr/bin/chromium`, `/tmp/...`, `/etc/passwd` as a probe) are not the repository's content and
are left alone.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from tests.conftest import REPO

# Hostile inputs the security tests send on purpose: path traversal is what they check is refused.
HOSTILE_INPUTS = frozenset({"../../etc/passwd", "../otlp", "../beta"})
CLIMBING = re.compile(r"(?<![\w./-])((?:\.\./)+[\w.-][\w./-]*)")
WORKSTATION = re.compile(r"(?<![\w.-])(/(?:work|home|root|Users|mnt)/[\w./-]+)")
URL = re.compile(r"[A-Za-z][\w+.-]*://\S+")
DOC_NAME = re.compile(r"(?<![\w.-])([\w./-]*[A-Za-z][\w-]*\.md)\b")
# Files holding third-party data verbatim: they cite their own sources' documents, not ours.
DATA_PREFIX = "tests/data/"
SELF = "tests/test_self_contained.py"


def tracked_files(root: Path) -> list[str]:
    listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True, check=True).stdout.decode()
    return [name for name in listed.split("\0") if name]


def _read_text(root: Path, name: str) -> str | None:
    raw = (root / name).read_bytes()
    if b"\0" in raw:
        return None  # binary (a .binpb capture, a screenshot)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _resolve(base: PurePosixPath, relative: str) -> str | None:
    """`relative` taken from the repository-relative folder `base`, or None when it leaves the repository."""
    parts = list(base.parts)
    for part in PurePosixPath(relative).parts:
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts)


def tracked_paths(names: list[str]) -> set[str]:
    """Every tracked file and every folder that holds one."""
    paths = set(names)
    for name in names:
        paths.update(str(folder) for folder in PurePosixPath(name).parents if str(folder) != ".")
    return paths


def climbing_paths(name: str, text: str, existing: set[str]) -> list[str]:
    """`../` paths that, from the file's folder or from the root, name nothing the repository holds."""
    folder = PurePosixPath(name).parent
    found = []
    for match in CLIMBING.finditer(text):
        path = match.group(1).rstrip(".")
        if path in HOSTILE_INPUTS:
            continue
        targets = {_resolve(folder, path), _resolve(PurePosixPath(), path)}
        if not targets & existing:
            found.append(path)
    return found


def workstation_paths(text: str) -> list[str]:
    return [match.group(1) for match in WORKSTATION.finditer(text)]


def _file_base(node: ast.expr) -> bool:
    """`__file__`, `Path(__file__)` or either with `.resolve()` / `.absolute()` applied."""
    if isinstance(node, ast.Name):
        return node.id == "__file__"
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in {"resolve", "absolute"}:
            return _file_base(func.value)
        if isinstance(func, ast.Name) and func.id == "Path" and len(node.args) == 1:
            return _file_base(node.args[0])
    return False


def _levels_up(node: ast.expr, anchors: dict[str, int]) -> tuple[int, int] | None:
    """(folders between the anchor and the repository root, levels climbed) for a `.parent` / `.parents[k]`
    chain on `__file__` or on a module name bound to one; None for anything else."""
    climbed = 0
    while True:
        if isinstance(node, ast.Attribute) and node.attr == "parent":
            climbed += 1
            node = node.value
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "parents"
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, int)
        ):
            climbed += node.slice.value + 1
            node = node.value.value
        else:
            break
    if isinstance(node, ast.Name) and node.id in anchors:
        return anchors[node.id], climbed
    if _file_base(node):
        return -1, climbed  # -1: the file itself, resolved by the caller
    return None


def python_climbs(name: str, source: str) -> list[str]:
    """`__file__`-relative expressions in `source` (the tracked file `name`) that reach above the repository."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    file_depth = len(PurePosixPath(name).parent.parts)  # a file's own folder is climbed by its first .parent
    anchors: dict[str, int] = {}  # module name -> how many folders below the root it points at
    found: list[str] = []

    def depth_of(node: ast.expr) -> int | None:
        levels = _levels_up(node, anchors)
        if levels is None:
            return None
        anchor, climbed = levels
        start = file_depth + 1 if anchor == -1 else anchor  # the file counts as one level below its folder
        return start - climbed

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            depth = depth_of(node.value)
            if depth is not None:
                anchors[node.targets[0].id] = depth
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute | ast.Subscript):
            depth = depth_of(node)
            if depth is not None and depth < 0:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return sorted(set(found))


def missing_documents(name: str, text: str, documents: set[str]) -> list[str]:
    """Markdown files cited by name that are not tracked (by path from the root or the file's folder, or by
    file name alone when the citation is a bare name)."""
    folder = PurePosixPath(name).parent
    file_names = {PurePosixPath(doc).name for doc in documents}
    missing = []
    for match in DOC_NAME.finditer(text):
        cited = match.group(1)
        while cited.startswith("./"):
            cited = cited[2:]
        if "/" in cited:
            # From the root, from the file's folder, or under a package (pyproject's package-data globs).
            candidates = {str(PurePosixPath(cited)), str(folder / cited)}
            if not candidates & documents and not any(doc.endswith("/" + cited) for doc in documents):
                missing.append(cited)
        elif cited not in file_names:
            missing.append(cited)
    return missing


def problems_in(root: Path) -> dict[str, list[str]]:
    names = tracked_files(root)
    documents = {name for name in names if name.endswith(".md")}
    existing = tracked_paths(names)
    problems: dict[str, list[str]] = {}
    for name in names:
        if name == SELF:
            continue  # its own examples of what is refused
        if not (root / name).is_file():
            continue  # deleted in the work tree, not yet committed
        text = _read_text(root, name)
        if text is None:
            continue
        text = URL.sub(" ", text)  # a web address names a path on its own server, not on this machine
        found = climbing_paths(name, text, existing) + workstation_paths(text)
        if name.endswith(".py"):
            found += python_climbs(name, text)
        if not name.startswith(DATA_PREFIX):
            found += missing_documents(name, text, documents)
        if found:
            problems[name] = found
    return problems


def test_no_tracked_file_reaches_outside_the_repository() -> None:
    problems = problems_in(REPO)
    assert not problems, "tracked files refer to paths outside the repository:\n" + "\n".join(
        f"  {name}: {', '.join(found)}" for name, found in sorted(problems.items())
    )


EXAMPLE_TREE = tracked_paths(["README.md", "bench/README.md", "docs/design.md", "tests/data/otlp/README.md"])


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("tests/conftest.py", 'FIXTURES = "../siblings/fixtures"'),
        ("bench/normalise.py", "the entries of ../siblings/fixtures/semconv/spans.json"),
        ("bench/x.md", "see ../../elsewhere/notes.txt"),
        ("README.md", "the fixtures in /work/shared/fixtures/captured"),
        ("collector/x.py", "# copied from /home/dev/project/x.py"),
    ],
)
def test_text_paths_outside_are_found(name: str, text: str) -> None:
    assert climbing_paths(name, text, EXAMPLE_TREE) + workstation_paths(text)


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("tests/semconv.py", 'P = Path(__file__).resolve().parents[2] / "shared" / "spans.json"'),
        ("tests/conftest.py", 'REPO = Path(__file__).resolve().parents[1]\nSIBLINGS = REPO.parent / "siblings"'),
        ("bench/x.py", "ROOT = Path(__file__).parent.parent\nOUT = ROOT.parent"),
        ("setup.py", "UP = Path(__file__).parent.parent"),
    ],
)
def test_python_climbing_out_is_found(name: str, source: str) -> None:
    assert python_climbs(name, source)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("tests/conftest.py", 'FIXTURES = REPO / "tests" / "data" / "otlp"'),
        ("docs/design.md", "see ../README.md and ../bench/README.md"),
        ("tests/test_api_fuzz.py", '("/traces/../../etc/passwd", {})'),
        ("tests/test_sql_sandbox.py", 'for bad in ("../beta", "alpha/../beta"):'),
        ("README.md", "Chromium at /usr/bin/chromium, a baseline in /tmp/normalise_baseline.pkl"),
    ],
)
def test_paths_inside_or_on_the_system_pass(name: str, text: str) -> None:
    assert not climbing_paths(name, text, EXAMPLE_TREE) + workstation_paths(text)


def test_python_inside_the_repository_passes() -> None:
    source = "REPO = Path(__file__).resolve().parents[1]\nDATA = REPO / 'tests' / 'data'\nHERE = Path(__file__).parent"
    assert not python_climbs("tests/conftest.py", source)
    assert not python_climbs("bench/normalise.py", "ROOT = Path(__file__).resolve().parents[1]")


def test_documents_cited_must_be_tracked() -> None:
    documents = {"README.md", "docs/design.md", "bench/README.md"}
    assert missing_documents("collector/x.py", "ack after fsync (DESIGN.md invariant 1)", documents) == ["DESIGN.md"]
    assert missing_documents("query/x.py", "semconv.md §3", documents) == ["semconv.md"]
    assert missing_documents("query/x.py", "docs/design.md invariant 4, README.md", documents) == []
    assert missing_documents("bench/x.py", "see bench/README.md", documents) == []

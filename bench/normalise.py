"""Equivalence harness and micro-benchmark for span normalisation (`collector.normalise.normalise_span`,
`collector.messages.messages_from_log`).

Builds three corpora of decoded inputs:

- ``semconv``: the 38 entries of tests/data/otlp/semconv/spans.json (spans, and their correlated log records);
- ``captured``: every span of every file in tests/data/otlp/captured/ (``.binpb`` decoded as sent, ``.json``
  converted to protobuf first, as the HTTP receiver does);
- ``bench``: the first N requests (default 40) of the ingest benchmark workload for seeds 1 and 7.

Every output is compared with a baseline pickle by ``==`` and by ``repr`` (which also pins dict key order,
int/float/bool types and the exact JSON text of the message columns). Then prints µs per span (or per log
record) for each corpus, best of R passes.

    .venv/bin/python bench/normalise.py --write-baseline     # freeze the current outputs
    .venv/bin/python bench/normalise.py                      # compare with them and time
"""

from __future__ import annotations

import argparse
import gc
import pickle
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# This checkout's modules first (also `bench` and `tests`), whatever the virtualenv's editable install points at:
# the script then times whichever checkout it sits in.
sys.path.insert(0, str(ROOT))

import collector.messages as messages_module  # noqa: E402
import collector.normalise as normalise_module  # noqa: E402
from bench.workload import build_request  # noqa: E402
from collector.decode import decode_traces  # noqa: E402
from collector.normalise import messages_from_log, normalise_span  # noqa: E402
from collector.otlp_json import traces_from_json  # noqa: E402
from collector.otlp_model import DecodedLog, DecodedSpan  # noqa: E402
from tests.semconv_fixtures import entry_to_logs, entry_to_span, load_entries  # noqa: E402

CAPTURED = ROOT / "tests" / "data" / "otlp" / "captured"
DEFAULT_BASELINE = Path("/tmp/normalise_baseline.pkl")


def semconv_corpus() -> tuple[list[DecodedSpan], list[DecodedLog]]:
    entries = load_entries()
    spans = [entry_to_span(entry) for entry in entries]
    logs = [log for entry in entries for log in entry_to_logs(entry)]
    return spans, logs


def captured_corpus() -> list[DecodedSpan]:
    spans: list[DecodedSpan] = []
    for path in sorted(CAPTURED.iterdir()):
        if path.suffix == ".binpb":
            body = path.read_bytes()
        elif path.suffix == ".json":
            body = traces_from_json(path.read_bytes())[0].SerializeToString()
        else:
            continue
        spans.extend(decode_traces(body)[0])
    return spans


def bench_corpus(requests: int) -> list[DecodedSpan]:
    return [
        span
        for seed in (1, 7)
        for index in range(requests)
        for span in decode_traces(build_request(seed, index, 512)[0])[0]
    ]


def run(corpus: Sequence[Any], fn: Callable[[Any], Any]) -> list[Any]:
    return [fn(item) for item in corpus]


def clear_caches(plans: bool = True) -> None:
    """Forget what earlier spans taught the normaliser. The message memos are always cleared, so a repeated pass
    does not find every text memoised: the writer sees each span once. Key plans (per distinct attribute key
    tuple) are kept for the "steady" timing: an instrumentation sends the same keys over and over."""
    # (looked up by name, so that this script also times a checkout from before plans and memos)
    known_plans = getattr(normalise_module, "_PLANS", None)
    if plans and known_plans is not None:
        known_plans.clear()
    clear_memos = getattr(messages_module, "clear_memos", None)
    if clear_memos is not None:
        clear_memos()


def best_time(corpus: Sequence[Any], fn: Callable[[Any], Any], repeat: int, plans: bool) -> float:
    """Best wall time of ``repeat`` passes over the corpus, in µs per item, each pass starting with cleared
    memos (and cleared key plans when ``plans``)."""
    best = float("inf")
    for _ in range(repeat):
        clear_caches(plans)
        gc.collect()
        start = time.perf_counter()
        for item in corpus:
            fn(item)
        best = min(best, time.perf_counter() - start)
    return best / max(len(corpus), 1) * 1e6


def compare(name: str, outputs: list[Any], expected: list[str]) -> int:
    """The number of differing outputs (printing the first few)."""
    if len(outputs) != len(expected):
        print(f"{name}: {len(outputs)} outputs, baseline has {len(expected)}")
        return max(len(outputs), len(expected))
    differing = 0
    for index, (got, want) in enumerate(zip(outputs, expected, strict=True)):
        text = repr(got)
        if text != want:
            differing += 1
            if differing <= 3:
                print(f"{name}[{index}] differs:\n  got  {text[:600]}\n  want {want[:600]}")
    return differing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE, help="baseline pickle (%(default)s)")
    parser.add_argument("--write-baseline", action="store_true", help="store the current outputs as the baseline")
    parser.add_argument("--repeat", type=int, default=5, help="timed passes per corpus, best kept (%(default)s)")
    parser.add_argument("--requests", type=int, default=40, help="bench requests per seed (%(default)s)")
    parser.add_argument("--no-time", action="store_true", help="only check the outputs")
    args = parser.parse_args(argv)

    semconv_spans, semconv_logs = semconv_corpus()
    corpora: dict[str, tuple[Sequence[Any], Callable[[Any], Any]]] = {
        "semconv spans": (semconv_spans, normalise_span),
        "semconv logs": (semconv_logs, messages_from_log),
        "captured spans": (captured_corpus(), normalise_span),
        "bench spans": (bench_corpus(args.requests), normalise_span),
    }
    outputs = {name: run(corpus, fn) for name, (corpus, fn) in corpora.items()}
    total = sum(len(out) for out in outputs.values())

    status = 0
    if args.write_baseline:
        reprs = {name: [repr(item) for item in out] for name, out in outputs.items()}
        args.baseline.write_bytes(pickle.dumps(reprs, protocol=pickle.HIGHEST_PROTOCOL))
        print(f"baseline written: {total} outputs -> {args.baseline}")
    elif args.baseline.exists():
        baseline: dict[str, list[str]] = pickle.loads(args.baseline.read_bytes())
        if set(baseline) != set(outputs):
            print(f"baseline corpora {sorted(baseline)} != {sorted(outputs)}")
            return 1
        differing = sum(compare(name, outputs[name], baseline[name]) for name in outputs)
        if differing:
            print(f"DIFFERENT: {differing} of {total} outputs")
            status = 1
        else:
            print(f"identical: {total} spans and log records")
    else:
        print(f"no baseline at {args.baseline}: run with --write-baseline first")
        status = 1

    if not args.no_time:
        print(f"µs per item, best of {args.repeat} passes; cold: every pass starts with no key plan known (each")
        print("distinct attribute key tuple is new once per pass); steady: key plans kept from earlier passes")
        for name, (corpus, fn) in corpora.items():
            cold = best_time(corpus, fn, args.repeat, plans=True)
            steady = best_time(corpus, fn, args.repeat, plans=False)
            print(f"{name:>15}: {len(corpus):6d} items  cold {cold:8.2f}  steady {steady:8.2f}")
        by_kind: dict[str, list[Any]] = {}
        for item in corpora["bench spans"][0]:
            by_kind.setdefault(item.name.split(" ", 1)[0], []).append(item)
        for kind, items in by_kind.items():  # alone, a kind's spans miss what the others teach the memos
            cold = best_time(items, normalise_span, args.repeat, plans=True)
            print(f"{'bench ' + kind:>22}: {len(items):6d} items  cold {cold:8.2f}")
    return status


if __name__ == "__main__":
    sys.exit(main())

"""Cost of the registry's per-call guards, in process: argument validation, output DLP, result scan.

    python bench/registry.py [--repeats 300]

Target (issue #8): validation + DLP on a 100 KB result ≤ 2 ms. Rows, each on ~100 KB:

- `validate`: a typical `tools/call` argument object against a compiled 2020-12 schema (the
  guard's handle: no hashing per call), including the payload caps;
- `dlp text clean` / `dlp text seeded`: every built-in detector (secrets + pii) over one 100 KB
  text block (source code), without and with 20 seeded secrets;
- `dlp structured`: 100 KB of structuredContent (1,500 records of short strings: per-string
  overhead dominates here);
- `result scan`: the hidden-instruction markers over the 100 KB text;
- `guard-out`: `ResultGuard.apply` (scan + redaction obligations) on the text result;
- `validate + dlp` and `validate + guard-out`: what one call pays, the number the target is about.

Times are per call (perf_counter_ns), p50/p99 in milliseconds, after 20 warm-up calls.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from broker.registry.dlp import BUILTIN_DETECTORS, Redactor  # noqa: E402
from broker.registry.results import ResultGuard  # noqa: E402
from broker.registry.scan import RegistryScanner  # noqa: E402
from broker.registry.validate import ArgumentValidator  # noqa: E402
from tests.fixtures import fixture_script, import_script  # noqa: E402

TARGET_MS = 2.0
SIZE = 100 * 1024
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "maxLength": 4096},
        "head": {"type": "integer", "minimum": 1},
        "encoding": {"enum": ["utf-8", "latin-1"]},
        "options": {
            "type": "object",
            "properties": {
                "follow": {"type": "boolean"},
                "exclude": {"type": "array", "items": {"type": "string"}},
            },
            "additionalProperties": False,
        },
    },
    "required": ["path"],
    "additionalProperties": False,
}
ARGUMENTS = {
    "path": "src/broker/registry/dlp.py",
    "head": 200,
    "encoding": "utf-8",
    "options": {"follow": True, "exclude": ["*.pyc", "__pycache__"]},
}


def source_text(size: int) -> str:
    """Real text: the repository's own Python source, repeated up to `size` characters."""
    chunks: list[str] = []
    total = 0
    for path in sorted((ROOT / "broker").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        chunks.append(text)
        total += len(text)
        if total >= size:
            break
    return "".join(chunks)[:size]


def seeded(text: str, secrets: list[str], count: int) -> str:
    step = len(text) // (count + 1)
    parts = [text[i * step : (i + 1) * step] for i in range(count + 1)]
    return "".join(
        part + ("\n" + secrets[i % len(secrets)] + "\n" if i < count else "") for i, part in enumerate(parts)
    )


def records(size: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    total = 0
    i = 0
    while total < size:
        record = {
            "id": i,
            "name": f"item-{i}",
            "path": f"/srv/data/{i // 100}/file-{i}.txt",
            "status": "ok",
            "size": i * 37,
        }
        out.append(record)
        total += 70
        i += 1
    return out


def measure(call: Callable[[], Any], repeats: int) -> list[float]:
    for _ in range(20):
        call()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return samples


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    poisoned = import_script(fixture_script("poisoned"))

    validator = ArgumentValidator()
    handle = validator.handle(SCHEMA)
    redactor = Redactor()
    scanner = RegistryScanner()
    guard = ResultGuard(scanner, redactor)
    detectors = sorted(BUILTIN_DETECTORS)
    obligations = [{"type": "redact", "detectors": ["secrets", "pii"]}]

    text = source_text(SIZE)
    clean = {"content": [{"type": "text", "text": text}]}
    dirty = {"content": [{"type": "text", "text": seeded(text, list(poisoned.SEEDED_SECRETS.values()), 20)}]}
    structured = {
        "content": [{"type": "text", "text": "1500 records"}],
        "structuredContent": {"items": records(SIZE)},
    }

    def validate() -> None:
        validator.check(handle, ARGUMENTS, tool="fs__read_text_file")

    rows: list[tuple[str, list[float]]] = [
        ("validate (typical arguments)", measure(validate, args.repeats)),
        ("dlp text clean (100 KB)", measure(lambda: redactor.apply(clean, detectors), args.repeats)),
        (
            "dlp text seeded (100 KB, 20 secrets)",
            measure(lambda: redactor.apply(dirty, detectors), args.repeats),
        ),
        (
            "dlp structured (100 KB, 1500 records)",
            measure(lambda: redactor.apply(structured, detectors), args.repeats),
        ),
        ("result scan (100 KB text)", measure(lambda: scanner.scan_result("s", "t", clean), args.repeats)),
        (
            "guard-out (scan + redact, 100 KB text)",
            measure(lambda: guard.apply("s", "t", clean, obligations), args.repeats),
        ),
        (
            "validate + dlp (100 KB text)",
            measure(lambda: (validate(), redactor.apply(clean, detectors)), args.repeats),
        ),
        (
            "validate + guard-out (100 KB text)",
            measure(lambda: (validate(), guard.apply("s", "t", clean, obligations)), args.repeats),
        ),
        (
            "validate + guard-out (100 KB structured)",
            measure(lambda: (validate(), guard.apply("s", "t", structured, obligations)), args.repeats),
        ),
    ]
    assert redactor.apply(clean, detectors)[0] is clean, "the benchmark text must be clean"
    assert redactor.apply(dirty, detectors)[1].total >= 20

    print(f"| case | p50 ms | p99 ms | mean ms |  (target: validate + dlp ≤ {TARGET_MS} ms)")
    print("|---|---:|---:|---:|")
    for name, samples in rows:
        print(
            f"| {name} | {percentile(samples, 0.5):.3f} | {percentile(samples, 0.99):.3f} | "
            f"{statistics.fmean(samples):.3f} |"
        )
    combined = percentile(rows[6][1], 0.5)
    verdict = "within" if combined <= TARGET_MS else "OVER"
    print(f"\nvalidate + dlp p50 = {combined:.3f} ms: {verdict} the target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

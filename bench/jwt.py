"""JWT validation cost per request, in process, with the issuer's keys already cached.

    python bench/jwt.py [--tokens 2000] [--repeats 20000]

A real JWKS (RSA-2048 and P-256 keys made here, served on 127.0.0.1) is fetched once before
measuring, so no row includes a key fetch. Rows:

- first verification of distinct tokens (RS256, ES256): signature + claim checks, every
  token new to the verifier's cache — what a client's *first* request with a token costs;
- a repeated token (the verified-token cache): what every later request with the same
  token costs — the per-request path, target ≤ 0.1 ms p50;
- `authenticate`: the same through `Authenticator.authenticate` (header parsing, scope
  check, claims → principal), i.e. what the HTTP front does per request;
- an API key (sha256 lookup), for comparison.

Times are per call (perf_counter_ns around one `await`), p50/p99 in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder is sys.path[0] and this file would shadow PyJWT (`import jwt`).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

from broker.config import ClaimMappingConfig  # noqa: E402
from broker.identity.authenticator import Authenticator, api_key_digest  # noqa: E402
from broker.identity.jwt import IssuerConfig, JwtVerifier  # noqa: E402
from broker.identity.principal import Principal  # noqa: E402
from tests.support.tokens import JwksServer, Minter, SigningKey  # noqa: E402

ISSUER = "https://idp.bench"
AUDIENCE = "https://broker.bench/mcp"
TARGET_US = 100.0


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(calls: list[Callable[[], Awaitable[Any]]]) -> list[float]:
    samples = []
    for call in calls:
        start = time.perf_counter_ns()
        await call()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


async def run(tokens: int, repeats: int) -> list[tuple[str, list[float]]]:
    rsa, ec = SigningKey.rsa("bench-rsa"), SigningKey.ec("bench-ec")
    claims: dict[str, Any] = {"roles": ["engineer"], "tenant": "acme", "scope": "tools.read tools.write"}
    rows: list[tuple[str, list[float]]] = []
    with JwksServer([rsa, ec]) as jwks:
        config = IssuerConfig(ISSUER, (AUDIENCE,), ("RS256", "ES256"), jwks_url=jwks.url)
        verifier = JwtVerifier([config], cache_size=tokens * 4 + 10)
        api_key = "mcpk_bench_" + "k" * 32
        authenticator = Authenticator(
            verifier=verifier,
            mappings={ISSUER: ClaimMappingConfig()},
            api_keys={api_key_digest(api_key): Principal("Agent", "robot", "acme", ("engineer",))},
        )
        try:
            for name, key in (("RS256", rsa), ("ES256", ec)):
                minter = Minter(ISSUER, AUDIENCE, key=key, lifetime=3600)
                await verifier.verify(minter.token("warm-up", **claims))  # the JWKS fetch happens here
                distinct = [minter.token(f"user-{i}", **claims) for i in range(tokens)]
                rows.append(
                    (
                        f"{name} first verification (distinct tokens)",
                        await timed([_v(verifier, t) for t in distinct]),
                    )
                )
                headers = [f"Bearer {minter.token(f'user-{i}', **claims)}" for i in range(tokens)]
                rows.append(
                    (f"{name} authenticate, first use", await timed([_a(authenticator, h) for h in headers]))
                )
                repeated = distinct[0]
                rows.append(
                    (f"{name} repeated token (cache hit)", await timed([_v(verifier, repeated)] * repeats))
                )
                header = f"Bearer {repeated}"
                rows.append(
                    (
                        f"{name} authenticate, repeated token",
                        await timed([_a(authenticator, header)] * repeats),
                    )
                )
            rows.append(
                ("API key authenticate", await timed([_a(authenticator, f"Bearer {api_key}")] * repeats))
            )
            assert jwks.requests == 1, f"the JWKS was fetched {jwks.requests} times: the keys were not cached"
        finally:
            await authenticator.aclose()
    return rows


def _v(verifier: JwtVerifier, token: str) -> Callable[[], Awaitable[Any]]:
    return lambda: verifier.verify(token)


def _a(authenticator: Authenticator, header: str) -> Callable[[], Awaitable[Any]]:
    return lambda: authenticator.authenticate(header)


def table(rows: list[tuple[str, list[float]]]) -> str:
    lines = [
        "| path | n | p50 µs | p99 µs | mean µs | ≤ 100 µs p50 (per-request target) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, samples in rows:
        p50 = percentile(samples, 0.50)
        per_request = "repeated" in name or "API key" in name
        verdict = ("yes" if p50 <= TARGET_US else "**NO**") if per_request else "(first use only)"
        lines.append(
            f"| {name} | {len(samples)} | {p50:.1f} | {percentile(samples, 0.99):.1f} | "
            f"{statistics.fmean(samples):.1f} | {verdict} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2000, help="distinct tokens per algorithm")
    parser.add_argument("--repeats", type=int, default=20000, help="verifications of one repeated token")
    args = parser.parse_args()
    rows = asyncio.run(run(args.tokens, args.repeats))
    print(table(rows))


if __name__ == "__main__":
    main()

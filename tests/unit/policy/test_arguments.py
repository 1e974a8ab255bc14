"""The argument summary policies see: docs/policy-arguments.md, rule by rule.

The doc's example tables are parsed and checked here (test_doc_examples), so the doc
and the code cannot drift apart. The rest: key/value detection, traversal variants
checked against independent POSIX/Windows readings, idempotence, digests, limits,
input errors, and a printed micro-benchmark.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import ntpath
import posixpath
import random
import re
import timeit
import types
import unicodedata
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
import pytest

from broker.policy.arguments import (
    DEFAULT_LIMITS,
    PROBLEM_CODES,
    ArgumentLimits,
    ArgumentSummary,
    canonical_json,
    canonical_path,
    normalize_url,
    summarize,
)

DOC = Path(__file__).resolve().parents[3] / "docs" / "policy-arguments.md"

# ---------------------------------------------------------------------------------------------
# the doc's example tables

_MARKER = re.compile(r"^<!-- examples: (\w+)(?: (\{.*\}))? -->$")
_ROW = re.compile(r"^\| `(.+?)` \| `(.+?)` \|(.*)\|$")
_SUMMARY_FIELDS = ("arguments", "paths", "hosts", "limits", "problems")


def _doc_examples() -> list[Any]:
    lines = DOC.read_text(encoding="utf-8").split("\n")
    out: list[Any] = []
    kind: str | None = None
    limits: dict[str, int] = {}
    table = 0
    for lineno, line in enumerate(lines, 1):
        m = _MARKER.match(line)
        if m:
            kind, limits, table = m.group(1), orjson.loads(m.group(2) or "{}"), lineno
            continue
        if kind is None:
            continue
        if not line.startswith("|"):
            if out and out[-1].values[0] == kind:
                kind = None  # the table after the marker ended
            continue
        row = _ROW.match(line)
        if row is None:
            continue  # header and separator rows
        out.append(pytest.param(kind, limits, row.group(1), row.group(2), id=f"doc:{table}:{lineno}"))
    return out


DOC_EXAMPLES = _doc_examples()


def test_doc_has_examples_for_every_rule_kind() -> None:
    kinds = [p.values[0] for p in DOC_EXAMPLES]
    assert len(kinds) >= 110
    assert set(kinds) == {"summarize", "canonical_path", "normalize_url", "canonical_json", "digest"}
    # every `<!-- examples -->` marker is followed by at least one parsed row
    markers = sum(1 for line in DOC.read_text(encoding="utf-8").split("\n") if _MARKER.match(line))
    tables = {str(p.id).split(":")[1] for p in DOC_EXAMPLES}
    assert markers >= 10
    assert len(tables) == markers


@pytest.mark.parametrize(("kind", "limits", "given", "expected"), DOC_EXAMPLES)
def test_doc_examples(kind: str, limits: dict[str, int], given: str, expected: str) -> None:
    value = orjson.loads(given)
    if kind == "canonical_path":
        assert canonical_path(value) == orjson.loads(expected)
    elif kind == "normalize_url":
        want = orjson.loads(expected)
        assert normalize_url(value) == (tuple(want) if want is not None else None)
    elif kind == "canonical_json":
        assert canonical_json(value).decode("utf-8") == expected
    elif kind == "digest":
        assert summarize(value).digest == orjson.loads(expected)
    else:
        assert kind == "summarize"
        summary = summarize(value, ArgumentLimits(**limits))
        want = orjson.loads(expected)
        assert set(want) <= set(_SUMMARY_FIELDS)
        assert "arguments" in want
        expected_fields = {
            "arguments": want["arguments"],
            "paths": want.get("paths", []),
            "hosts": want.get("hosts", []),
            "limits": want.get("limits", {}),
            "problems": want.get("problems", []),
        }
        assert _fields(summary) == expected_fields
        # and as written: 1 is not 1.0, -0.0 is not 0.0
        assert canonical_json(_fields(summary)) == canonical_json(expected_fields)
        _check_problem_codes(summary)


def _fields(s: ArgumentSummary) -> dict[str, Any]:
    return {
        "arguments": s.arguments,
        "paths": list(s.paths),
        "hosts": list(s.hosts),
        "limits": s.limits,
        "problems": list(s.problems),
    }


def _check_problem_codes(s: ArgumentSummary) -> None:
    for problem in s.problems:
        assert problem.rpartition(": ")[2] in PROBLEM_CODES, problem


def test_doc_lists_every_problem_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## 8. Problem codes") :]
    documented = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", section, re.M))
    assert documented == PROBLEM_CODES


# ---------------------------------------------------------------------------------------------
# what counts as a path, and as a URL

KEY_CASES = [
    # (key, is a path key)
    ("path", True),
    ("paths", True),
    ("file", True),
    ("files", True),
    ("filename", True),
    ("fileName", True),
    ("file_name", True),
    ("file_path", True),
    ("filePath", True),
    ("FILE_PATH", True),
    ("XMLFilePath", True),
    ("sourcePath", True),
    ("source_dir", True),
    ("dir", True),
    ("directory", True),
    ("working_directory", True),
    ("folder", True),
    ("root", True),
    ("cwd", True),
    ("source", True),
    ("destination", True),
    ("src", True),
    ("dst", True),
    ("dest", True),
    ("target", True),
    ("targets", True),
    ("output_file", True),
    ("input-file", True),
    ("path2", True),
    ("repo_path", True),
    ("workdir", True),
    ("pathname", True),
    ("content", False),
    ("file_content", False),
    ("source_code", False),
    ("target_language", False),
    ("message", False),
    ("filepath_hint", False),
    ("profile", False),
    ("", False),
    ("_", False),
]


@pytest.mark.parametrize(("key", "is_path"), KEY_CASES)
def test_path_keys(key: str, is_path: bool) -> None:
    s = summarize({key: "a/b"})
    if is_path:
        assert s.arguments == {key: "./a/b"}
        assert s.paths == ("./a/b",)
    else:
        assert s.arguments == {key: "a/b"}
        assert s.paths == ()


@pytest.mark.parametrize(
    ("key", "is_url"),
    [
        ("url", True),
        ("urls", True),
        ("uri", True),
        ("baseUrl", True),
        ("callback_url", True),
        ("imageURL", True),
        ("href", True),
        ("endpoint", True),
        ("webhook", True),
        ("link", False),
        ("curl_args", False),
        ("urlencoded", False),
    ],
)
def test_url_keys(key: str, is_url: bool) -> None:
    s = summarize({key: "example.com/x"})
    assert s.arguments == {key: "example.com/x"}
    assert s.problems == ((f"{key}: url.no_scheme",) if is_url else ())


VALUE_CASES = [
    # (value under a key that does not name a path, its canonical path)
    ("/", "/"),
    ("/etc/passwd", "/etc/passwd"),
    ("/workspace/../etc", "/etc"),
    ("./a", "./a"),
    ("../a", "../a"),
    (".\\a", "./a"),
    (".", "."),
    ("..", ".."),
    ("~", "~"),
    ("~/x", "~/x"),
    ("~alice", "~alice"),
    ("~alice/x", "~alice/x"),
    ("C:\\x", "C:/x"),
    ("c:/x", "C:/x"),
    ("file:///x", "/x"),
    ("FILE:/x", "/x"),
]
UNSAFE_VALUES = ["..\\a", "\\\\server\\x", "/a\nb", "~/../x", "file://host/x", "/a/b\tc"]
NOT_PATH_VALUES = [
    "",
    "a/b",
    "hello",
    "// comment",
    "// comment\nx = 1",
    "/* comment */",
    "\\frac{1}{2}",
    "~5 minutes",
    ".hidden",
    "...",
    " /etc/passwd",
    "file:relative",
    "C:",
    "C:x",
    "mailto:a@example.com",
    "note: /etc",
]


@pytest.mark.parametrize(("value", "canonical"), VALUE_CASES)
def test_value_detection(value: str, canonical: str) -> None:
    s = summarize({"note": value})
    assert s.arguments == {"note": canonical}
    assert s.paths == (canonical,)
    assert s.problems == ()


@pytest.mark.parametrize("value", UNSAFE_VALUES)
def test_value_detection_unsafe(value: str) -> None:
    s = summarize({"note": value})
    assert s.arguments == {"note": None}
    assert s.paths == ()
    assert len(s.problems) == 1


@pytest.mark.parametrize("value", NOT_PATH_VALUES)
def test_value_detection_not_a_path(value: str) -> None:
    s = summarize({"note": value})
    assert s.arguments == {"note": value}
    assert s.paths == ()
    assert s.problems == ()


def test_path_key_carries_into_arrays_not_objects() -> None:
    s = summarize({"paths": ["a", ["b"], {"mode": "r/w", "file": "c"}]})
    assert s.arguments == {"paths": ["./a", ["./b"], {"mode": "r/w", "file": "./c"}]}
    assert s.paths == ("./a", "./b", "./c")


def test_url_beats_path_key_and_file_uri_beats_url_key() -> None:
    s = summarize({"path": "HTTPS://Example.com/a/../b", "uri": "file:///workspace/./x"})
    assert s.arguments == {"path": "https://example.com/b", "uri": "/workspace/x"}
    assert s.paths == ("/workspace/x",)
    assert s.hosts == ("example.com",)


def test_empty_string_under_path_key_is_current_directory() -> None:
    s = summarize({"path": "", "note": "", "url": ""})
    assert s.arguments == {"path": ".", "note": "", "url": ""}
    assert s.paths == (".",)
    assert s.problems == ()


def test_url_key_value_that_looks_like_a_path_is_a_path() -> None:
    s = summarize({"uri": "/workspace/../etc/passwd"})
    assert s.arguments == {"uri": "/etc/passwd"}
    assert s.paths == ("/etc/passwd",)
    assert s.problems == ()


# ---------------------------------------------------------------------------------------------
# canonical paths: more cases than the doc shows

PATH_CASES = [
    ("/workspace/a/b/../../../etc", "/etc"),
    ("/workspace/a/./././b", "/workspace/a/b"),
    ("/workspace///a////b///", "/workspace/a/b"),
    ("/workspace/..", "/"),
    ("/workspace/../..", "/"),
    ("/workspace/...", "/workspace/..."),
    ("/workspace/..a", "/workspace/..a"),
    ("/workspace/a..", "/workspace/a.."),
    ("/workspace/.hidden", "/workspace/.hidden"),
    ("./", "."),
    ("./.", "."),
    ("a/..", "."),
    ("a/../..", ".."),
    ("../../a/../b", "../../b"),
    ("./../a", "../a"),
    ("a//b", "./a/b"),
    ("~/", "~"),
    ("~//x", "~/x"),
    ("~/a/../../..", None),
    ("~/./x", "~/x"),
    ("a/../~/x", "./~/x"),
    ("a/../C:/x", "./C:/x"),
    ("file:///", "/"),
    ("file:///workspace/%2e%2e/etc", "/etc"),
    ("file:///workspace/%252e%252e", "/workspace/%2e%2e"),
    ("file:///workspace/a%5c..%5c..%5cetc", None),
    ("file:///workspace/a%00b", None),
    ("file:////server/share", None),
    ("file://LOCALHOST/x", "/x"),
    ("file:///c:", "C:/"),
    ("file:///C:/a/../../b", None),
    ("file://", "/"),
    ("C:/a/../..", None),
    ("C:\\a\\..", "C:/"),
    ("C:\\\\a", "C:/a"),
    ("z:/", "Z:/"),
    ("1:/x", "./1:/x"),
    ("src\\a\\b.py", "./src/a/b.py"),
    (".\\src\\main.py", "./src/main.py"),
    ("src\\.\\main.py", "./src/main.py"),
    ("a\\..", None),
    ("\\x", None),
    ("/\\x", None),
    ("\\/x", None),
    ("~\\x", None),
    ("/x\\y", None),
    ("/workspace/a\tb", None),
    ("/workspace/a\rb", None),
    ("/workspace/a\x7fb", None),
    ("/workspace/a\x85b", None),
    ("/workspace/a\u2028b", None),
    ("/workspace/a\u200eb", None),
    ("/workspace/a\ufeffb", None),
    ("/workspace/a\u00a0b", "/workspace/a\u00a0b"),
    ("/workspace/\u65e5\u672c", "/workspace/\u65e5\u672c"),
    ("/workspace/A\u030a", "/workspace/\u00c5"),
    ("/\u212aube/x", "/Kube/x"),
    ("/workspace/%2E%2E/etc", "/workspace/%2E%2E/etc"),
    ("/workspace/a b/c", "/workspace/a b/c"),
]


@pytest.mark.parametrize(("value", "canonical"), PATH_CASES)
def test_canonical_path(value: str, canonical: str | None) -> None:
    assert canonical_path(value) == canonical
    if canonical is not None:
        assert canonical_path(canonical) == canonical


def test_very_long_paths() -> None:
    long = "/workspace/" + "a/" * 3000 + "x"
    assert canonical_path(long) == long
    s = summarize({"path": long})
    assert s.arguments == {"path": None}
    assert s.problems == ("path: path.too_long",)
    assert s.limits == {"truncated": {"path": len(long)}}
    # resolving may bring a long path back under the limit: judged after canonicalisation
    s = summarize({"path": "/workspace/" + "a/../" * 1000 + "x"})
    assert s.arguments == {"path": "/workspace/x"}
    assert s.problems == ()
    # a path whose canonical length is exactly max_string is kept
    exact = "/" + "a" * (DEFAULT_LIMITS.max_string - 1)
    assert summarize({"path": exact}).arguments == {"path": exact}


# ---------------------------------------------------------------------------------------------
# traversal attempts: never under /workspace unless every reading is


def _under(p: str, root: str = "/workspace") -> bool:
    return p == root or p.startswith(root + "/")


def _readings(raw: str) -> list[str] | None:
    """How upstreams could read `raw`: POSIX bytes, Windows, URL-decoded, NFKC. None: not a path."""
    p = raw
    if raw[:5].lower() == "file:":
        parts = urlsplit(raw)
        if parts.netloc.lower() not in ("", "localhost"):
            return None
        p = unquote(parts.path, errors="replace") + ("?" + parts.query if parts.query else "")
        p = p + ("#" + parts.fragment if parts.fragment else "")
    out = []
    for q in (p, unquote(p), unquote(unquote(p)), unicodedata.normalize("NFKC", p)):
        posix = posixpath.normpath(q)
        if posix.startswith("//"):
            posix = "/" + posix.lstrip("/")
        out.append(posix)
        out.append(ntpath.normpath(q).replace("\\", "/"))
    return out


TRAVERSALS = [
    "/workspace/../etc/passwd",
    "/workspace/a/../../etc/passwd",
    "/workspace/./../etc",
    "/workspace/..",
    "/workspace/../workspace2/x",
    "/workspace/../workspace/x",
    "/workspace//../etc",
    "/workspace/.../etc",
    "/workspace/..;/etc",
    "/workspace/..\\etc",
    "/workspace\\..\\etc",
    "/workspace/a\\..\\..\\etc",
    "/etc/profile.d/x\\..\\..\\..\\workspace\\f.sh",
    "/workspace\\x",
    "\\workspace\\..\\etc",
    "\\\\workspace\\x",
    "//workspace/x",
    "///workspace/../etc",
    "/workspace/%2e%2e/etc",
    "/workspace/%2E%2E/etc",
    "/workspace/..%2fetc",
    "/workspace/..%2Fetc",
    "/workspace/%2e%2e%2fetc",
    "/workspace/..%5cetc",
    "/workspace/%252e%252e/etc",
    "/workspace/..%00/etc",
    "/workspace/\uff0e\uff0e/etc",
    "/workspace/\u2025/etc",
    "/workspace/\uff0e\uff0e\uff0fetc",
    "/workspace/\uff3c..\uff3cetc",
    "/workspace/a\x00/../../etc",
    "/workspace/a\n/../../etc/passwd",
    "/workspace/a\r/../../etc",
    "/workspace/\u202e/../../etc",
    "file:///workspace/../etc/passwd",
    "file:///workspace/..%2fetc",
    "file:///workspace/%2e%2e/etc",
    "file:///workspace/%2e%2e%2f%2e%2e%2fetc",
    "file:///workspace/x#/../../etc",
    "file:///workspace/x?/../../etc",
    "file://localhost/workspace/../etc",
    "file://workspace/x",
    "file:////workspace/x",
    "file:/workspace/../etc",
    "file:///workspace/%5c..%5c..%5cetc",
    "file:///workspace/%C0%AE%C0%AE/etc",
    "file:///workspace/%ff/../../etc",
    "~/../workspace/x",
    "~/../../workspace",
    "../workspace/x",
    "./../../workspace/x",
    "workspace/x",
    "C:/workspace/../../etc",
    "C:\\workspace\\..\\..\\etc",
    "C:/../workspace/x",
    "/workspace/x/..",
    "/workspace/x/../..",
    "/workspace/./x",
    "/workspace/x",
    "/workspace",
    "/workspace/",
]

_ALPHABET = [
    "workspace", "etc", "x", "..", ".", "", "%2e%2e", "%2e", "%2f", "..%2f", "%5c", "..\\", "\\..",
    "\\", "~", "C:", "\uff0e\uff0e", "\u2025", "%00", "\x00", "\n", "cafe\u0301", "..;", "...", "%252e%252e",
]  # fmt: skip
_PREFIXES = [
    "",
    "/",
    "/workspace/",
    "./",
    "../",
    "file://",
    "file:///",
    "file://localhost/",
    "~/",
    "C:\\",
    "\\\\",
]
_SEPARATORS = ["/", "/", "/", "\\", "//"]


def _generated(n: int, seed: int = 20260) -> list[str]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        parts = [rnd.choice(_ALPHABET) for _ in range(rnd.randint(1, 6))]
        seps = [rnd.choice(_SEPARATORS) for _ in parts]
        body = "".join(itertools.chain.from_iterable(zip(parts, seps, strict=True)))[: -len(seps[-1])]
        out.append(rnd.choice(_PREFIXES) + body)
    return out


CORPUS = TRAVERSALS + _generated(6000)


def _segments(p: str) -> list[str]:
    """The names after a canonical path's root (`/`, `X:/`, `~user/`, `./`, leading `../`s)."""
    if p in ("/", ".", "..") or re.fullmatch(r"[A-Z]:/|~[^/]*", p):
        return []
    if p.startswith("/"):
        return p[1:].split("/")
    if p[1:3] == ":/":
        return p[3:].split("/")
    if p.startswith("~"):
        return p.split("/")[1:]
    if p.startswith("./"):
        return p[2:].split("/")
    assert p.startswith("../"), p
    segs = p.split("/")
    while segs and segs[0] == "..":
        segs.pop(0)
    return segs


def _assert_safe(raw: str, s: ArgumentSummary) -> None:
    readings = _readings(raw)
    for p in s.paths:
        assert canonical_path(p) == p, (raw, p)  # canonical: a fixed point
        assert not any(seg in ("", ".", "..") for seg in _segments(p)), (raw, p)
        if _under(p):
            assert readings is not None, (raw, p)
            # POSIX and Windows readings must agree; URL-decoding and NFKC readings too unless
            # a problem says they may differ
            strict = readings[:2]
            for r in strict if s.problems else readings:
                assert _under(r), (raw, p, r)


@pytest.mark.parametrize("raw", TRAVERSALS)
def test_traversal_variants(raw: str) -> None:
    for key in ("path", "note"):
        s = summarize({key: raw})
        _assert_safe(raw, s)
        _check_problem_codes(s)


def test_traversal_corpus() -> None:
    under = 0
    for raw in CORPUS:
        for key in ("path", "note", "files"):
            s = summarize({key: [raw] if key == "files" else raw})
            _assert_safe(raw, s)
            under += any(_under(p) for p in s.paths)
    assert under > 100  # the corpus does reach /workspace legitimately


def test_windows_prefix_is_not_reached_by_traversal() -> None:
    for raw in CORPUS:
        p = canonical_path(raw.replace("workspace", "ws"))
        if p is not None and p.startswith("C:/ws/"):
            assert ntpath.normpath(raw.replace("workspace", "ws")).replace("\\", "/").startswith("C:/ws/")


# ---------------------------------------------------------------------------------------------
# URLs: more cases than the doc shows

URL_CASES = [
    ("http://EXAMPLE.com", ("http://example.com/", "example.com")),
    ("http://example.com:80/", ("http://example.com/", "example.com")),
    ("http://example.com:/", ("http://example.com/", "example.com")),
    ("https://example.com:8443", ("https://example.com:8443/", "example.com")),
    ("ws://example.com:80/x", ("ws://example.com/x", "example.com")),
    ("ftp://example.com:2121/", ("ftp://example.com:2121/", "example.com")),
    ("https://example.com/a/b/../../../x", ("https://example.com/x", "example.com")),
    ("https://example.com/a/.", ("https://example.com/a/", "example.com")),
    ("https://example.com/a/..", ("https://example.com/", "example.com")),
    ("https://example.com//a", ("https://example.com//a", "example.com")),
    ("https://example.com/%41%62", ("https://example.com/Ab", "example.com")),
    ("https://example.com/%e2%82%ac", ("https://example.com/%E2%82%AC", "example.com")),
    ("https://example.com/.%2e/x", ("https://example.com/x", "example.com")),
    ("https://example.com?q", ("https://example.com/?q", "example.com")),
    ("https://example.com#f", ("https://example.com/#f", "example.com")),
    ("https://%65xample.com/", ("https://example.com/", "example.com")),
    ("https://EXAMPLE\uff0ecom/", ("https://example.com/", "example.com")),
    ("https://\u4f8b\u3048.jp/", ("https://xn--r8jz45g.jp/", "xn--r8jz45g.jp")),
    ("https://a@b@example.com/", ("https://example.com/", "example.com")),
    ("http://127.1/", ("http://127.0.0.1/", "127.0.0.1")),
    ("http://0177.0.0.1/", ("http://127.0.0.1/", "127.0.0.1")),
    ("http://0x7f000001/", ("http://127.0.0.1/", "127.0.0.1")),
    ("http://127.0.0.1./", ("http://127.0.0.1/", "127.0.0.1")),
    ("http://[0:0:0:0:0:0:0:1]/", ("http://[::1]/", "::1")),
    ("http://[::1]:8080/", ("http://[::1]:8080/", "::1")),
    ("git+ssh://git@github.com/o/r.git", ("git+ssh://github.com/o/r.git", "github.com")),
    ("custom:///x", ("custom:///x", "")),
    ("https://example.com/a b", ("https://example.com/a b", "example.com")),
    # invalid or ambiguous
    ("https://example.com:65536/", None),
    ("https://example.com:8o/", None),
    ("https://[::1/", None),
    ("https://[::1]x/", None),
    ("https://[v1.x]/", None),
    ("https://[zz::1]/", None),
    ("http://1.2.3.256/", None),
    ("http://1.2.3.4.5/", None),
    ("http://09.1.1.1/", None),
    ("http://example.123/", None),
    ("http://a..b/", None),
    ("http://.a/", None),
    ("http://a<b/", None),
    ("http://a^b/", None),
    ("http://a%zz/", None),
    ("http://%ff/", None),
    ("http:\\\\evil.example\\", None),
    ("https:/evil.example/", None),
    ("http://evil.example\\x", None),
    ("http://ex\tample.com/", None),
    ("http://:80/", None),
    ("hello", None),
    ("C://x", None),
]


@pytest.mark.parametrize(("value", "expected"), URL_CASES)
def test_normalize_url(value: str, expected: tuple[str, str] | None) -> None:
    assert normalize_url(value) == expected
    if expected is not None:
        assert normalize_url(expected[0]) == expected


def test_url_control_characters_report_the_stripped_host() -> None:
    s = summarize({"url": "https://ev\til.example/\x01"})
    assert s.arguments == {"url": None}
    assert s.hosts == ("evil.example",)
    assert s.problems == ("url: url.control_char",)
    s = summarize({"url": "https://example.com/a\u202eb"})
    assert s.arguments == {"url": None}
    assert s.hosts == ("example.com",)


def test_prose_that_starts_like_a_url_stays_text() -> None:
    for text in ("http: the protocol", "https://example.com is down", "ftp: old", "https:// nothing"):
        s = summarize({"text": text})
        assert s.arguments == {"text": text}
        assert s.hosts == ()
        assert s.problems == ()
    # but not under URL or path keys
    s = summarize({"url": "https://example.com is down"})
    assert s.arguments == {"url": None}
    assert s.problems == ("url: url.invalid",)


# ---------------------------------------------------------------------------------------------
# idempotence


def _idempotence_inputs() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in DOC_EXAMPLES:
        kind, limits, given, _ = p.values
        value = orjson.loads(given)
        if kind == "summarize" and not limits:
            out.append(value)
        elif kind in ("canonical_path", "normalize_url"):
            out.append({"path": value, "note": value, "url": value, "text": value})
    for raw in CORPUS[:2000]:
        out.append({"path": raw, "note": raw, "files": [raw], "uri": raw})
    for value, _ in URL_CASES:
        out.append({"url": value, "text": value})
    return out


def test_idempotence() -> None:
    for args in _idempotence_inputs():
        s1 = summarize(args)
        s2 = summarize(s1.arguments)
        assert s2.arguments == s1.arguments, args
        assert s2.paths == s1.paths, args
        if not s1.problems:
            assert s2.hosts == s1.hosts, args
            assert s2.problems == (), args
        assert set(s2.hosts) <= set(s1.hosts), args
        for url in _strings(s1.arguments):
            n = normalize_url(url)
            if n is not None:
                assert n[0] == url


def test_idempotence_with_cut_text() -> None:
    limits = ArgumentLimits(max_string=16, max_depth=2, max_keys=2, max_items=2)
    args = {"c": "hello world, a long text", "b": ["/x", "y", "z"], "a": {"b": {"c": {"d": 1}}}, "d": 1}
    s1 = summarize(args, limits)
    s2 = summarize(s1.arguments, limits)
    assert s2.arguments == s1.arguments
    assert s2.paths == s1.paths
    assert s2.limits == {}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


# ---------------------------------------------------------------------------------------------
# digest


def test_digest_is_stable_and_order_independent() -> None:
    a = summarize({"b": 1, "a": {"y": [1, 2], "x": "é"}})
    b = summarize({"a": {"x": "é", "y": [1, 2]}, "b": 1})
    assert a.digest == b.digest
    assert a.digest.startswith("sha256:")
    assert len(a.digest) == 7 + 64
    assert a.digest == "sha256:" + hashlib.sha256(b'{"a":{"x":"\xc3\xa9","y":[1,2]},"b":1}').hexdigest()


def test_none_arguments_are_an_empty_object() -> None:
    assert summarize(None) == summarize({})
    assert summarize(types.MappingProxyType({})) == summarize({})
    assert summarize(None).arguments == {}


def test_digest_is_over_raw_arguments() -> None:
    raw = [
        {"path": "/etc"},
        {"path": "/workspace/../etc"},
        {"path": "/etc/"},
        {"path": "//etc"},
        {"path": "/%65tc"},
        {"url": "https://example.com/"},
        {"url": "https://EXAMPLE.com:443"},
        {"n": 1},
        {"n": 1.0},
        {"n": "1"},
        {"n": True},
        {"n": None},
        {"n": [1]},
        {"n": {"1": 1}},
        {"n": -0.0},
        {"n": 0.0},
        {"n": 0},
        {"n": ""},
        {"N": 1},
        {"n": 1, "m": 1},
        {"content": "x" * 2000},
        {"content": "x" * 2001},
        _nested(9, 1),
        _nested(9, 2),
        {"list": list(range(100))},
        {"list": [*range(99), 100]},
        {},
    ]
    summaries = [summarize(a) for a in raw]
    assert len({s.digest for s in summaries}) == len(raw)
    # alike to policies, different digests
    assert summaries[0].arguments == summaries[1].arguments == summaries[2].arguments
    assert summaries[20].arguments == summaries[21].arguments
    assert summaries[22].arguments == summaries[23].arguments


def _nested(levels: int, leaf: Any) -> Any:
    for i in range(levels):
        leaf = {f"k{i}": leaf}
    return {"a": leaf}


def test_digest_does_not_depend_on_limits() -> None:
    args = {"content": "x" * 5000, "list": list(range(500))}
    assert summarize(args).digest == summarize(args, ArgumentLimits(max_string=4, max_items=1)).digest


# ---------------------------------------------------------------------------------------------
# limits


def test_limit_boundaries() -> None:
    lim = ArgumentLimits(max_string=5, max_depth=3, max_keys=3, max_items=3)
    s = summarize({"s": "abcde", "l": [1, 2, 3], "o": {"a": 1, "b": 2, "c": 3}}, lim)
    assert s.limits == {}
    assert s.complete
    s = summarize({"a": {"b": {"c": {"d": 1}}}}, lim)  # level 3 kept
    assert s.arguments == {"a": {"b": {"c": {"d": 1}}}}
    assert s.limits == {}
    s = summarize({"a": [[[[1]]]]}, lim)  # level 4 cut
    assert s.arguments == {"a": [[[None]]]}
    assert s.limits == {"depth": ["a[0][0][0]"]}
    assert not s.complete


def test_cut_parts_are_not_inspected() -> None:
    lim = ArgumentLimits(max_depth=1, max_items=1, max_keys=1)
    s = summarize({"a": {"deep": {"path": "/etc/passwd"}}}, lim)
    assert s.paths == ()
    assert s.limits["depth"] == ["a.deep"]
    s = summarize({"paths": ["/ok", "/etc/passwd"]}, lim)
    assert s.paths == ("/ok",)
    assert s.limits == {"omitted_items": {"paths": 1}}
    s = summarize({"b_path": "/etc/passwd", "a": 1}, lim)
    assert s.paths == ()
    assert s.limits == {"omitted_keys": {"": 1}}


def test_long_keys_are_omitted() -> None:
    s = summarize({"k" * 20: 1, "ok": 2}, ArgumentLimits(max_string=10))
    assert s.arguments == {"ok": 2}
    assert s.limits == {"omitted_keys": {"": 1}}


def test_zero_limits() -> None:
    s = summarize({"a": [1], "b": {"c": 1}, "d": 1}, ArgumentLimits(max_depth=0))
    assert s.arguments == {"a": None, "b": None, "d": 1}
    assert s.limits == {"depth": ["a", "b"]}
    s = summarize({"a": 1}, ArgumentLimits(max_keys=0))
    assert s.arguments == {}
    assert s.limits == {"omitted_keys": {"": 1}}


@pytest.mark.parametrize(
    "kwargs", [{"max_string": 0}, {"max_depth": -1}, {"max_keys": -1}, {"max_items": -1}]
)
def test_invalid_limits(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="invalid argument limits"):
        ArgumentLimits(**kwargs)


def test_huge_input_stays_bounded() -> None:
    args = {f"k{i:05d}": ["/workspace/../etc/" + str(j) for j in range(200)] for i in range(200)}
    s = summarize(args)
    assert len(s.arguments) == 64
    assert all(len(v) == 64 for v in s.arguments.values())
    assert s.limits["omitted_keys"] == {"": 136}
    assert len(s.limits["omitted_items"]) == 64
    assert len(s.paths) == 64


# ---------------------------------------------------------------------------------------------
# input that is not JSON


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ({"n": float("nan")}, ValueError),
        ({"n": [float("inf")]}, ValueError),
        ({1: "x"}, TypeError),
        ({"n": {1: "x"}}, TypeError),
        ({"d": datetime.datetime(2026, 1, 1)}, TypeError),
        ({"s": {1, 2}}, TypeError),
        ({"b": b"bytes"}, TypeError),
        ({"n": 2**70}, TypeError),
        ([("a", 1)], TypeError),
        ("path", TypeError),
        ([], TypeError),
    ],
)
def test_non_json_arguments_raise(args: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        summarize(args)


def test_nesting_beyond_orjson_raises() -> None:
    deep: Any = 1
    for _ in range(300):
        deep = [deep]
    with pytest.raises(TypeError):
        summarize({"deep": deep})


def test_json_subclasses_and_mappings() -> None:
    class S(str):
        pass

    s = summarize(types.MappingProxyType({"path": S("/a/../b"), "t": (1, "x")}))
    assert s.arguments == {"path": "/b", "t": [1, "x"]}
    assert type(s.arguments["path"]) is str


def test_summary_is_json_compatible() -> None:
    s = summarize({"path": "/a", "u": "https://x.example", "l": [1.5, None, True], "o": {"x": "y"}})
    assert orjson.loads(orjson.dumps(s.arguments)) == s.arguments


# ---------------------------------------------------------------------------------------------
# micro-benchmark (printed, not asserted)

BENCH = {
    "fs write: path, content, flag": {
        "path": "/workspace/src/main.py",
        "content": "print('hello')\n" * 10,
        "overwrite": True,
    },
    "fetch: url, max_length, raw": {
        "url": "https://example.com/docs/page?x=1",
        "max_length": 5000,
        "raw": False,
    },
    "search: 5 args incl. dir + list": {
        "query": "def summarize",
        "limit": 20,
        "directory": "/workspace",
        "pattern": "*.py",
        "exclude": ["node_modules", ".git"],
    },
    "git: repo_path, message, files[3]": {
        "repo_path": "/workspace/repo",
        "message": "fix: x",
        "files": ["a.py", "b/c.py", "../d.py"],
    },
    "prompt: 3 short strings": {"topic": "cats", "style": "haiku", "language": "en"},
    "empty": {},
}


def test_benchmark_print(capsys: pytest.CaptureFixture[str]) -> None:
    lines = []
    for name, args in BENCH.items():
        n = 5000
        best = min(timeit.repeat(lambda a=args: summarize(a), number=n, repeat=5)) / n  # type: ignore[misc]
        lines.append(f"  {name:36s} {best * 1e6:6.2f} µs")
    with capsys.disabled():
        print("\nsummarize() micro-benchmark (best of 5):\n" + "\n".join(lines))

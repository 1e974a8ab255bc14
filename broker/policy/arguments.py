"""The normalised argument summary that policies see (docs/policy-arguments.md).

A policy must never judge a raw string that means something else once the upstream
resolves it: `/workspace/../etc/passwd` is `/etc/passwd`. `summarize` turns a call's
arguments into canonical facts -- canonical paths, normalised URLs and hosts, what was
cut to stay bounded, and the values that could not be read safely -- plus a digest of
the raw arguments that binds an approval to the exact call.

Pure and fast: no I/O, nothing compiled per call, a plain recursive walk bounded by
`ArgumentLimits`. Every rule, with examples, is in docs/policy-arguments.md; the tests
check the examples there.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import posixpath
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, NamedTuple
from urllib.parse import unquote_to_bytes

import idna
import orjson

__all__ = [
    "DEFAULT_LIMITS",
    "PROBLEM_CODES",
    "ArgumentLimits",
    "ArgumentSummary",
    "canonical_json",
    "canonical_path",
    "normalize_url",
    "summarize",
]


@dataclass(frozen=True, slots=True)
class ArgumentLimits:
    max_string: int = 1024
    """Characters kept of a string; longer plain strings are cut, longer paths/URLs become None."""
    max_depth: int = 8
    """Nesting levels of objects/arrays kept below the arguments object; deeper ones become None."""
    max_keys: int = 64
    """Keys kept per object (the first ones in sorted order); the rest are omitted."""
    max_items: int = 64
    """Items kept per array (the first ones); the rest are omitted."""

    def __post_init__(self) -> None:
        if self.max_string < 1 or min(self.max_depth, self.max_keys, self.max_items) < 0:
            raise ValueError(f"invalid argument limits: {self}")


DEFAULT_LIMITS: Final = ArgumentLimits()


@dataclass(frozen=True, slots=True)
class ArgumentSummary:
    arguments: dict[str, Any]
    """The normalised arguments: JSON-compatible, the input's shape where kept."""
    digest: str
    """`sha256:<hex>` of canonical_json(raw arguments): binds an approval to the exact call."""
    paths: tuple[str, ...]
    """Every canonical path found in the kept arguments, sorted, unique."""
    hosts: tuple[str, ...]
    """Every normalised URL host found in the kept arguments, sorted, unique."""
    limits: dict[str, Any]
    """What was cut: truncated / depth / omitted_keys / omitted_items; {} when nothing was."""
    problems: tuple[str, ...]
    """`<key path>: <code>` for values that could not be read safely, sorted, unique."""

    @property
    def complete(self) -> bool:
        """True when nothing was cut, so `paths` and `hosts` cover every argument."""
        return not self.limits


PROBLEM_CODES: Final = frozenset(
    {
        # the value is replaced by None
        "path.control_char",
        "path.unc",
        "path.backslash",
        "path.drive_relative",
        "path.drive_escape",
        "path.escapes_home",
        "path.too_long",
        "file_uri.remote_host",
        "file_uri.query_or_fragment",
        "file_uri.invalid",
        "url.invalid",
        "url.control_char",
        "url.ambiguous",
        "url.too_long",
        # the (normalised) value is kept
        "path.percent_encoding",
        "path.unicode_normalized",
        "path.unicode_lookalike",
        "url.userinfo",
        "url.ip_noncanonical",
        "url.no_scheme",
    }
)

# ---------------------------------------------------------------------------------------------
# canonical JSON and the digest

_JSON_OPTIONS: Final = (
    orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)


def canonical_json(value: Any) -> bytes:
    """The bytes the digest is computed over: orjson, keys sorted, compact, UTF-8.

    Defined on JSON data (what `orjson.loads` returns). Raises TypeError
    (`orjson.JSONEncodeError`) on what JSON cannot hold: non-str keys, datetimes,
    dataclasses, other objects, integers beyond 64 bits, nesting deeper than 255.
    Not RFC 8785: anything that must reproduce a digest calls this function.
    """
    return orjson.dumps(value, option=_JSON_OPTIONS)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# character classes (compiled once)

_CONTROL_RE: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]"
)
"""C0, DEL, C1, bidi marks/overrides/isolates, line/paragraph separators, BOM."""
_LOOKALIKE_RE: Final = re.compile("[\u2024\u2025\u2026\ufe19\ufe30\ufe52\ufe68\uff0e\uff0f\uff3c]")
"""Characters whose NFKC form is `.`, `..`, `...`, `/` or `\\` (fullwidth, small, leaders)."""
_PCT_SUSPECT_RE: Final = re.compile(r"%(?:2[eEfF]|5[cC]|00|25)")
"""Percent-escapes that become `.`, `/`, `\\`, NUL or `%` when a URL decoder reads a path."""
_PCT_RE: Final = re.compile(r"%([0-9A-Fa-f]{2})")
_SCHEME_RE: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]+):")
_TILDE_RE: Final = re.compile(r"~(?:[A-Za-z_][A-Za-z0-9._\-]*)?(?:[/\\]|$)")
_AUTHORITY_RE: Final = re.compile(r"([^/?#]*)([^?#]*)(?:\?([^#]*))?(?:#(.*))?", re.S)
_FORBIDDEN_HOST_RE: Final = re.compile(r"[\x00-\x20#%/:<>?@\[\\\]^|\x7f]")
_PRE_QUERY_RE: Final = re.compile(r"[^?#]*")
_IPV4_PART_RE: Final = re.compile(r"0[xX][0-9A-Fa-f]*|0[0-7]*|[1-9][0-9]*")
_WORD_RE: Final = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+")

_LETTERS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_DIGITS: Final = frozenset("0123456789")
_UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_C0_SPACE: Final = "".join(chr(i) for i in range(0x21))
_TAB_NEWLINE: Final = {0x09: None, 0x0A: None, 0x0D: None}
_SPECIAL_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21}
_NO_CODES: Final[tuple[str, ...]] = ()

# ---------------------------------------------------------------------------------------------
# which keys name paths and URLs

_PLAIN, _PATH, _URL = 0, 1, 2

_PATH_WORDS: Final = frozenset(
    {
        "path", "paths", "pathname", "pathnames", "filepath", "filepaths",
        "file", "files", "filename", "filenames",
        "dir", "dirs", "dirname", "dirnames", "dirpath", "dirpaths", "directory", "directories",
        "folder", "folders", "foldername", "workdir", "cwd", "root", "roots",
        "source", "sources", "src", "destination", "destinations", "dest", "dst", "target", "targets",
    }
)  # fmt: skip
_URL_WORDS: Final = frozenset(
    {"url", "urls", "uri", "uris", "href", "endpoint", "endpoints", "webhook", "webhooks"}
)


@lru_cache(maxsize=2048)
def _key_kind(key: str) -> int:
    """PATH/URL when the key's last word (or last two words joined) is a path/URL noun."""
    words = _WORD_RE.findall(key)
    if not words:
        return _PLAIN
    last = words[-1].lower()
    pair = words[-2].lower() + last if len(words) > 1 else last
    if last in _URL_WORDS or pair in _URL_WORDS:
        return _URL
    if last in _PATH_WORDS or pair in _PATH_WORDS:
        return _PATH
    return _PLAIN


# ---------------------------------------------------------------------------------------------
# paths


def canonical_path(value: str) -> str | None:
    """The canonical form of a path or `file:` URI, or None when it cannot be made safe."""
    return _canon_path(value)[0]


def _file_uri_path(s: str) -> tuple[str | None, str]:
    """The decoded path of a `file:/...` URI, or (None, problem code)."""
    rest = s[5:]
    if rest[:2] == "//":
        end = rest.find("/", 2)
        if end < 0:
            end = len(rest)
        authority = rest[2:end]
        if authority and authority.lower() != "localhost":
            return None, "file_uri.remote_host"
        path = rest[end:] or "/"
    else:
        path = rest
    if "?" in path or "#" in path:
        return None, "file_uri.query_or_fragment"
    if "%" in path:
        try:
            path = unquote_to_bytes(path).decode("utf-8")
        except UnicodeDecodeError:
            return None, "file_uri.invalid"
    # file:///C:/x names the Windows path C:/x
    if (
        len(path) >= 3
        and path[0] == "/"
        and path[2] == ":"
        and path[1] in _LETTERS
        and path[3:4] in ("", "/", "\\")
    ):
        path = path[1:] if len(path) > 3 else path[1:] + "/"
    return path, ""


def _canon_path(s: str) -> tuple[str | None, tuple[str, ...]]:
    """(canonical path, warning codes) or (None, (problem code,))."""
    if s[:5].lower() == "file:" and s[5:6] == "/":
        decoded, err = _file_uri_path(s)
        if decoded is None:
            return None, (err,)
        p = decoded
    else:
        p = s
    if not p:
        return ".", _NO_CODES
    if not p.isprintable() and _CONTROL_RE.search(p):
        return None, ("path.control_char",)
    warn = _NO_CODES
    if "%" in p and _PCT_SUSPECT_RE.search(p):
        warn = ("path.percent_encoding",)
    if not p.isascii():
        nfc = unicodedata.normalize("NFC", p)
        if nfc != p:
            warn = (*warn, "path.unicode_normalized")
            p = nfc
        if _LOOKALIKE_RE.search(p):
            warn = (*warn, "path.unicode_lookalike")

    c0 = p[0]
    # Windows drive paths: C:\x, C:/x -- `\` is a separator, `..` stops at the drive root
    if len(p) >= 2 and p[1] == ":" and c0 in _LETTERS:
        if p[2:3] not in ("/", "\\"):
            return None, ("path.drive_relative",)
        rel = p[3:].replace("\\", "/").lstrip("/")
        n = posixpath.normpath(rel) if rel else "."
        if n == ".." or n[:3] == "../":
            return None, ("path.drive_escape",)
        return c0.upper() + ":/" + ("" if n == "." else n), warn
    # two leading separators: a UNC share on Windows, implementation-defined in POSIX
    if c0 in "/\\" and p[1:2] in ("/", "\\"):
        return None, ("path.unc",)
    if "\\" in p:
        # a separator on Windows, an ordinary character on POSIX: only plain relative names
        # read the same way in both (no `..` may climb, nothing rooted)
        q = p.replace("\\", "/")
        if c0 in "/\\~" or ".." in q.split("/"):
            return None, ("path.backslash",)
        p = q
        c0 = p[0]
    if c0 == "~":
        head, _, rest = p.partition("/")
        rest = rest.lstrip("/")
        n = posixpath.normpath(rest) if rest else "."
        if n == ".." or n[:3] == "../":
            return None, ("path.escapes_home",)
        return (head if n == "." else head + "/" + n), warn
    # the common case is already canonical: no `.`/`..` segment, no empty one, no trailing `/`
    plain = c0 != "." and "//" not in p and "/." not in p and p[-1] != "/"
    n = p if plain else posixpath.normpath(p)
    if n[0] == "/" or n == "." or n == ".." or n[:3] == "../":
        return n, warn
    return "./" + n, warn


def _looks_like_path(s: str) -> bool:
    """Value-based detection for strings under keys that do not name paths."""
    c0 = s[0]
    if c0 == "/":
        return s[1:2] not in ("/", "*")  # `// comment`, `/* comment */`
    if c0 == ".":
        return s in (".", "..") or s.startswith(("./", "../", ".\\", "..\\"))
    if c0 == "~":
        return _TILDE_RE.match(s) is not None
    if c0 == "\\":
        return s[1:2] == "\\"  # UNC; a single `\` starts LaTeX far more often than a path
    return s[1:2] == ":" and s[2:3] in ("/", "\\") and c0 in _LETTERS


# ---------------------------------------------------------------------------------------------
# URLs


class _Url(NamedTuple):
    url: str | None
    host: str
    hosts: tuple[str, ...]
    codes: tuple[str, ...]


_INVALID: Final = _Url(None, "", (), ("url.invalid",))


def normalize_url(value: str) -> tuple[str, str] | None:
    """(normalised URL, host) for a `scheme://` URL, or None when invalid or ambiguous.

    `file:` URIs are paths (canonical_path); the host is "" for URLs without one.
    """
    u = _parse_url(value.strip(_C0_SPACE))
    if u is None or u.url is None:
        return None
    return u.url, u.host


def _parse_url(s: str, check_controls: bool = True) -> _Url | None:
    """None when `s` does not start like a URL; otherwise the normalised URL or a problem."""
    m = _SCHEME_RE.match(s)
    if m is None:
        return None
    scheme = m.group(1).lower()
    rest = s[m.end() :]
    special = scheme in _SPECIAL_PORTS
    if scheme == "file" or not (special or rest[:2] == "//"):
        return None
    if check_controls and not s.isprintable() and _CONTROL_RE.search(s):
        # WHATWG and urllib delete tab/CR/LF inside URLs (others are escaped in the path or
        # invalid in the host): record the host that reading connects to
        inner = _parse_url(s.translate(_TAB_NEWLINE), False)
        return _Url(None, "", inner.hosts if inner is not None else (), ("url.control_char",))
    if special:
        pre_match = _PRE_QUERY_RE.match(rest)
        end = pre_match.end() if pre_match is not None else 0
        pre = rest[:end]
        if rest[:2] != "//" or rest[2:3] in ("/", "\\") or "\\" in pre:
            # WHATWG reads `\` as `/` and skips any run of slashes; RFC 3986 does neither.
            whatwg = _parse_authority(scheme, pre.replace("\\", "/").lstrip("/") + rest[end:])
            hosts = set(whatwg.hosts)
            if rest[:2] == "//":
                hosts.update(_parse_authority(scheme, rest[2:]).hosts)
            if not hosts:
                return _INVALID  # no reading names a host: nothing would be fetched
            return _Url(None, "", tuple(sorted(hosts)), ("url.ambiguous",))
    return _parse_authority(scheme, rest[2:])


def _ipv4(host: str) -> str | None:
    """WHATWG IPv4 parsing (decimal, 0x hex, 0-octal, 1-4 parts) to dotted quad; None if invalid."""
    parts = host.split(".")
    if len(parts) > 4:
        return None
    nums = []
    for part in parts:
        if not _IPV4_PART_RE.fullmatch(part):
            return None
        if part[:2] in ("0x", "0X"):
            nums.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part[0] == "0":
            nums.append(int(part[1:], 8))
        else:
            nums.append(int(part))
    last = nums.pop()
    if any(n > 255 for n in nums) or last >= 256 ** (4 - len(nums)):
        return None
    value = last
    for i, n in enumerate(nums):
        value += n << (8 * (3 - i))
    return str(ipaddress.IPv4Address(value))


def _ends_in_number(host: str) -> bool:
    last = host.rpartition(".")[2]
    if last[:1] not in _DIGITS:
        return False
    if last.isascii() and last.isdigit():
        return True
    return last[:2] in ("0x", "0X") and all(c in "0123456789abcdefABCDEF" for c in last[2:])


def _normalize_host(h: str, special: bool) -> tuple[str, str, tuple[str, ...]] | None:
    """(url host, bare host, codes) or None when invalid."""
    codes = _NO_CODES
    if h[:1] == "[":
        inner = h[1:-1] if h[-1:] == "]" else ""
        if not inner or "%" in inner or inner[:1] in ("v", "V"):
            return None
        try:
            addr = ipaddress.IPv6Address(inner)
        except ValueError:
            return None
        mapped = addr.ipv4_mapped
        bare = f"::ffff:{mapped}" if mapped is not None else addr.compressed
        return "[" + bare + "]", bare, codes
    if "%" in h:
        try:
            h = unquote_to_bytes(h).decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not h:
        return None if special else ("", "", codes)
    if h.isascii():
        h = h.lower()
        if h[-1] == ".":
            h = h[:-1]
    else:
        if h[-1] in ".\u3002\uff0e\uff61":
            h = h[:-1]
        try:
            h = idna.encode(h, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError):
            return None
    if not h or _FORBIDDEN_HOST_RE.search(h) or h[0] == "." or ".." in h:
        return None
    if _ends_in_number(h):
        ip = _ipv4(h)
        if ip is None:
            return None
        if ip != h:
            codes = ("url.ip_noncanonical",)
        h = ip
    return h, h, codes


def _fix_escape(m: re.Match[str]) -> str:
    c = chr(int(m.group(1), 16))
    return c if c in _UNRESERVED else "%" + m.group(1).upper()


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 for an absolute (or empty) URL path; empty segments are kept."""
    segs = path.split("/")
    out: list[str] = []
    last = len(segs) - 1
    for i, seg in enumerate(segs):
        if seg == ".":
            if i == last:
                out.append("")
        elif seg == "..":
            if len(out) > 1:
                out.pop()
            if i == last:
                out.append("")
        else:
            out.append(seg)
    return "/".join(out)


def _parse_authority(scheme: str, s: str) -> _Url:
    """`authority path ?query #fragment` (after `scheme://`) to a normalised URL."""
    m = _AUTHORITY_RE.fullmatch(s)
    if m is None:  # pragma: no cover - the pattern matches every string
        return _INVALID
    authority, path, query, fragment = m.groups()
    codes = _NO_CODES
    if "@" in authority:
        authority = authority.rpartition("@")[2]
        codes = ("url.userinfo",)
    if authority[:1] == "[":
        close = authority.find("]")
        hostpart, port = authority[: close + 1], authority[close + 1 :]
        if close < 0 or (port and port[0] != ":"):
            return _INVALID
        port = port[1:]
    else:
        hostpart, _, port = authority.partition(":")
    special = scheme in _SPECIAL_PORTS
    host = _normalize_host(hostpart, special)
    if host is None:
        return _INVALID
    url_host, bare, host_codes = host
    if port:
        if not (port.isascii() and port.isdigit()) or int(port) > 65535:
            return _INVALID
        number = int(port)
        port = "" if number == _SPECIAL_PORTS.get(scheme) else ":" + str(number)
    if "%" in path:
        path = _PCT_RE.sub(_fix_escape, path)
    if "." in path:
        path = _remove_dot_segments(path)
    if not path and special:
        path = "/"
    url = scheme + "://" + url_host + port + path
    if query is not None:
        url += "?" + query
    if fragment is not None:
        url += "#" + fragment
    hosts: tuple[str, ...] = (bare,) if bare else ()
    if bare.startswith("::ffff:") and "." in bare:
        hosts = (bare, bare[7:])
    return _Url(url, bare, hosts, codes + host_codes)


# ---------------------------------------------------------------------------------------------
# the walk


def _join(prefix: str, key: str | int) -> str:
    if type(key) is int:
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else str(key)


class _Walk:
    __slots__ = (
        "depth",
        "hosts",
        "max_depth",
        "max_items",
        "max_keys",
        "max_string",
        "omitted_items",
        "omitted_keys",
        "paths",
        "problems",
        "truncated",
    )

    def __init__(self, limits: ArgumentLimits) -> None:
        self.max_string = limits.max_string
        self.max_depth = limits.max_depth
        self.max_keys = limits.max_keys
        self.max_items = limits.max_items
        self.paths: set[str] = set()
        self.hosts: set[str] = set()
        self.problems: list[str] = []
        self.truncated: dict[str, int] = {}
        self.depth: list[str] = []
        self.omitted_keys: dict[str, int] = {}
        self.omitted_items: dict[str, int] = {}

    def obj(self, obj: Mapping[str, Any], prefix: str, level: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        max_string = self.max_string
        omitted = 0
        if len(obj) > self.max_keys:
            keys = sorted(obj)
            omitted = len(keys) - self.max_keys
            pairs: Any = ((k, obj[k]) for k in keys[: self.max_keys])
        else:
            pairs = obj.items()
        for k, v in pairs:
            if type(k) is not str:
                raise TypeError(f"argument keys must be strings, not {type(k).__name__}")
            if len(k) > max_string:
                omitted += 1
                continue
            if type(v) is str:
                out[k] = self.string(v, prefix, k, _key_kind(k))
            else:
                out[k] = self.value(v, prefix, k, _key_kind(k), level)
        if omitted:
            self.omitted_keys[prefix] = omitted
        return out

    def arr(self, items: list[Any] | tuple[Any, ...], prefix: str, kind: int, level: int) -> list[Any]:
        if len(items) > self.max_items:
            self.omitted_items[prefix] = len(items) - self.max_items
            items = items[: self.max_items]
        value = self.value
        return [value(v, prefix, i, kind, level) for i, v in enumerate(items)]

    def value(self, v: Any, prefix: str, key: str | int, kind: int, level: int) -> Any:
        t = type(v)
        if t is str:
            return self.string(v, prefix, key, kind)
        if v is None or t is bool or t is int:
            return v
        if t is dict or t is list:
            if level >= self.max_depth:
                self.depth.append(_join(prefix, key))
                return None
            if t is dict:
                return self.obj(v, _join(prefix, key), level + 1)
            return self.arr(v, _join(prefix, key), kind, level + 1)
        if t is float:
            if not math.isfinite(v):
                raise ValueError(f"{_join(prefix, key)}: {v} is not a JSON number")
            return v
        # subclasses and other containers JSON can hold
        if isinstance(v, str):
            return self.string(str(v), prefix, key, kind)
        if isinstance(v, bool):
            return bool(v)
        if isinstance(v, int):
            return int(v)
        if isinstance(v, float):
            return self.value(float(v), prefix, key, kind, level)
        if isinstance(v, Mapping | list | tuple):
            if level >= self.max_depth:
                self.depth.append(_join(prefix, key))
                return None
            if isinstance(v, Mapping):
                return self.obj(v, _join(prefix, key), level + 1)
            return self.arr(v, _join(prefix, key), kind, level + 1)
        raise TypeError(f"{_join(prefix, key)}: {t.__name__} is not JSON data")

    def string(self, s: str, prefix: str, key: str | int, kind: int) -> str | None:
        if s:
            c0 = s[0]
            if (c0 in _LETTERS and s.find(":", 2, 64) > 0) or c0 <= " ":
                u = _parse_url(s.strip(_C0_SPACE) if (c0 <= " " or s[-1] <= " ") else s)
                if u is not None:
                    return self.url(u, s, prefix, key, kind)
            if kind == _PATH or (c0 in "fF" and s[:5].lower() == "file:" and s[5:6] == "/"):
                return self.path(s, prefix, key)
            if _looks_like_path(s):
                return self.path(s, prefix, key)
            if kind == _URL and _SCHEME_RE.match(s.lstrip(_C0_SPACE)) is None:
                self.problems.append(f"{_join(prefix, key)}: url.no_scheme")
        elif kind == _PATH:
            self.paths.add(".")
            return "."
        if len(s) > self.max_string:
            self.truncated[_join(prefix, key)] = len(s)
            return s[: self.max_string]
        return s

    def path(self, s: str, prefix: str, key: str | int) -> str | None:
        p, codes = _canon_path(s)
        if codes:
            where = _join(prefix, key)
            self.problems.extend(f"{where}: {code}" for code in codes)
        if p is None:
            return None
        if len(p) > self.max_string:
            where = _join(prefix, key)
            self.truncated[where] = len(s)
            self.problems.append(f"{where}: path.too_long")
            return None
        self.paths.add(p)
        return p

    def url(self, u: _Url, s: str, prefix: str, key: str | int, kind: int) -> str | None:
        if u.url is None and kind == _PLAIN and u.codes == _INVALID.codes:
            # prose that merely starts like a URL: no parser would connect anywhere
            if len(s) > self.max_string:
                self.truncated[_join(prefix, key)] = len(s)
                return s[: self.max_string]
            return s
        self.hosts.update(u.hosts)
        if u.codes:
            where = _join(prefix, key)
            self.problems.extend(f"{where}: {code}" for code in u.codes)
        if u.url is None:
            return None
        if len(u.url) > self.max_string:
            where = _join(prefix, key)
            self.truncated[where] = len(s)
            self.problems.append(f"{where}: url.too_long")
            return None
        return u.url

    def limits(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.truncated:
            out["truncated"] = dict(sorted(self.truncated.items()))
        if self.depth:
            out["depth"] = sorted(self.depth)
        if self.omitted_keys:
            out["omitted_keys"] = dict(sorted(self.omitted_keys.items()))
        if self.omitted_items:
            out["omitted_items"] = dict(sorted(self.omitted_items.items()))
        return out


_EMPTY_DIGEST: Final = _digest(canonical_json({}))


def summarize(
    arguments: Mapping[str, Any] | None, limits: ArgumentLimits = DEFAULT_LIMITS
) -> ArgumentSummary:
    """What policies see of a call's arguments (docs/policy-arguments.md).

    Raises TypeError for arguments that are not a JSON object (see canonical_json) and
    ValueError for NaN/Infinity; the caller answers such a call with invalid params.
    """
    if not arguments:
        if arguments is None or isinstance(arguments, Mapping):
            return ArgumentSummary({}, _EMPTY_DIGEST, (), (), {}, ())
        raise TypeError(f"arguments must be an object, not {type(arguments).__name__}")
    if type(arguments) is not dict:
        if not isinstance(arguments, Mapping):
            raise TypeError(f"arguments must be an object, not {type(arguments).__name__}")
        arguments = dict(arguments)
    digest = _digest(canonical_json(arguments))
    walk = _Walk(limits)
    out = walk.obj(arguments, "", 0)
    paths = walk.paths
    hosts = walk.hosts
    problems = walk.problems
    return ArgumentSummary(
        out,
        digest,
        tuple(sorted(paths)) if paths else (),
        tuple(sorted(hosts)) if hosts else (),
        walk.limits(),
        tuple(sorted(set(problems))) if problems else (),
    )

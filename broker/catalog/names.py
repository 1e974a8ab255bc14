"""How upstream names become the names callers see (namespacing), and back.

- tools and prompts: `<server>__<name>` (server names cannot contain `_`, so the first
  `__` always splits correctly);
- resources and resource templates: `<server>+<uri>`, e.g. `notes+notes://note/1`. A
  server name is a valid URI-scheme prefix, so the result is still a URI, and URIs the
  upstream hands out (resource links in tool results, `contents[].uri`) are rewritten
  the same way so the caller can read them back through the broker.

Namespacing can be switched off per upstream; names then pass through unchanged and a
clash with another upstream is an error, never a silent drop.
"""

from __future__ import annotations

from typing import Final

SEPARATOR: Final = "__"
URI_SEPARATOR: Final = "+"


def public_name(server: str, name: str, namespace: bool) -> str:
    return f"{server}{SEPARATOR}{name}" if namespace else name


def split_name(name: str) -> tuple[str, str] | None:
    """`("server", "tool")` for a namespaced name, or None."""
    server, sep, rest = name.partition(SEPARATOR)
    return (server, rest) if sep and server and rest else None


def public_uri(server: str, uri: str, namespace: bool) -> str:
    return f"{server}{URI_SEPARATOR}{uri}" if namespace else uri


def split_uri(uri: str) -> tuple[str, str] | None:
    """`("server", "original-uri")` when `uri` starts with a `<server>+` prefix, else None."""
    colon = uri.find(":")
    if colon <= 0:
        return None
    server, sep, rest = uri.partition(URI_SEPARATOR)
    return (server, rest) if sep and server and len(server) < colon and rest else None

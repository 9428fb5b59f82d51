"""Docker image references, checked against the engine's own grammar.

A reference that the engine's parser would refuse must never reach it: the
engine (or aiodocker, building a URL from it) fails in ways that look like an
unreachable engine. The grammar is the one of the distribution project's
`reference` package:

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path-component [ "/" path-component ]*
    domain     := host [ ":" port ]          host: a DNS name or IPv4 address
    path-component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest     := algorithm ":" hex{32,}

The length is checked before any pattern runs, so a hostile megabyte costs
nothing; the pattern's alternatives are disjoint, so it runs in linear time.
"""

from __future__ import annotations

import re

MAX_NAME_LENGTH = 255  # the engine's own limit on the name part
MAX_REFERENCE_LENGTH = 512  # name, tag and a long digest together

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
# (The grammar also knows bracketed IPv6 hosts; the engine here refuses them, so do we.)
_HOST = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_DOMAIN = rf"{_HOST}(?::[0-9]{{1,5}})?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}"

_REFERENCE_RE = re.compile(rf"(?P<name>{_NAME})(?::{_TAG})?(?:@{_DIGEST})?")


def problem(reference: str) -> str | None:
    """Why `reference` is not an image reference the engine accepts (None: it is one)."""
    if not reference:
        return "is empty"
    if len(reference) > MAX_REFERENCE_LENGTH:
        return f"is {len(reference)} characters long, more than {MAX_REFERENCE_LENGTH}"
    match = _REFERENCE_RE.fullmatch(reference)
    if match is None:
        return (
            f"{reference!r} is not an image reference "
            "([registry[:port]/]name[:tag][@digest], the name in lowercase)"
        )
    if len(match.group("name")) > MAX_NAME_LENGTH:
        return f"its name is longer than {MAX_NAME_LENGTH} characters"
    return None


def is_valid(reference: str) -> bool:
    return problem(reference) is None

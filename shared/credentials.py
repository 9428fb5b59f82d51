"""Credentials files: a NATS NKey seed, plus the Plane role it was made for.

`plane auth` writes one per role (`controller.creds`, `client.creds`,
`admin.creds`, `drone-{id}.creds`). They are read through the usual setting,
`nats.credentials_file` (`PLANE_NATS__CREDENTIALS_FILE`, `--creds`), which
also still takes a NATS JWT credentials file (`.creds` of an operator-mode
deployment). The seed is in the decorated form NATS tools read; the role
block tells a drone which ID it has, and every process which inbox prefix
its permissions allow.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass
from pathlib import Path

import nkeys

_BLOCK = re.compile(r"-{3,}BEGIN ([A-Z ]+)-{3,}\s*\n(.*?)\n\s*-{3,}END \1-{3,}", re.S)
SEED_BLOCK = "USER NKEY SEED"
ROLE_BLOCK = "PLANE ROLE"
JWT_BLOCK = "NATS USER JWT"


class CredentialsError(ValueError):
    """A credentials file that cannot be read or used; the message says why."""


@dataclass(frozen=True, slots=True)
class Credentials:
    path: str
    seed: str | None  # None: a NATS JWT credentials file, handed to nats-py as it is
    role: str | None = None
    drone: str | None = None
    inbox: str | None = None  # the reply-inbox prefix the role's permissions allow

    @property
    def is_jwt(self) -> bool:
        return self.seed is None


def new_seed() -> tuple[str, str]:
    """A fresh user NKey: (seed, public key)."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode(), public_key(seed.decode())


def public_key(seed: str) -> str:
    """The seed's public key; raises ValueError for a seed that is damaged (nkeys does not
    check the seed's own checksum, so that is done here)."""
    raw = base64.b32decode(seed + "=" * (-len(seed) % 8))
    if len(raw) < 4 or nkeys.crc16_checksum(raw[:-2]) != raw[-2:]:
        raise ValueError("the seed's checksum does not match")
    pair = nkeys.from_seed(bytearray(seed.encode()))
    try:
        return str(pair.public_key.decode())
    finally:
        pair.wipe()


def render(seed: str, role: str, inbox: str, drone: str | None, cluster: str) -> str:
    who = f"drone {drone}" if drone else role
    lines = [
        f"# Plane NATS credentials for the {who} of cluster {cluster}.",
        "# Keep it secret. Give it as nats.credentials_file",
        "# (PLANE_NATS__CREDENTIALS_FILE, or --creds).",
        f"-----BEGIN {ROLE_BLOCK}-----",
        f"role {role}",
        f"inbox {inbox}",
        *([f"drone {drone}"] if drone else []),
        f"------END {ROLE_BLOCK}------",
        "",
        f"-----BEGIN {SEED_BLOCK}-----",
        seed,
        f"------END {SEED_BLOCK}------",
        "",
    ]
    return "\n".join(lines)


def write(path: Path, text: str) -> None:
    """Write a secret: readable by its owner only, replaced in one step."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(temporary, path)


def read(path: str) -> Credentials:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CredentialsError(f"credentials file {path}: {exc.strerror or exc}") from None
    blocks = {name.strip(): body.strip() for name, body in _BLOCK.findall(text)}
    if JWT_BLOCK in blocks:
        return Credentials(path=path, seed=None)
    seed = blocks.get(SEED_BLOCK) or _bare_seed(text)
    if seed is None:
        raise CredentialsError(f"credentials file {path}: no NKey seed or user JWT in it")
    try:
        public_key(seed)
    except Exception:  # nkeys raises several types for a damaged seed
        raise CredentialsError(f"credentials file {path}: the NKey seed is not valid") from None
    fields: dict[str, str] = {}
    for line in blocks.get(ROLE_BLOCK, "").splitlines():
        key, _, value = line.strip().partition(" ")
        fields[key] = value.strip()
    return Credentials(
        path=path,
        seed=seed,
        role=fields.get("role"),
        drone=fields.get("drone"),
        inbox=fields.get("inbox"),
    )


def check_role(path: str | None, role: str) -> Credentials | None:
    """The credentials at `path`, refused when they were made for another role."""
    if path is None:
        return None
    found = read(path)
    if found.role is not None and found.role != role:
        raise CredentialsError(f"{path} holds credentials of a {found.role}, not of a {role}")
    return found


def _bare_seed(text: str) -> str | None:
    """A file that holds only a seed, as `nk -gen user` writes it."""
    words = [w for w in text.split() if not w.startswith("#")]
    return words[0] if len(words) == 1 and words[0].startswith("SU") else None

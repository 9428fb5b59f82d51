"""`plane auth`: NKey users with the roles' permissions, for nats-server, and their credentials.

One directory holds it all:

* `plane-auth.json`: the users (role, public key, drone ID), the cluster and
  the account, from which everything else is written again on every change;
* `nats-auth.conf`: an `accounts` block to `include` from a nats-server
  configuration;
* `controller.creds`, `client.creds`, `admin.creds`, `drone-{id}.creds`:
  one secret each (`shared.credentials`), readable by their owner only;
* `nats-server.example.conf`: a minimal server configuration that includes it.

Plane's users live in an account of their own (`PLANE` by default) rather
than in the server's global one: other tenants of the same NATS cannot see or
publish any of Plane's subjects, whatever their own permissions say, and
Plane's JetStream streams and limits are its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from shared import credentials
from shared.ids import cluster_token, is_valid_drone_id
from shared.roles import ROLES, Role

STATE_FILE = "plane-auth.json"
CONF_FILE = "nats-auth.conf"
EXAMPLE_FILE = "nats-server.example.conf"
DEFAULT_ACCOUNT = "PLANE"
SHARED_ROLES = ("controller", "client", "admin")


class AuthError(Exception):
    """`plane auth` cannot do what was asked; the message says why."""


class User(msgspec.Struct, kw_only=True):
    role: str
    public_key: str
    drone: str | None = None


class AuthState(msgspec.Struct, kw_only=True):
    cluster: str
    account: str = DEFAULT_ACCOUNT
    users: list[User] = []


def creds_name(role: str, drone: str | None = None) -> str:
    return f"drone-{drone}.creds" if drone else f"{role}.creds"


def init(directory: Path, cluster: str, account: str = DEFAULT_ACCOUNT) -> list[Path]:
    """A new set-up: a user and a credentials file for each shared role."""
    try:
        token = cluster_token(cluster)
    except ValueError as exc:
        raise AuthError(str(exc)) from None
    if (directory / STATE_FILE).exists():
        raise AuthError(
            f"{directory} holds a set-up already: add drones with `plane auth add-drone`, "
            "or choose another directory"
        )
    directory.mkdir(parents=True, exist_ok=True)
    state = AuthState(cluster=cluster, account=account)
    written = []
    for name in SHARED_ROLES:
        written.append(_new_user(directory, state, ROLES[name], token))
    written += _write_config(directory, state)
    return written


def add_drone(directory: Path, drone: str) -> list[Path]:
    """A drone identity (a new key replaces the drone's old one: that is rotation)."""
    if not is_valid_drone_id(drone):
        raise AuthError(f"drone ID {drone!r}: 1-128 characters of A-Z, a-z, 0-9, '_' and '-'")
    state = load(directory)
    state.users = [u for u in state.users if u.drone != drone]
    path = _new_user(directory, state, ROLES["drone"], cluster_token(state.cluster), drone)
    return [path, *_write_config(directory, state)]


def remove_drone(directory: Path, drone: str) -> list[Path]:
    state = load(directory)
    before = len(state.users)
    state.users = [u for u in state.users if u.drone != drone]
    if len(state.users) == before:
        raise AuthError(f"no drone {drone!r} in {directory / STATE_FILE}")
    (directory / creds_name("drone", drone)).unlink(missing_ok=True)
    return _write_config(directory, state)


def load(directory: Path) -> AuthState:
    path = directory / STATE_FILE
    try:
        return msgspec.json.decode(path.read_bytes(), type=AuthState)
    except FileNotFoundError:
        raise AuthError(f"{path} not found: run `plane auth init {directory}` first") from None
    except (OSError, msgspec.DecodeError) as exc:
        raise AuthError(f"{path}: {exc}") from None


def _new_user(
    directory: Path, state: AuthState, role: Role, token: str, drone: str | None = None
) -> Path:
    seed, public = credentials.new_seed()
    state.users.append(User(role=role.name, public_key=public, drone=drone))
    path = directory / creds_name(role.name, drone)
    credentials.write(
        path, credentials.render(seed, role.name, role.inbox_for(drone), drone, state.cluster)
    )
    return path


def _write_config(directory: Path, state: AuthState) -> list[Path]:
    state_path = directory / STATE_FILE
    credentials.write(state_path, msgspec.json.format(msgspec.json.encode(state).decode()) + "\n")
    conf = directory / CONF_FILE
    credentials.write(conf, server_config(state))
    written = [state_path, conf]
    example = directory / EXAMPLE_FILE
    if not example.exists():
        written.append(example)
        example.write_text(
            "# A minimal server configuration with Plane's users: nats-server -c THIS_FILE\n"
            "# (in production: TLS, and a cluster of three; see the README).\n"
            "listen: 127.0.0.1:4222\n"
            'jetstream { store_dir: "./jetstream" }\n'
            f"include ./{CONF_FILE}\n"
        )
    return written


def _quoted(subjects: list[str]) -> str:
    return "[" + ", ".join(json.dumps(s) for s in subjects) + "]"


def server_config(state: AuthState) -> str:
    """The `accounts` block nats-server includes: each user with its role's permissions."""
    token = cluster_token(state.cluster)
    users = []
    for user in state.users:
        role = ROLES[user.role]
        publish, subscribe = role.expand(token, user.drone)
        who = f"drone {user.drone}" if user.drone else user.role
        responses = "\n          allow_responses: true" if role.answers_requests else ""
        users.append(
            f"      {{\n"
            f"        # {who}\n"
            f"        nkey: {json.dumps(user.public_key)}\n"
            f"        permissions: {{\n"
            f"          publish: {{ allow: {_quoted(publish)} }}\n"
            f"          subscribe: {{ allow: {_quoted(subscribe)} }}{responses}\n"
            f"        }}\n"
            f"      }}"
        )
    return (
        f"# Written by `plane auth` from {STATE_FILE} (cluster {state.cluster}); change it\n"
        "# with `plane auth`, not by hand. Include it from the server's configuration.\n"
        "accounts {\n"
        f"  {state.account} {{\n"
        "    jetstream: enabled\n"
        "    users: [\n" + "\n".join(users) + "\n    ]\n"
        "  }\n"
        "}\n"
    )

"""The roles of a Plane deployment on NATS, written once as data.

Each role lists the exact subjects it may publish and subscribe to. `{c}`
stands for the cluster's subject token (`plane_dev`), `{d}` for a drone's ID.
`plane auth` turns these into nats-server permissions (`shared.authconf`),
docs/AUTH.md shows them, and the tests check both against a real server.

Replies: roles that answer requests (controller, drone) may publish to the
reply subject of a request they received, once (nats-server's
`allow_responses`), and to nothing else of the kind. Each of those roles
takes its answers on an inbox prefix of its own, so no other role can read
them; clients keep NATS's default `_INBOX.` so that any NATS client sending
the seed page's JSON works unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

# The streams each role reads through the JetStream API (create, update and
# delete stay with the controllers, who own the streams, and with admins).
CONTROLLER_STREAMS = ("backend_status", "dns_record", "backend_log", "KV_plane_locks")
READ_STREAMS = ("backend_status", "backend_log")


def js_read(streams: tuple[str, ...]) -> tuple[str, ...]:
    """What reading a stream takes: its info, ephemeral consumers, and single messages."""
    subjects = ["$JS.API.INFO", "$JS.API.STREAM.NAMES"]
    for s in streams:
        subjects += [
            f"$JS.API.STREAM.INFO.{s}",
            f"$JS.API.CONSUMER.CREATE.{s}",
            f"$JS.API.CONSUMER.CREATE.{s}.>",
            f"$JS.API.CONSUMER.INFO.{s}.>",
            f"$JS.API.CONSUMER.DELETE.{s}.>",
            f"$JS.API.STREAM.MSG.GET.{s}",
            f"$JS.API.DIRECT.GET.{s}",
            f"$JS.API.DIRECT.GET.{s}.>",
            f"$JS.FC.{s}.>",
        ]
    return tuple(subjects)


def js_own(streams: tuple[str, ...]) -> tuple[str, ...]:
    """Setting up the streams a role owns: create and update (never delete or purge)."""
    return tuple(
        subject
        for s in streams
        for subject in (f"$JS.API.STREAM.CREATE.{s}", f"$JS.API.STREAM.UPDATE.{s}")
    )


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    does: str  # what it is for, in a few words
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    answers_requests: bool  # may publish to the reply subject of a request it received
    inbox: str  # the prefix of its reply inboxes

    def expand(self, cluster_token: str, drone: str | None = None) -> tuple[list[str], list[str]]:
        """(publish, subscribe) with `{c}` and `{d}` filled in."""
        values = {"c": cluster_token, "d": drone or "*"}

        def fill(subjects: tuple[str, ...]) -> list[str]:
            return [s.replace("{c}", values["c"]).replace("{d}", values["d"]) for s in subjects]

        return fill(self.publish), fill(self.subscribe)

    def inbox_for(self, drone: str | None = None) -> str:
        return self.inbox.replace("{d}", drone or "")


CLIENT_PUBLISH = (
    "cluster.{c}.schedule",
    "cluster.{c}.fetch",
    "cluster.{c}.backend.*.terminate",
    "cluster.{c}.drones",
    "cluster.{c}.backends",
    *js_read(READ_STREAMS),
)
CLIENT_SUBSCRIBE = ("_INBOX.>", "backend.*.status", "backend.*.log", "backend.*.stats")

CONTROLLER = Role(
    name="controller",
    does="schedules, stores states, answers DNS; owns the streams",
    publish=(
        "backend.*.status",
        "cluster.{c}.dns.TXT",
        "drone.*.spawn",
        "drone.*.fence",
        "$KV.plane_locks.>",
        *js_own(CONTROLLER_STREAMS),
        *js_read(CONTROLLER_STREAMS),
    ),
    subscribe=(
        "cluster.{c}.schedule",
        "cluster.{c}.fetch",
        "cluster.{c}.drones",
        "cluster.{c}.backends",
        "cluster.{c}.backend.*.status",
        "cluster.{c}.drone.*.backend.*.status",
        "drone.*.status",
        "drone.register",
        "drone.*.register",
        "cluster.{c}.dns.*",
        "cluster.{c}.drone.*.dns.*",
        "acme.set_dns_record",
        "cluster.{c}.drone.*.acme",
        "backend.*.status",
        "_INBOX_controller.>",
    ),
    answers_requests=True,
    inbox="_INBOX_controller",
)

DRONE = Role(
    name="drone",
    does="runs backends on one host; speaks only on subjects that name it",
    publish=(
        "drone.{d}.status",
        "drone.{d}.register",
        "cluster.{c}.drone.{d}.backend.*.status",
        "cluster.{c}.drone.{d}.dns.*",
        "cluster.{c}.drone.{d}.acme",
        "backend.*.log",
        "backend.*.stats",
    ),
    subscribe=(
        "drone.{d}.spawn",
        "drone.{d}.fence",
        "cluster.{c}.drone.{d}.drain",
        "cluster.{c}.backend.*.terminate",
        "_INBOX_drone_{d}.>",
    ),
    answers_requests=True,
    inbox="_INBOX_drone_{d}",
)

CLIENT = Role(
    name="client",
    does="an app: schedules, terminates, reads states, logs and stats",
    publish=CLIENT_PUBLISH,
    subscribe=CLIENT_SUBSCRIBE,
    answers_requests=False,
    inbox="_INBOX",
)

ADMIN = Role(
    name="admin",
    does="a person operating the cluster: all a client does, drains, ACME, the streams",
    publish=(
        *CLIENT_PUBLISH,
        "cluster.{c}.drone.*.drain",
        "acme.set_dns_record",
        "$JS.API.>",
    ),
    subscribe=CLIENT_SUBSCRIBE,
    answers_requests=False,
    inbox="_INBOX",
)

ROLES = {role.name: role for role in (CONTROLLER, DRONE, CLIENT, ADMIN)}


def markdown(cluster_token: str = "{c}") -> str:
    """The roles as a Markdown table, for docs/AUTH.md (a test keeps the two equal)."""
    lines = [
        "| role | for | may publish | may subscribe | answers requests | reply inbox |",
        "|---|---|---|---|---|---|",
    ]
    for role in ROLES.values():
        publish = "<br>".join(f"`{s}`" for s in role.publish)
        subscribe = "<br>".join(f"`{s}`" for s in role.subscribe)
        answers = "yes, once each" if role.answers_requests else "no"
        lines.append(
            f"| {role.name} | {role.does} | {publish} | {subscribe} | {answers} | `{role.inbox}` |"
        )
    return "\n".join(lines) + "\n"

"""DNS records that drones set with `SetDnsRecord` / `SetAcmeDnsRecord`.

Pure. An A record is replaced by the next write for its name (last write
wins) and dropped when not refreshed for `a_expiry_secs` (drones refresh
theirs well within that). TXT values accumulate, because an ACME order may
need several challenges on one name at once; each value is dropped
`txt_expiry_secs` after its last write.

Zones are cluster names without their port (`plane.dev:9090` → `plane.dev`);
record names are kept relative to the zone, lowercase, `@` for the apex.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from shared.protocol import DnsRecordKind, SetDnsRecord

ACME_CHALLENGE = "_acme-challenge"
APEX = "@"
MAX_NAMES = 100_000  # A and TXT names together: a flood of made-up names stops here
MAX_TXT_VALUES = 10_000  # TXT values of every name together (each up to 4 KiB)
MAX_TXT_PER_NAME = 32  # an ACME order needs a few at once; the oldest give way


class BadRecord(ValueError):
    """A SetDnsRecord that cannot be served (bad name or address)."""


def zone_of(cluster: str) -> str:
    """The DNS zone of a cluster: its host part, lowercase, without a trailing dot."""
    host, sep, port = cluster.rpartition(":")
    if not (sep and port.isdigit()):
        host = cluster
    return host.lower().rstrip(".")


def relative_name(name: str, zone: str) -> str:
    """A record name as given by a drone → the zone-relative form used as a key."""
    name = name.strip().lower().rstrip(".")
    if name in ("", APEX, zone):
        return APEX
    if name.endswith("." + zone):
        name = name[: -len(zone) - 1]
    labels = name.split(".")
    if len(name) > 200 or any(not 0 < len(label) <= 63 for label in labels):
        raise BadRecord(f"name {name!r} is not a DNS name")
    return name


class RecordStore:
    def __init__(self, *, a_expiry_secs: float, txt_expiry_secs: float) -> None:
        self.a_expiry_secs = a_expiry_secs
        self.txt_expiry_secs = txt_expiry_secs
        self._a: dict[tuple[str, str], tuple[str, float]] = {}
        self._txt: dict[tuple[str, str], dict[str, float]] = {}
        self._txt_values = 0

    def put(self, msg: SetDnsRecord, now: float) -> tuple[str, str]:
        """Store one record; returns its (zone, relative name). Raises `BadRecord`."""
        zone = zone_of(msg.cluster)
        key = (zone, relative_name(msg.name, zone))
        if msg.kind == DnsRecordKind.A:
            try:
                ipaddress.ip_address(msg.value)
            except ValueError:
                raise BadRecord(f"value {msg.value!r} is not an IP address") from None
            self._make_room(key, self._a)
            self._a[key] = (msg.value, now)
        else:
            if not msg.value or len(msg.value.encode()) > 4096:
                raise BadRecord("a TXT value must be 1 to 4096 bytes")
            self._make_room(key, self._txt)
            values = self._txt.setdefault(key, {})
            if msg.value not in values and self._txt_values >= MAX_TXT_VALUES:
                raise BadRecord(f"the record store holds {MAX_TXT_VALUES} TXT values already")
            self._txt_values -= len(values)
            values.pop(msg.value, None)
            values[msg.value] = now  # newest last
            while len(values) > MAX_TXT_PER_NAME:
                del values[next(iter(values))]
            self._txt_values += len(values)
        return key

    def _make_room(self, key: tuple[str, str], table: dict[tuple[str, str], Any]) -> None:
        if key not in table and len(self._a) + len(self._txt) >= MAX_NAMES:
            raise BadRecord(f"the record store holds {MAX_NAMES} names already")

    def address(self, zone: str, name: str, now: float) -> str | None:
        found = self._a.get((zone, name))
        if found is None or now - found[1] >= self.a_expiry_secs:
            return None
        return found[0]

    def texts(self, zone: str, name: str, now: float) -> list[str]:
        values = self._txt.get((zone, name))
        if not values:
            return []
        oldest = now - self.txt_expiry_secs
        return [value for value, written in values.items() if written > oldest]

    def expire(self, now: float) -> None:
        """Drop what has outlived its expiry (answers already ignore it; this frees memory)."""
        oldest_a = now - self.a_expiry_secs
        for key in [k for k, (_, written) in self._a.items() if written <= oldest_a]:
            del self._a[key]
        oldest_txt = now - self.txt_expiry_secs
        for key, values in list(self._txt.items()):
            for value in [v for v, written in values.items() if written <= oldest_txt]:
                del values[value]
                self._txt_values -= 1
            if not values:
                del self._txt[key]

    def zones(self) -> set[str]:
        return {zone for zone, _ in self._a} | {zone for zone, _ in self._txt}

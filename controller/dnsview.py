"""What the DNS server knows: our zones, and the records of each name.

Nothing is copied here: an A record for `{backend}.{zone}` is read at query
time from the SetDnsRecord store, or else derived from the backend index
(backend → drone) and the drone registry (drone → IP). A backend the index
holds as terminal has no address, even while a drone's last SetDnsRecord for
it has not expired yet.

Zones are the configured clusters; a controller that serves every cluster
answers for every cluster it has heard of (from heartbeats, backend states
and DNS records), and REFUSED for the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import dns.exception
import dns.name

from controller.dnsanswer import Records, Soa
from controller.dnsrecords import RecordStore, zone_of
from controller.index import BackendIndex
from controller.registry import DroneRegistry


class ZoneView:
    def __init__(
        self,
        *,
        index: BackendIndex,
        registry: DroneRegistry,
        store: RecordStore,
        soa: Soa,
        clusters: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._index = index
        self._registry = registry
        self._store = store
        self._soa = soa
        self._clock = clock
        self._wall_clock = wall_clock
        self._fixed = bool(list(clusters))
        self._zones: dict[dns.name.Name, str] = {}
        self._seen: set[str] = set()
        for cluster in clusters:
            self._add(cluster)

    @property
    def soa(self) -> Soa:
        return self._soa

    def note_cluster(self, cluster: str) -> None:
        """A cluster was mentioned; when serving every cluster, its zone becomes ours."""
        if not self._fixed and cluster not in self._seen:
            self._add(cluster)

    def _add(self, cluster: str) -> None:
        self._seen.add(cluster)
        zone = zone_of(cluster)
        try:
            name = dns.name.from_text(zone).canonicalize()
        except dns.exception.DNSException:
            return
        self._zones[name] = zone

    def zones(self) -> list[str]:
        return sorted(self._zones.values())

    def zone_for(self, name: dns.name.Name) -> dns.name.Name | None:
        name = name.canonicalize()
        while True:
            if name in self._zones:
                return name
            if len(name) <= 1:
                return None
            name = name.parent()

    def records(self, zone: str, name: str) -> Records:
        now = self._clock()
        records = Records(texts=self._store.texts(zone, name, now))
        address = self._store.address(zone, name, now)
        entry = self._index.get(name)
        if entry is not None and zone_of(entry.cluster) == zone:
            if entry.state.terminal:
                return records
            records.exists = True
            if address is None and entry.drone is not None:
                address = self._registry.ip_of(entry.drone)
        if address is not None:
            records.addresses.append(address)
        return records

    def serial(self) -> int:
        return int(self._wall_clock())

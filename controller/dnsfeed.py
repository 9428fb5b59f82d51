"""What fills the DNS record store: drones' SetDnsRecord messages and ACME requests.

Every controller hears every `cluster.*.dns.*` message (no queue group), and
reads the `dns_record` stream (60 s of them) at start-up and after a
reconnect. An `acme.set_dns_record` request is taken by one controller, which
stores it as a TXT SetDnsRecord in that stream, so that every controller
learns it; the drone gets `true` once it is stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from controller.dnsrecords import ACME_CHALLENGE, BadRecord, RecordStore
from controller.jetstream import JetStream, StoreError
from shared import subjects, wire
from shared.ids import InvalidId, is_valid_cluster
from shared.protocol import DnsRecordKind, SetAcmeDnsRecord, SetDnsRecord

log = logging.getLogger(__name__)


class DnsFeed:
    def __init__(
        self,
        records: RecordStore,
        store: JetStream,
        *,
        on_cluster: Callable[[str], None],
        may_set: Callable[[SetDnsRecord, str], str | None] = lambda record, drone: None,
        on_refused: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._records = records
        self._store = store
        self._on_cluster = on_cluster
        self._may_set = may_set
        self._on_refused = on_refused
        self._clock = clock

    def take(self, msg: SetDnsRecord) -> bool:
        if not is_valid_cluster(msg.cluster):
            log.info("DNS record for a cluster that is not a domain name ignored: %r", msg.cluster)
            return False
        try:
            self._records.put(msg, self._clock())
        except BadRecord as exc:
            log.info("DNS record ignored: %s", exc, extra={"cluster": msg.cluster})
            return False
        self._on_cluster(msg.cluster)
        return True

    def take_from(self, msg: SetDnsRecord, subject: str) -> bool:
        """A record from `subject`: one that names a drone is checked against that drone."""
        drone = subjects.drone_of(subject)
        if drone is not None:
            problem = self._may_set(msg, drone)
            if problem is not None:
                self._on_refused()
                log.info("DNS record refused: %s", problem, extra={"drone": drone})
                return False
        return self.take(msg)

    def take_raw(self, subject: str, data: bytes) -> None:
        """One message read back from the stream; a bad one is skipped."""
        try:
            self.take_from(wire.decode(SetDnsRecord, data), subject)
        except wire.InvalidMessage as exc:
            log.debug("unreadable DNS record in the stream: %s", exc)

    async def on_record(self, msg: SetDnsRecord, subject: str) -> None:
        self.take_from(msg, subject)

    async def handle_acme(self, msg: SetAcmeDnsRecord, subject: str) -> bool:
        record = SetDnsRecord(
            cluster=msg.cluster, kind=DnsRecordKind.TXT, name=ACME_CHALLENGE, value=msg.value
        )
        if not self.take(record):
            return False
        try:
            subject_out = subjects.dns_record(msg.cluster, DnsRecordKind.TXT.value)
            await self._store.publish(subjects.DNS_RECORD_STREAM, subject_out, wire.encode(record))
        except (StoreError, InvalidId) as exc:
            log.warning("ACME record not stored: %s", exc, extra={"cluster": msg.cluster})
            return False
        return True

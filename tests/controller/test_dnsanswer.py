"""DNS answers from packets, and the record store, without sockets or NATS."""

from __future__ import annotations

import random
import struct

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest

from controller import dnsrecords
from controller.dnsanswer import Result, Soa, answer_packet
from controller.dnsrecords import BadRecord, RecordStore, relative_name, zone_of
from controller.dnsview import ZoneView
from controller.index import BackendIndex
from controller.registry import DroneRegistry
from shared.protocol import (
    BackendState,
    BackendStateMessage,
    DnsRecordKind,
    DroneConnectRequest,
    SetDnsRecord,
    utc_now,
)

C = "plane.test"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


Parts = tuple[ZoneView, BackendIndex, DroneRegistry, RecordStore]


@pytest.fixture
def parts(clock: Clock) -> Parts:
    index = BackendIndex()
    registry = DroneRegistry(
        fresh_secs=12, lost_after_secs=30, forget_after_secs=60, rng=random.Random(1)
    )
    store = RecordStore(a_expiry_secs=120, txt_expiry_secs=600)
    view = ZoneView(
        index=index,
        registry=registry,
        store=store,
        soa=Soa(mname="ns", rname="hostmaster", ttl=60),
        clock=clock,
        wall_clock=lambda: 1_700_000_000.0,
    )
    view.note_cluster(f"{C}:9443")
    return view, index, registry, store


def ask(view: ZoneView, name: str, rtype: str = "A", *, udp: bool = True) -> dns.message.Message:
    query = dns.message.make_query(name, rtype)
    wire, _ = answer_packet(query.to_wire(), view, udp=udp)
    assert wire is not None
    return dns.message.from_wire(wire)


def texts(response: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in response.answer for rd in rrset)


def test_backends_resolve_through_their_drone(parts: Parts) -> None:
    view, index, registry, _ = parts
    registry.register(DroneConnectRequest(drone_id="d1", cluster=C, ip="192.0.2.7"), 0, utc_now())
    index.apply(
        BackendStateMessage(
            cluster=C, state=BackendState.READY, backend="b1", time=utc_now(), drone="d1"
        )
    )
    response = ask(view, "B1.Plane.Test")  # names are case-insensitive
    assert response.rcode() == dns.rcode.NOERROR and response.flags & dns.flags.AA
    assert texts(response) == ["192.0.2.7"]
    assert response.answer[0].ttl == 60
    assert str(response.answer[0].name) == "B1.Plane.Test."  # the asker's spelling


def test_a_drone_with_an_ipv6_address_gives_aaaa(parts: Parts) -> None:
    view, index, registry, _ = parts
    registry.register(DroneConnectRequest(drone_id="d6", cluster=C, ip="2001:db8::7"), 0, utc_now())
    index.apply(
        BackendStateMessage(
            cluster=C, state=BackendState.READY, backend="b6", time=utc_now(), drone="d6"
        )
    )
    assert texts(ask(view, f"b6.{C}", "AAAA")) == ["2001:db8::7"]
    nodata = ask(view, f"b6.{C}", "A")
    assert nodata.rcode() == dns.rcode.NOERROR and nodata.answer == []


def test_set_records_expire_and_txt_values_accumulate(
    parts: Parts,
    clock: Clock,
) -> None:
    view, _, _, store = parts
    store.put(
        SetDnsRecord(cluster=C, kind=DnsRecordKind.A, name="x", value="198.51.100.1"), clock()
    )
    store.put(
        SetDnsRecord(cluster=C, kind=DnsRecordKind.A, name="x", value="198.51.100.2"), clock()
    )
    for value in ("one", "two"):
        record = SetDnsRecord(
            cluster=C, kind=DnsRecordKind.TXT, name="_acme-challenge", value=value
        )
        store.put(record, clock())
    assert texts(ask(view, f"x.{C}")) == ["198.51.100.2"]
    assert texts(ask(view, f"_acme-challenge.{C}", "TXT")) == ['"one"', '"two"']
    clock.now += 121
    assert ask(view, f"x.{C}").rcode() == dns.rcode.NXDOMAIN
    assert len(ask(view, f"_acme-challenge.{C}", "TXT").answer) == 1
    clock.now += 600
    store.expire(clock())
    assert store.zones() == set()


def test_long_txt_values_are_split_into_strings(parts: Parts, clock: Clock) -> None:
    view, _, _, store = parts
    value = "v" * 600
    store.put(SetDnsRecord(cluster=C, kind=DnsRecordKind.TXT, name="long", value=value), clock())
    response = ask(view, f"long.{C}", "TXT", udp=False)
    (rdata,) = response.answer[0]
    assert b"".join(rdata.strings) == value.encode()


def test_soa_nxdomain_and_refused(parts: Parts) -> None:
    view, _, _, _ = parts
    soa = ask(view, C, "SOA")
    (record,) = soa.answer[0]
    assert (str(record.mname), str(record.rname)) == (f"ns.{C}.", f"hostmaster.{C}.")
    assert (record.serial, record.minimum) == (1_700_000_000, 60)
    missing = ask(view, f"nope.{C}")
    assert missing.rcode() == dns.rcode.NXDOMAIN and missing.flags & dns.flags.AA
    assert missing.authority[0].rdtype == dns.rdatatype.SOA
    assert ask(view, "example.com").rcode() == dns.rcode.REFUSED
    assert ask(view, "test").rcode() == dns.rcode.REFUSED  # the parent of a zone is not ours
    assert ask(view, C, "AXFR", udp=False).rcode() == dns.rcode.REFUSED


def test_other_opcodes_and_broken_packets(parts: Parts) -> None:
    view, _, _, _ = parts
    update = dns.message.make_query(C, "SOA")
    update.set_opcode(dns.opcode.NOTIFY)
    wire, result = answer_packet(update.to_wire(), view, udp=True)
    assert result == Result.NOTIMP and wire is not None
    assert dns.message.from_wire(wire).rcode() == dns.rcode.NOTIMP
    assert answer_packet(b"\x01\x02", view, udp=True) == (None, Result.DROPPED)
    response_packet = struct.pack("!HHHHHH", 7, 0x8000, 0, 0, 0, 0)
    assert answer_packet(response_packet, view, udp=True) == (None, Result.DROPPED)
    junk, result = answer_packet(struct.pack("!HHHHHH", 9, 0x0100, 3, 0, 0, 0), view, udp=True)
    assert result == Result.FORMERR and junk is not None
    assert struct.unpack("!HH", junk[:4]) == (9, 0x8000 | 0x0100 | dns.rcode.FORMERR)


def test_a_udp_answer_too_big_is_truncated(parts: Parts, clock: Clock) -> None:
    view, _, _, store = parts
    for i in range(20):
        record = SetDnsRecord(cluster=C, kind=DnsRecordKind.TXT, name="big", value=f"{i:02d}" * 30)
        store.put(record, clock())
    udp = ask(view, f"big.{C}", "TXT")
    assert udp.flags & dns.flags.TC and udp.answer == []
    tcp = ask(view, f"big.{C}", "TXT", udp=False)
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 20


@pytest.mark.parametrize(
    ("cluster", "zone"),
    [("plane.dev", "plane.dev"), ("Plane.Dev:9090", "plane.dev"), ("localhost", "localhost")],
)
def test_zone_of_a_cluster(cluster: str, zone: str) -> None:
    assert zone_of(cluster) == zone


def test_record_names_and_values_are_checked() -> None:
    assert relative_name("", C) == "@"
    assert relative_name(f"ABC.{C}.", C) == "abc"
    with pytest.raises(BadRecord):
        relative_name("a..b", C)
    store = RecordStore(a_expiry_secs=1, txt_expiry_secs=1)
    with pytest.raises(BadRecord):
        store.put(SetDnsRecord(cluster=C, kind=DnsRecordKind.A, name="x", value="not-ip"), 0)


def test_the_record_store_is_bounded_in_names_and_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dnsrecords, "MAX_NAMES", 3)
    store = RecordStore(a_expiry_secs=120, txt_expiry_secs=600)
    for n in range(3):
        store.put(SetDnsRecord(cluster=C, kind=DnsRecordKind.A, name=f"n{n}", value="10.0.0.1"), 0)
    with pytest.raises(BadRecord, match="holds 3 names"):
        store.put(SetDnsRecord(cluster=C, kind=DnsRecordKind.A, name="n9", value="10.0.0.1"), 0)
    # A name it holds is still written.
    store.put(SetDnsRecord(cluster=C, kind=DnsRecordKind.A, name="n0", value="10.0.0.2"), 1)
    assert store.address(zone_of(C), "n0", 1) == "10.0.0.2"

    monkeypatch.setattr(dnsrecords, "MAX_NAMES", 100)
    for n in range(dnsrecords.MAX_TXT_PER_NAME + 4):
        txt = SetDnsRecord(cluster=C, kind=DnsRecordKind.TXT, name="_acme-challenge", value=f"v{n}")
        store.put(txt, float(n))
    texts = store.texts(zone_of(C), "_acme-challenge", 30.0)
    assert len(texts) == dnsrecords.MAX_TXT_PER_NAME
    assert texts[-1] == f"v{dnsrecords.MAX_TXT_PER_NAME + 3}"  # the newest kept

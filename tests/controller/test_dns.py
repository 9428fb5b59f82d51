"""The authoritative DNS server, asked by a real resolver client (`dig`, over UDP and TCP)."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import struct
from dataclasses import dataclass
from typing import Any

import pytest

from controller.service import Controller
from shared import bus, subjects
from shared.protocol import (
    BackendState,
    DnsRecordKind,
    Executable,
    ScheduleRequest,
    SetAcmeDnsRecord,
    SetDnsRecord,
)
from tests.controller.conftest import CLUSTER, MakeDrone
from tests.controller.sim import eventually, wait_drones_ready

DRONE_IP = "203.0.113.7"
TRANSPORTS = pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])


@dataclass
class Dig:
    status: str
    flags: set[str]
    answer: list[tuple[str, int, str, str]]  # (name, ttl, type, data)
    authority: list[tuple[str, int, str, str]]

    def data(self, rtype: str) -> list[str]:
        return sorted(d for _, _, t, d in self.answer if t == rtype)


def _records(text: str, section: str) -> list[tuple[str, int, str, str]]:
    match = re.search(rf";; {section} SECTION:\n(.*?)(?:\n\n|\Z)", text, re.S)
    if not match:
        return []
    rows = []
    for line in match.group(1).splitlines():
        name, ttl, _cls, rtype, data = line.split(None, 4)
        rows.append((name, int(ttl), rtype, data))
    return rows


async def dig(port: int, name: str, rtype: str = "A", *, tcp: bool = False) -> Dig:
    binary = shutil.which("dig")
    if binary is None:
        pytest.fail("dig is not installed: run `make tools` (Debian package dnsutils)")
    args = [binary, "@127.0.0.1", "-p", str(port), name, rtype, "+norecurse", "+time=3"]
    args += ["+tries=1", "+tcp" if tcp else "+notcp"]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 15)
    text = out.decode()
    status = re.search(r"status: (\w+)", text)
    flags = re.search(r";; flags: ([a-z ]+);", text)
    assert status and flags, f"dig failed:\n{text}"
    return Dig(
        status=status.group(1),
        flags=set(flags.group(1).split()),
        answer=_records(text, "ANSWER"),
        authority=_records(text, "AUTHORITY"),
    )


@pytest.fixture
async def port(controller: Controller) -> int:
    assert controller.dns_port is not None
    return controller.dns_port


async def schedule_one(nc: bus.NatsClient) -> str:
    request = ScheduleRequest(cluster=CLUSTER, executable=Executable(image="i"))
    reply = await bus.request(nc, subjects.schedule(CLUSTER), request, dict[str, Any], timeout=5)
    return str(reply["Scheduled"]["backend_id"])


@TRANSPORTS
async def test_a_backend_resolves_to_its_drones_ip(
    nc: bus.NatsClient, port: int, make_drone: MakeDrone, tcp: bool
) -> None:
    drone = await make_drone(ip=DRONE_IP)
    await wait_drones_ready(nc, CLUSTER, drone)
    backend = await schedule_one(nc)

    result = await dig(port, f"{backend}.{CLUSTER}", tcp=tcp)

    assert result.status == "NOERROR" and "aa" in result.flags
    assert result.answer == [(f"{backend}.{CLUSTER}.", 60, "A", DRONE_IP)]
    # No AAAA for it: the name exists, so NOERROR with the SOA and no answer.
    v6 = await dig(port, f"{backend}.{CLUSTER}", "AAAA", tcp=tcp)
    assert (v6.status, v6.answer) == ("NOERROR", [])
    assert [r[2] for r in v6.authority] == ["SOA"]


async def test_a_backend_that_ended_no_longer_resolves(
    nc: bus.NatsClient, port: int, make_drone: MakeDrone
) -> None:
    drone = await make_drone(ip=DRONE_IP)
    await drone.report("b-dns", BackendState.READY)
    assert (await dig(port, f"b-dns.{CLUSTER}")).data("A") == [DRONE_IP]
    await drone.report("b-dns", BackendState.TERMINATED)
    assert (await dig(port, f"b-dns.{CLUSTER}")).status == "NXDOMAIN"


@TRANSPORTS
async def test_set_dns_record_a_is_served_and_the_last_write_wins(
    nc: bus.NatsClient, port: int, make_drone: MakeDrone, tcp: bool
) -> None:
    await make_drone()
    for value in ("198.51.100.1", "198.51.100.2"):
        record = SetDnsRecord(cluster=CLUSTER, kind=DnsRecordKind.A, name="custom", value=value)
        await bus.publish(nc, subjects.dns_record(CLUSTER, "A"), record)

        async def served(value: str = value) -> bool:
            return (await dig(port, f"custom.{CLUSTER}", tcp=tcp)).data("A") == [value]

        await eventually(served, what=f"custom.{CLUSTER} to resolve to {value}")


@TRANSPORTS
async def test_txt_records_accumulate_from_drones_and_acme_requests(
    nc: bus.NatsClient, port: int, make_drone: MakeDrone, tcp: bool
) -> None:
    await make_drone()
    name = f"_acme-challenge.{CLUSTER}"
    for value in ("first-challenge", "second-challenge"):
        record = SetDnsRecord(
            cluster=CLUSTER, kind=DnsRecordKind.TXT, name="_acme-challenge", value=value
        )
        await bus.publish(nc, subjects.dns_record(CLUSTER, "TXT"), record)
    acme = SetAcmeDnsRecord(cluster=CLUSTER, value="third-challenge")
    assert await bus.request(nc, subjects.ACME_SET_DNS_RECORD, acme, bool, timeout=5) is True
    expected = ['"first-challenge"', '"second-challenge"', '"third-challenge"']

    async def all_three() -> bool:
        return (await dig(port, name, "TXT", tcp=tcp)).data("TXT") == expected

    await eventually(all_three, what="three TXT values")
    result = await dig(port, name, "TXT", tcp=tcp)
    assert result.status == "NOERROR" and "aa" in result.flags
    assert {ttl for _, ttl, _, _ in result.answer} == {60}


@TRANSPORTS
async def test_the_zone_has_an_soa(
    nc: bus.NatsClient, port: int, make_drone: MakeDrone, tcp: bool
) -> None:
    await make_drone()
    result = await dig(port, CLUSTER, "SOA", tcp=tcp)
    assert result.status == "NOERROR" and "aa" in result.flags
    ((name, ttl, rtype, data),) = result.answer
    assert (name, ttl, rtype) == (f"{CLUSTER}.", 60, "SOA")
    mname, rname, serial, refresh, retry, expire, minimum = data.split()
    assert (mname, rname) == (f"ns.{CLUSTER}.", f"hostmaster.{CLUSTER}.")
    assert int(serial) > 0 and int(minimum) == 60
    assert int(refresh) > int(retry) and int(expire) > int(refresh)


@TRANSPORTS
async def test_unknown_names_are_nxdomain_and_other_zones_refused(
    nc: bus.NatsClient, port: int, make_drone: MakeDrone, tcp: bool
) -> None:
    await make_drone()
    missing = await dig(port, f"nobody-here.{CLUSTER}", tcp=tcp)
    assert missing.status == "NXDOMAIN" and "aa" in missing.flags
    assert [r[2] for r in missing.authority] == ["SOA"]
    elsewhere = await dig(port, "example.com", tcp=tcp)
    assert elsewhere.status == "REFUSED" and elsewhere.answer == []


async def test_a_configured_cluster_is_a_zone_before_any_drone_speaks(
    start_controller: object,
) -> None:
    controller = await start_controller(clusters=["configured.test:9443"])  # type: ignore[operator]
    assert controller.dns_port is not None
    result = await dig(controller.dns_port, "configured.test", "SOA")
    assert result.status == "NOERROR"
    assert (await dig(controller.dns_port, f"x.{CLUSTER}")).status == "REFUSED"


async def test_garbage_packets_do_not_stop_the_server(
    nc: bus.NatsClient, port: int, make_drone: MakeDrone
) -> None:
    await make_drone()
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        # A header saying one question, then junk: FORMERR for the same ID.
        await loop.sock_sendall(sock, struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\xff")
        reply = await asyncio.wait_for(loop.sock_recv(sock, 512), 5)
    query_id, flags = struct.unpack_from("!HH", reply)
    assert query_id == 0x1234 and flags & 0x8000 and flags & 0xF == 1  # QR, FORMERR
    # A TCP client that sends half a message and goes away.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x00\x40abc")
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    del reader
    assert (await dig(port, CLUSTER, "SOA")).status == "NOERROR"
    assert (await dig(port, CLUSTER, "SOA", tcp=True)).status == "NOERROR"


async def test_bad_records_are_refused_and_the_good_ones_still_served(
    nc: bus.NatsClient, port: int, make_drone: MakeDrone
) -> None:
    await make_drone()
    bad_acme = SetAcmeDnsRecord(cluster="not a cluster", value="v")
    assert await bus.request(nc, subjects.ACME_SET_DNS_RECORD, bad_acme, bool, timeout=5) is False
    bad_a = SetDnsRecord(cluster=CLUSTER, kind=DnsRecordKind.A, name="bad", value="not-an-ip")
    await bus.publish(nc, subjects.dns_record(CLUSTER, "A"), bad_a)
    await nc.publish(subjects.dns_record(CLUSTER, "A"), b"{broken")
    good = SetDnsRecord(cluster=CLUSTER, kind=DnsRecordKind.A, name="good", value="198.51.100.3")
    await bus.publish(nc, subjects.dns_record(CLUSTER, "A"), good)

    async def good_served() -> bool:
        return (await dig(port, f"good.{CLUSTER}")).data("A") == ["198.51.100.3"]

    # Published after the bad ones on the same connection: once it is served, they were seen.
    await eventually(good_served, what="the good record")
    assert (await dig(port, f"bad.{CLUSTER}")).status == "NXDOMAIN"

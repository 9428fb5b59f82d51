"""Authoritative DNS answers, from a query packet to a response packet.

Pure: dnspython does the wire format, a `ZoneData` supplies the records, and
the transports in `controller.dns` only move bytes. Behaviour:

* a name inside one of our zones with records of the asked type → NOERROR
  with them (A/AAAA for backends and SetDnsRecord names, TXT that
  accumulate, SOA at the apex);
* a name that exists but has no record of that type → NOERROR, empty, with
  the SOA in the authority section (so resolvers cache the absence briefly);
* an unknown name inside a zone → NXDOMAIN with the SOA;
* a name outside our zones, a class other than IN, or a zone transfer → REFUSED;
* an opcode other than QUERY → NOTIMP; a packet that does not parse → FORMERR
  (or nothing, when not even the header can be read, or it is a response).

The SOA serial is the current Unix time: the zone is dynamic and never
transferred, so the serial only needs to grow. MINIMUM (the negative-caching
TTL) is the record TTL, so a name that did not exist a moment ago is not
cached as absent for long.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Protocol

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

UDP_LIMIT = 512  # without EDNS
MAX_UDP_LIMIT = 4096
SOA_REFRESH = 3600
SOA_RETRY = 600
SOA_EXPIRE = 86400


class Result(enum.StrEnum):
    """What a query got, for the metrics."""

    ANSWER = "answer"
    NODATA = "nodata"
    NXDOMAIN = "nxdomain"
    REFUSED = "refused"
    NOTIMP = "notimp"
    FORMERR = "formerr"
    DROPPED = "dropped"


@dataclass(slots=True)
class Records:
    """What one name holds; `exists` is true for a name with no records too (a live backend)."""

    addresses: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    exists: bool = False


@dataclass(frozen=True, slots=True)
class Soa:
    mname: str  # relative to the zone
    rname: str  # relative to the zone
    ttl: int


class ZoneData(Protocol):
    def zone_for(self, name: dns.name.Name) -> dns.name.Name | None:
        """The zone of ours that contains `name` (the longest), or None."""
        ...

    def records(self, zone: str, name: str) -> Records:
        """`name` relative to `zone`, lowercase, `@` for the apex."""
        ...

    def serial(self) -> int: ...

    @property
    def soa(self) -> Soa: ...


def answer_packet(data: bytes, zones: ZoneData, *, udp: bool) -> tuple[bytes | None, Result]:
    """One query packet → the response packet (None: send nothing)."""
    if len(data) < 12:
        return None, Result.DROPPED
    query_id, flags = struct.unpack_from("!HH", data)
    if flags & dns.flags.QR:
        return None, Result.DROPPED  # a response: answering it could start a loop
    try:
        query = dns.message.from_wire(data)
    except dns.exception.DNSException:
        return _bare_error(query_id, flags, dns.rcode.FORMERR), Result.FORMERR
    response, result = answer(query, zones)
    limit = 65535
    if udp:
        limit = UDP_LIMIT if query.edns < 0 else max(UDP_LIMIT, min(query.payload, MAX_UDP_LIMIT))
    try:
        return response.to_wire(max_size=limit), result
    except dns.exception.TooBig:
        for section in (response.answer, response.authority, response.additional):
            section.clear()
        response.flags |= dns.flags.TC
        return response.to_wire(max_size=limit), result


def _bare_error(query_id: int, flags: int, rcode: int) -> bytes:
    """A header-only error response for a query dnspython could not read."""
    opcode_bits = flags & 0x7800
    out_flags = dns.flags.QR | opcode_bits | (flags & dns.flags.RD) | rcode
    return struct.pack("!HHHHHH", query_id, out_flags, 0, 0, 0, 0)


def answer(query: dns.message.Message, zones: ZoneData) -> tuple[dns.message.Message, Result]:
    response = dns.message.make_response(query)
    if query.opcode() != dns.opcode.QUERY:
        response.set_rcode(dns.rcode.NOTIMP)
        return response, Result.NOTIMP
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return response, Result.FORMERR
    question = query.question[0]
    qname, qtype = question.name, question.rdtype
    zone = zones.zone_for(qname)
    if (
        zone is None
        or question.rdclass not in (dns.rdataclass.IN, dns.rdataclass.ANY)
        or qtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR)
    ):
        response.set_rcode(dns.rcode.REFUSED)
        return response, Result.REFUSED
    response.flags |= dns.flags.AA
    zone_text = zone.to_text(omit_final_dot=True)
    relative = qname.relativize(zone).to_text().lower()
    records = zones.records(zone_text, relative)
    soa = zones.soa
    answers: list[dns.rrset.RRset] = []
    apex = relative == "@"
    if apex and qtype in (dns.rdatatype.SOA, dns.rdatatype.ANY):
        answers.append(_soa_rrset(zone, zones))
    if qtype in (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.ANY):
        answers.extend(_address_rrsets(qname, records.addresses, qtype, soa.ttl))
    if qtype in (dns.rdatatype.TXT, dns.rdatatype.ANY) and records.texts:
        answers.append(_txt_rrset(qname, records.texts, soa.ttl))
    if answers:
        response.answer.extend(answers)
        return response, Result.ANSWER
    response.authority.append(_soa_rrset(zone, zones))
    if apex or records.exists or records.addresses or records.texts:
        return response, Result.NODATA
    response.set_rcode(dns.rcode.NXDOMAIN)
    return response, Result.NXDOMAIN


def _soa_rrset(zone: dns.name.Name, zones: ZoneData) -> dns.rrset.RRset:
    soa = zones.soa
    mname = dns.name.from_text(soa.mname, zone)
    rname = dns.name.from_text(soa.rname, zone)
    serial = zones.serial() & 0xFFFFFFFF
    text = f"{mname} {rname} {serial} {SOA_REFRESH} {SOA_RETRY} {SOA_EXPIRE} {soa.ttl}"
    return dns.rrset.from_text(zone, soa.ttl, dns.rdataclass.IN, dns.rdatatype.SOA, text)


def _address_rrsets(
    qname: dns.name.Name, addresses: list[str], qtype: int, ttl: int
) -> list[dns.rrset.RRset]:
    v4 = [a for a in addresses if ipaddress.ip_address(a).version == 4]
    v6 = [a for a in addresses if ipaddress.ip_address(a).version == 6]
    rrsets = []
    if v4 and qtype in (dns.rdatatype.A, dns.rdatatype.ANY):
        rrsets.append(dns.rrset.from_text_list(qname, ttl, dns.rdataclass.IN, dns.rdatatype.A, v4))
    if v6 and qtype in (dns.rdatatype.AAAA, dns.rdatatype.ANY):
        rrsets.append(
            dns.rrset.from_text_list(qname, ttl, dns.rdataclass.IN, dns.rdatatype.AAAA, v6)
        )
    return rrsets


def _txt_rrset(qname: dns.name.Name, texts: list[str], ttl: int) -> dns.rrset.RRset:
    rdatas = []
    for text in texts:
        raw = text.encode()
        chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)]
        rdatas.append(dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks))
    return dns.rrset.from_rdata_list(qname, ttl, rdatas)

"""Simulated hosts: Linux network namespaces on a bridge the test creates.

Each `Host` is a namespace with one interface (`eth0`) on the test's bridge,
at its own address in a /24 of 10.214.0.0/16 that only these tests use;
nothing routes beyond the bridge. Processes run on a host through
`nsenter --net`, which enters its network namespace only (the file system
and cgroups stay the machine's, as a Docker engine needs). `cut` and `heal`
take a host's link down and up, as a pulled cable would. `close` removes
everything, and is safe to call after a failure at any point.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from dataclasses import dataclass, field

SUBNET_PREFIX = "10.214"


class NetnsError(RuntimeError):
    pass


def _ip(*argv: str, check: bool = True) -> str:
    result = subprocess.run(["ip", *argv], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetnsError(f"ip {' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


@dataclass
class Host:
    name: str
    namespace: str
    ip: str
    veth: str  # the root side of its link

    def command(self, *argv: str) -> list[str]:
        """`argv`, run on this host."""
        return ["nsenter", f"--net=/run/netns/{self.namespace}", *argv]

    def ip_command(self, *argv: str) -> None:
        _ip("-n", self.namespace, *argv)

    def cut(self) -> None:
        """The host falls off the network (its processes keep running)."""
        _ip("link", "set", self.veth, "down")

    def heal(self) -> None:
        _ip("link", "set", self.veth, "up")


@dataclass
class Network:
    bridge: str
    subnet: str  # "10.214.N"
    hosts: list[Host] = field(default_factory=list)

    @classmethod
    def create(cls) -> Network:
        if os.geteuid() != 0:
            raise NetnsError("simulated hosts need root (CI runs the suite as root)")
        for tool in ("ip", "nsenter"):
            if shutil.which(tool) is None:
                raise NetnsError(f"{tool} not found: run `make tools` (iproute2, util-linux)")
        taken = _ip("-4", "route")
        free = [n for n in range(1, 255) if f"{SUBNET_PREFIX}.{n}.0/24" not in taken]
        if not free:
            raise NetnsError(f"no free /24 in {SUBNET_PREFIX}.0.0/16")
        third = random.choice(free)
        tag = f"{third:03d}{random.randrange(1000):03d}"
        network = cls(bridge=f"plb{tag}", subnet=f"{SUBNET_PREFIX}.{third}")
        _ip("link", "add", network.bridge, "type", "bridge")
        try:
            network._accept_between_hosts(True)
            _ip("addr", "add", f"{network.subnet}.1/24", "dev", network.bridge)
            _ip("link", "set", network.bridge, "up")
        except NetnsError:
            network.close()
            raise
        return network

    def add_host(self, name: str) -> Host:
        index = len(self.hosts) + 10
        tag = self.bridge.removeprefix("plb")
        host = Host(
            name=name,
            namespace=f"pl{tag}-{name}",
            ip=f"{self.subnet}.{index}",
            veth=f"plv{tag}{index}"[:15],
        )
        self.hosts.append(host)
        _ip("netns", "add", host.namespace)
        _ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0",
            "netns", host.namespace)  # fmt: skip
        _ip("link", "set", host.veth, "master", self.bridge, "up")
        host.ip_command("addr", "add", f"{host.ip}/24", "dev", "eth0")
        host.ip_command("link", "set", "eth0", "up")
        host.ip_command("link", "set", "lo", "up")
        return host

    def _accept_between_hosts(self, accept: bool) -> None:
        """Let traffic between the hosts through the machine's firewall (or stop letting it).

        Bridged packets meet iptables' FORWARD chain (br_netfilter), whose policy a
        Docker engine sets to DROP; one rule for this bridge alone lets them pass.
        """
        if shutil.which("iptables") is None:
            return
        rule = ["FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]
        subprocess.run(
            ["iptables", "-w", "-I" if accept else "-D", *rule],
            capture_output=True,
            check=accept,
        )

    def close(self) -> None:
        """Remove the namespaces, links and bridge (processes in them must be gone first)."""
        self._accept_between_hosts(False)
        for host in self.hosts:
            _ip("netns", "del", host.namespace, check=False)
            _ip("link", "del", host.veth, check=False)
        _ip("link", "del", self.bridge, check=False)

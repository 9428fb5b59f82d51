"""A certificate authority of the test's own, and server certificates it signs (openssl)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


class TlsError(RuntimeError):
    pass


def _openssl(*argv: str) -> None:
    if shutil.which("openssl") is None:
        raise TlsError("openssl not found: run `make tools`")
    result = subprocess.run(["openssl", *argv], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise TlsError(f"openssl {' '.join(argv[:2])}: {result.stderr.strip()}")


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


@dataclass(frozen=True)
class CertAuthority:
    directory: Path
    cert: Path
    key: Path

    @classmethod
    def create(cls, directory: Path) -> CertAuthority:
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / "ca.pem", directory / "ca-key.pem"
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=plane test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        return cls(directory, cert, key)

    def issue(self, name: str, *ips: str, dns: tuple[str, ...] = ()) -> Certificate:
        """A server (and client) certificate for `ips` and `dns` names."""
        key = self.directory / f"{name}-key.pem"
        csr = self.directory / f"{name}.csr"
        cert = self.directory / f"{name}.pem"
        sans = ",".join([*(f"IP:{ip}" for ip in ips), *(f"DNS:{d}" for d in dns)])
        extensions = self.directory / f"{name}.ext"
        extensions.write_text(
            f"subjectAltName={sans}\nextendedKeyUsage=serverAuth,clientAuth\n"
            "basicConstraints=CA:FALSE\n"
        )
        _openssl(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(extensions),
        )  # fmt: skip
        return Certificate(cert, key)

"""The LAN console's HTTPS certificate: made on the unit (self-signed), read back for its
SHA-256 fingerprint and expiry (``doctor``, the unit's own screen).

The nurse compares the fingerprint her tablet's browser shows with the one on the unit's
screen (or ``doctor``'s), once: the PIN then never crosses the van's Wi-Fi in clear.
:func:`subject_names` and :func:`make_certificate` are pure (names and time in, PEM out);
:func:`write_certificate` writes the key 0600 and never overwrites without ``replace``.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge_agent.console.hosts import allowed_names, interface_addresses, unit_names
from edge_agent.errors import ConfigError
from edge_agent.settings import ConsoleSettings

DAYS: Final = 5 * 365
INSTALL_FIX: Final = "run `edge-agent console cert` (scripts/install makes it)"


def subject_names(
    c: ConsoleSettings, names: set[str], addresses: set[str]
) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) the certificate names: the same the console answers to
    (loopback, the bind address, the unit's names and addresses, ``allowed_hosts``)."""
    dns, ips = [], []
    for name in sorted(allowed_names(c.host, names, addresses, c.allowed_hosts)):
        try:
            ips.append(str(ipaddress.ip_address(name)))
        except ValueError:
            dns.append(name)
    return dns, ips


def make_certificate(
    unit_id: str, dns: list[str], ips: list[str], now: datetime, days: int = DAYS
) -> tuple[bytes, bytes]:
    """A self-signed server certificate (ECDSA P-256) and its key, both PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"edge-agent console {unit_id}")])
    san = [x509.DNSName(n) for n in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the certificate, as browsers show it (``AB:CD:…``)."""
    digest = x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA256())
    return ":".join(f"{b:02X}" for b in digest)


@dataclass(frozen=True)
class CertInfo:
    fingerprint: str
    not_after: datetime


def read_certificate(path: Path) -> CertInfo:
    """The fingerprint and expiry of the certificate at ``path`` (OSError, ValueError)."""
    pem = path.read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    return CertInfo(fingerprint(pem), cert.not_valid_after_utc)


def require_files(c: ConsoleSettings) -> None:
    """Before serving HTTPS: both files there, or a clear error (never plain HTTP instead)."""
    for field, path in (("cert_file", c.cert_file), ("key_file", c.key_file)):
        if not os.access(path, os.R_OK):
            raise ConfigError(
                "[console]",
                field,
                f"no readable certificate file {path} for "
                f"the console on {c.host} (HTTPS off loopback)",
                INSTALL_FIX,
            )


def write_certificate(
    c: ConsoleSettings,
    unit_id: str,
    *,
    days: int = DAYS,
    replace: bool = False,
    now: datetime | None = None,
) -> CertInfo:
    """Make the console's certificate for this machine's names; the key 0600."""
    cert_path, key_path = Path(c.cert_file), Path(c.key_file)
    if not replace and (cert_path.exists() or key_path.exists()):
        raise FileExistsError(
            f"{cert_path} or {key_path} exists (--replace makes a new one: "
            "tablets then see a new fingerprint)"
        )
    dns, ips = subject_names(c, unit_names(), interface_addresses())
    cert_pem, key_pem = make_certificate(unit_id, dns, ips, now or datetime.now(UTC), days)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = key_path.with_name(key_path.name + ".new")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_pem)
    os.replace(tmp, key_path)
    tmp = cert_path.with_name(cert_path.name + ".new")
    tmp.write_bytes(cert_pem)
    tmp.chmod(0o644)
    os.replace(tmp, cert_path)
    return read_certificate(cert_path)


def main(argv: list[str] | None = None) -> int:
    """``python -m edge_agent.console.tls CERT KEY [UNIT_ID]``: what ``scripts/install`` runs
    (before the virtualenv's ``edge-agent`` may exist): the certificate for every name and
    address of this machine, unless one is there already (kept across upgrades: tablets know
    its fingerprint). Prints the fingerprint."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        print("usage: python -m edge_agent.console.tls CERT KEY [UNIT_ID]", file=sys.stderr)
        return 2
    cert, key = Path(args[0]), Path(args[1])
    if cert.exists() or key.exists():
        print(f"kept {cert} (fingerprint {read_certificate(cert).fingerprint})")
        return 0
    c = ConsoleSettings(host="0.0.0.0", cert_file=str(cert), key_file=str(key))
    info = write_certificate(c, args[2] if len(args) == 3 else "unit")
    print(f"wrote {cert} and {key} (0600); SHA-256 fingerprint {info.fingerprint}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Command line: TLS certificates for the SuperLink and authentication keys for SuperNodes.

Usage::

    python -m oneliac_flwr.certs server --out DIR --name coordinator.example.org --ip 10.0.0.5
    python -m oneliac_flwr.certs node-key --out DIR --organization h1

``server`` writes a private certificate authority and a server certificate signed by it:

- ``DIR/ca.pem`` (the CA certificate, 0644): every SuperNode and every ``flwr`` client
  trusts it (``--root-certificates``, ``root-certificates`` in ``config.toml``);
- ``DIR/ca.key`` (0600): the CA's private key; keep it offline once the server
  certificate is issued;
- ``DIR/server.pem`` (0644) with a subject alternative name for every ``--name`` (DNS)
  and ``--ip`` given: clients check the address they dial against these names;
- ``DIR/server.key`` (0600): the SuperLink's private key.

``node-key`` writes the key pair a SuperNode authenticates with when the SuperLink runs
``--enable-supernode-auth``: ``DIR/<organization>.key`` (OpenSSH private key, 0600) and
``DIR/<organization>.pub`` (OpenSSH public key, 0644), ECDSA on NIST P-384 as Flower
expects. The coordinator registers the ``.pub`` file (``flwr supernode register``).

Keys are made by ``cryptography``; nothing here is home-made. Existing files are never
overwritten. Exit code 0 on success, 2 on an error (the message names the option or file).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from oneliac_flwr.errors import ConfigError

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "SERVER_CERT",
    "SERVER_KEY",
    "NodeKeyFiles",
    "ServerCertificates",
    "main",
    "make_node_key",
    "make_server_certificates",
]

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"

_PRIVATE = 0o600
_PUBLIC = 0o644
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_ORGANIZATION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class ServerCertificates:
    """Paths written by :func:`make_server_certificates`."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class NodeKeyFiles:
    """Paths written by :func:`make_node_key`."""

    private_key: Path
    public_key: Path


def _check_dns_name(name: str) -> str:
    labels = name.rstrip(".").split(".")
    if not name or len(name) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
        raise ConfigError("--name", f"expected a DNS name such as coordinator.example.org, got {name!r}")
    return name.rstrip(".")


def _check_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError("--ip", f"expected an IPv4 or IPv6 address such as 10.0.0.5, got {value!r}") from None


def _fresh(paths: Sequence[Path]) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise ConfigError("--out", f"refusing to overwrite {', '.join(existing)}; choose another folder or remove them")


def _write(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` before any byte is written (never widened by the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def make_server_certificates(
    out: str | os.PathLike[str],
    *,
    names: Sequence[str],
    ips: Sequence[str],
    days: int = 365,
    organization: str = "oneliac federation",
) -> ServerCertificates:
    """Create a CA and a server certificate for the SuperLink.

    Parameters
    ----------
    out : path
        Folder for the four files (created, mode 0700, if absent).
    names : sequence of str
        DNS names clients use to reach the SuperLink (subject alternative names).
    ips : sequence of str
        IP addresses clients use to reach the SuperLink (subject alternative names).
    days : int
        Validity of both certificates, in days.
    organization : str
        Organization name written in the certificates' subjects.

    Returns
    -------
    ServerCertificates
        The paths written.

    Raises
    ------
    ConfigError
        If no name and no address is given, a name or address is malformed, ``days`` is
        not positive, or a file already exists (the message names the option).
    """
    if not names and not ips:
        raise ConfigError("--name/--ip", "give at least one DNS name or IP address the SuperLink is reached at")
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ConfigError("--days", f"expected a positive number of days, got {days!r}")
    dns = [_check_dns_name(n) for n in names]
    addresses = [_check_ip(i) for i in ips]
    folder = Path(out)
    files = ServerCertificates(folder / CA_CERT, folder / CA_KEY, folder / SERVER_CERT, folder / SERVER_KEY)
    _fresh([files.ca_cert, files.ca_key, files.server_cert, files.server_key])
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)  # tolerate small clock skew
    until = now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization), x509.NameAttribute(NameOID.COMMON_NAME, f"{organization} CA")]
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    common_name = dns[0] if dns else str(addresses[0])
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in dns] + [x509.IPAddress(a) for a in addresses]
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization), x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        )
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=True, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    _write(files.ca_key, _key_pem(ca_key), _PRIVATE)
    _write(files.server_key, _key_pem(server_key), _PRIVATE)
    _write(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), _PUBLIC)
    _write(files.server_cert, server_cert.public_bytes(serialization.Encoding.PEM), _PUBLIC)
    return files


def make_node_key(out: str | os.PathLike[str], *, organization: str) -> NodeKeyFiles:
    """Create a SuperNode's authentication key pair, ``<organization>.key`` and ``.pub``.

    Parameters
    ----------
    out : path
        Folder for both files (created, mode 0700, if absent).
    organization : str
        The hospital's ``organization-id`` (letters, digits, ``_.-``): the file names.

    Raises
    ------
    ConfigError
        If the organization id is malformed or a file already exists.
    """
    if not _ORGANIZATION.match(organization):
        raise ConfigError(
            "--organization", f"expected an organization id of letters, digits, '_', '.', '-' (at most 64), got {organization!r}"
        )
    folder = Path(out)
    files = NodeKeyFiles(folder / f"{organization}.key", folder / f"{organization}.pub")
    _fresh([files.private_key, files.public_key])
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write(files.private_key, private, _PRIVATE)
    _write(files.public_key, public + f" {organization}\n".encode(), _PUBLIC)
    return files


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m oneliac_flwr.certs", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser("server", help="a CA and the SuperLink's server certificate")
    server.add_argument("--out", required=True, help="folder of ca.pem, ca.key, server.pem, server.key")
    server.add_argument("--name", action="append", default=[], help="DNS name of the SuperLink (repeatable)")
    server.add_argument("--ip", action="append", default=[], help="IP address of the SuperLink (repeatable)")
    server.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    node = commands.add_parser("node-key", help="a SuperNode's authentication key pair")
    node.add_argument("--out", required=True, help="folder of <organization>.key and <organization>.pub")
    node.add_argument("--organization", required=True, help="the hospital's organization-id")
    args = parser.parse_args(argv)
    try:
        if args.command == "server":
            written = make_server_certificates(args.out, names=args.name, ips=args.ip, days=args.days)
            paths = [written.ca_cert, written.ca_key, written.server_cert, written.server_key]
        else:
            keys = make_node_key(args.out, organization=args.organization)
            paths = [keys.private_key, keys.public_key]
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

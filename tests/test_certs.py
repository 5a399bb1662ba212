"""Certificates and SuperNode keys from ``python -m oneliac_flwr.certs``."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_ssh_private_key, load_ssh_public_key

from oneliac_flwr.certs import main, make_node_key, make_server_certificates
from oneliac_flwr.errors import ConfigError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_server_certificate_has_every_name_and_address_and_chains_to_the_ca(tmp_path: Path) -> None:
    files = make_server_certificates(tmp_path / "tls", names=["coordinator.example.org", "localhost"], ips=["127.0.0.1", "::1"])
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["coordinator.example.org", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    key = load_pem_private_key(files.server_key.read_bytes(), password=None)
    assert key.public_key().public_numbers() == server.public_key().public_numbers()


def test_private_keys_are_0600_and_certificates_0644(tmp_path: Path) -> None:
    files = make_server_certificates(tmp_path / "tls", names=["localhost"], ips=[])
    assert _mode(files.ca_key) == 0o600 and _mode(files.server_key) == 0o600
    assert _mode(files.ca_cert) == 0o644 and _mode(files.server_cert) == 0o644
    node = make_node_key(tmp_path / "keys", organization="h1")
    assert _mode(node.private_key) == 0o600 and _mode(node.public_key) == 0o644


def test_a_tls_client_accepts_the_server_by_address_and_refuses_a_name_not_in_the_certificate(tmp_path: Path) -> None:
    files = make_server_certificates(tmp_path / "tls", names=["localhost"], ips=["127.0.0.1"])
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(files.server_cert, files.server_key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve(count: int) -> None:
        for _ in range(count):
            conn, _ = listener.accept()
            try:
                with server_context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, args=(2,), daemon=True)
    thread.start()
    try:
        client = ssl.create_default_context(cafile=str(files.ca_cert))
        with socket.create_connection(("127.0.0.1", port)) as raw, client.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.version() is not None
            tls.sendall(b"x")
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with pytest.raises(ssl.SSLCertVerificationError):
                client.wrap_socket(raw, server_hostname="other.example.org")
    finally:
        thread.join(timeout=10)
        listener.close()


def test_node_key_is_an_openssh_p384_pair_named_after_the_organization(tmp_path: Path) -> None:
    files = make_node_key(tmp_path / "keys", organization="h1")
    assert files.private_key.name == "h1.key" and files.public_key.name == "h1.pub"
    private = load_ssh_private_key(files.private_key.read_bytes(), password=None)
    public = load_ssh_public_key(files.public_key.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, ec.SECP384R1)
    assert private.public_key().public_numbers() == public.public_numbers()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["server", "--name", "bad_name!"], "--name"),
        (["server", "--ip", "10.0.0.300"], "--ip"),
        (["server"], "--name/--ip"),
        (["server", "--name", "localhost", "--days", "0"], "--days"),
        (["node-key", "--organization", "../h1"], "--organization"),
    ],
)
def test_bad_input_names_the_option(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], option: str) -> None:
    command, *rest = argv
    assert main([command, "--out", str(tmp_path / "out"), *rest]) == 2
    assert f"error: {option}:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_existing_files_are_never_overwritten(tmp_path: Path) -> None:
    files = make_server_certificates(tmp_path, names=["localhost"], ips=[])
    before = files.ca_key.read_bytes()
    with pytest.raises(ConfigError, match="--out: refusing to overwrite"):
        make_server_certificates(tmp_path, names=["localhost"], ips=[])
    assert files.ca_key.read_bytes() == before
    make_node_key(tmp_path, organization="h1")
    with pytest.raises(ConfigError, match="h1.key"):
        make_node_key(tmp_path, organization="h1")


def test_command_line_prints_the_files_it_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["server", "--out", str(tmp_path), "--name", "localhost", "--ip", "127.0.0.1"]) == 0
    printed = capsys.readouterr().out.split()
    assert [Path(p).name for p in printed] == ["ca.pem", "ca.key", "server.pem", "server.key"]
    assert main(["node-key", "--out", str(tmp_path), "--organization", "h2"]) == 0
    assert [Path(p).name for p in capsys.readouterr().out.split()] == ["h2.key", "h2.pub"]

"""The team server's launcher, without starting anything: what it refuses, and the secrets it makes."""

from __future__ import annotations

import ipaddress
import stat

import pytest
from cryptography import x509

from cnnlab_tools.mlflow_server import ServerError, ServerLayout, check_exposure, main, secret, self_signed_certificate


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "mlflow.example.org", "::"])
def test_listening_beyond_loopback_needs_tls(host):
    with pytest.raises(ServerError, match=f"refusing to listen on {host} without TLS"):
        check_exposure(host, tls=False)
    check_exposure(host, tls=True)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_loopback_may_go_without_tls(host):
    check_exposure(host, tls=False)


def test_the_refusal_is_one_line_before_anything_is_made(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--dir", str(tmp_path / "server"), "start", "--host", "0.0.0.0"])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: refusing to listen on 0.0.0.0 without TLS")
    assert not (tmp_path / "server").exists()
    with pytest.raises(SystemExit):
        main(["--dir", str(tmp_path / "server"), "start", "--tls-cert", "cert.pem"])
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err


def test_secrets_are_generated_once_and_readable_by_their_owner_only(tmp_path):
    path = tmp_path / "secrets" / "admin-password"
    first = secret(path)
    assert len(first) >= 24 and secret(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_self_signed_certificate_names_the_host_it_serves(tmp_path):
    cert_path, key_path = self_signed_certificate(ServerLayout(tmp_path), "10.1.2.3")
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.1.2.3") in names.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert self_signed_certificate(ServerLayout(tmp_path), "10.1.2.3") == (cert_path, key_path), "made once"

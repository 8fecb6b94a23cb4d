"""A throwaway public-key infrastructure for the TLS and mTLS tests: a CA that signs the servers' and the
clients' certificates, and a rogue CA that signs a client certificate the servers must refuse."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.certs import CertificateAuthority, CertPair

__all__ = ["Pki", "make_pki"]


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA that issued `server`, `named_server` and `client`
    server: CertPair  # for localhost and 127.0.0.1
    named_server: CertPair  # for NAMED_SERVER only: dialing it by address needs the name set for verification
    client: CertPair
    rogue_ca: Path
    rogue_client: CertPair


NAMED_SERVER = "signer.portico.test"


def _issue_for_name(ca: CertificateAuthority, name: str) -> CertPair:
    """A server certificate whose only name is `name` (CertificateAuthority.issue always adds the loopback)."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.load_pem_x509_certificate(ca.cert_path.read_bytes())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca._key, hashes.SHA256())  # the test CA's own key
    )
    stem = ca.directory / f"{ca.name}-{name}"
    pair = CertPair(stem.with_suffix(".pem"), stem.with_suffix(".key"))
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return pair


def make_pki(directory: Path) -> Pki:
    good, rogue = CertificateAuthority(directory, "good"), CertificateAuthority(directory, "rogue")
    return Pki(ca=good.cert_path, server=good.issue("server", server=True),
               named_server=_issue_for_name(good, NAMED_SERVER), client=good.issue("client", server=False),
               rogue_ca=rogue.cert_path, rogue_client=rogue.issue("client", server=False))


def server_env(pki: Pki, *, mtls: bool = True, named: bool = False) -> dict[str, str]:
    """A server's own TLS settings (PORTICO_TLS_*): its certificate and, for mTLS, the CA of its clients."""
    cert = pki.named_server if named else pki.server
    env = {"PORTICO_TLS_CERT_FILE": str(cert.cert), "PORTICO_TLS_KEY_FILE": str(cert.key)}
    if mtls:
        env["PORTICO_TLS_CLIENT_CA_FILE"] = str(pki.ca)
    return env


def upstream_env(pki: Pki, *, ca: Path | None = None, client_cert: bool = True) -> dict[str, str]:
    """A calling process's PORTICO_UPSTREAM_TLS_* settings."""
    env = {"PORTICO_UPSTREAM_TLS_CA_FILE": str(ca or pki.ca)}
    if client_cert:
        env |= {"PORTICO_UPSTREAM_TLS_CERT_FILE": str(pki.client.cert),
                "PORTICO_UPSTREAM_TLS_KEY_FILE": str(pki.client.key)}
    return env

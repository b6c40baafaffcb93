"""Reading the PEM files that TLS needs, for the client and the local server alike."""

from __future__ import annotations

import os

from serving.errors import ServingError


def read_pem_file(path: str | os.PathLike | None, what: str) -> bytes | None:
    """The bytes of a PEM file, None for no path; a ServingError naming `what` and the path if unreadable."""
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ServingError(f"{what} {os.fspath(path)!r} cannot be read: {exc}; pass an existing PEM file") from exc


def check_server_credentials(cert: bytes, key: bytes | None, client_ca: bytes | None = None) -> None:
    """Refuse, with a ServingError naming the file's role, TLS material gRPC would only reject as "Failed to bind":
    a certificate or CA that is not PEM, a key that is not a PEM private key, a key that is not the certificate's."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    def certificates(data: bytes, what: str) -> list:
        try:
            return x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise ServingError(f"the TLS {what} is not a PEM certificate ({exc}); pass a PEM file "
                               "with -----BEGIN CERTIFICATE-----") from exc

    chain = certificates(cert, "certificate")
    if client_ca is not None:
        certificates(client_ca, "client CA")
    if key is None:
        raise ServingError("the TLS certificate has no private key; pass --tls-key too")
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as exc:
        raise ServingError(f"the TLS private key is not an unencrypted PEM private key ({exc}); pass the "
                           "certificate's key, without a passphrase") from exc

    def spki(public) -> bytes:
        return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    if spki(private.public_key()) != spki(chain[0].public_key()):
        raise ServingError("the TLS private key does not match the certificate (the first one in the file); "
                           "pass the key the certificate was issued for")

"""`portico.signer.v1.SignerService/Sign`, and the app that wires it to Vault.

The servicer validates the request, hashes EIP-712 typed data (or takes a raw
digest), checks the key's policy, commits the salt watermark, signs, and
writes one audit line before it answers: a signature whose line cannot be
written to `PORTICO_SIGNER_AUDIT_LOG` is not returned (UNAVAILABLE,
AUDIT_UNAVAILABLE; see `portico.signer.audit`). It never returns, logs or
traces key material.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any

import grpc

from portico.runtime.auth import TokenAuthenticator, current_principal
from portico.runtime.eip712 import TypedDataError, TypedDataHash, hash_typed_data
from portico.runtime.errors import InvalidArgument
from portico.runtime.lifecycle import GrpcServiceApp
from portico.runtime.server import GrpcServer
from portico.runtime.signing_keys import KeyPaths, check_key_id
from portico.runtime.vault import VaultAccess, VaultSession, VaultWatch
from portico.signer.audit import AuditLog
from portico.signer.keystore import KeyStore
from portico.signer.settings import SignerSettings
from portico.signer.v1 import signer_service_pb2, signer_service_pb2_grpc
from portico.signer.watermark import SaltLedger

__all__ = ["SERVICE_NAME", "SignerApp", "SignerServicer"]

SERVICE_NAME = signer_service_pb2.DESCRIPTOR.services_by_name["SignerService"].full_name
METHOD_SCOPES = {f"/{SERVICE_NAME}/Sign": "trade"}
ERROR_DOMAIN = "signer.portico"

log = logging.getLogger("portico.signer")

# A salt is a 256-bit word (Syndr's `uint256 salt`); anything wider is refused. (A string-typed salt could
# otherwise hold an integer too long for Python to write in decimal, as the ledger stores it.)
_SALT_MIN, _SALT_END = -(1 << 255), 1 << 256

# Typed data the venue refuses once a time its message names has passed, so the salt's watermark may be pruned
# some time after it: primary type -> (field, the type it must be declared with). Syndr's `Order.expiration`
# (portico.venues.syndr.typed_data), epoch milliseconds; 0 there means "never expires". Anything else (other
# primary types, the field declared otherwise, raw digests) is watermarked for ever.
_EXPIRING_TYPES = {"Order": ("expiration", "uint256")}
# An expiration below 10^11 is read as seconds (the document's examples show both units; its tables and the
# simulator read milliseconds, and refuse such an order as a 1970 date): read that way it is the later time, the
# safe one to keep a watermark until.
_EXPIRATION_SECONDS_BELOW = 10**11


def _salt_of(typed: TypedDataHash) -> int | None:
    """The message's top-level `salt`, if its type has one (Syndr `Order`).

    The caller declares the types, so a `salt` may arrive as any type: a number or a numeric string
    (decimal or 0x hex) of at most 256 bits is watermarked, anything else is refused rather than signed
    unwatched.
    """
    salt = typed.message.get("salt")
    if salt is None:
        return None
    value: int | None = None
    if isinstance(salt, int) and not isinstance(salt, bool):
        value = salt
    elif isinstance(salt, str):
        with contextlib.suppress(ValueError):  # not a number, or a decimal one of over 4,300 digits
            value = int(salt, 16) if salt.lower().startswith("0x") else int(salt)
    if value is not None and _SALT_MIN <= value < _SALT_END:
        return value
    raise InvalidArgument("typed_data_json.message.salt", "must be an integer of at most 256 bits (e.g. uint256) "
                                                          "or its decimal or 0x-hex string: the signer watermarks "
                                                          "every salt")


def _expiration_ms_of(typed: TypedDataHash, data: Mapping[str, Any]) -> int | None:
    """When the venue stops accepting the signed message (epoch ms), if its type says; None: never, or unknown."""
    expiring = _EXPIRING_TYPES.get(typed.primary_type)
    if expiring is None:
        return None
    name, declared = expiring
    fields = data["types"][typed.primary_type]  # hash_typed_data checked the shape: a list of {name, type}
    if not any(field["name"] == name and field["type"] == declared for field in fields):
        return None
    value = typed.message.get(name)  # a uint256, checked by hash_typed_data: an int or a decimal/0x-hex string
    if isinstance(value, str):
        value = int(value, 16) if value.lower().startswith("0x") else int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        return None
    return value * 1000 if value < _EXPIRATION_SECONDS_BELOW else value


class SignerServicer(signer_service_pb2_grpc.SignerServiceServicer):
    """Signs typed data and digests within each key's policy."""

    def __init__(self, keys: KeyStore, ledger: SaltLedger, *, max_payload_bytes: int,
                 audit_log: AuditLog | None = None):
        self._keys = keys
        self._ledger = ledger
        self._max_payload = max_payload_bytes
        self._audit = audit_log or AuditLog(None)

    async def Sign(self, request: signer_service_pb2.SignRequest,
                   context: grpc.aio.ServicerContext) -> signer_service_pb2.SignResponse:
        key_id = check_key_id(request.key_id)
        payload = request.WhichOneof("payload")
        typed: TypedDataHash | None = None
        data: dict[str, Any] = {}
        if payload == "typed_data_json":
            data = self._parse_json(request.typed_data_json)
            typed = self._hash_typed_data(data)
        elif payload == "digest":
            if len(request.digest) != 32:
                raise InvalidArgument("digest", f"must be exactly 32 bytes, got {len(request.digest)}")
        else:
            raise InvalidArgument("payload", "set one of typed_data_json or digest")

        key = await self._keys.get(key_id)
        salt: int | None = None
        if typed is not None:
            key.policy.check_typed_data(key_id, typed)
            digest = typed.digest
            salt = _salt_of(typed)
            if salt is not None:
                await self._ledger.claim(key_id, key.address, salt, digest,
                                         expires_at_ms=_expiration_ms_of(typed, data))
        else:
            key.policy.check_raw_digest(key_id)
            digest = request.digest
        signature = key.sign(digest)

        principal = current_principal.get()
        # Written before the signature leaves, or it does not leave (AUDIT_UNAVAILABLE): no await in between.
        self._audit.signed({
            "key_id": key_id,
            "caller": principal.name if principal else None,
            "primary_type": typed.primary_type if typed else "<raw digest>",
            "digest": "0x" + digest.hex(),
            "address": key.address,
            **({"salt": str(salt)} if salt is not None else {}),
        })
        return signer_service_pb2.SignResponse(signature=signature, address=key.address, digest=digest)

    def _parse_json(self, text: str) -> dict[str, Any]:
        # The limit is in bytes, as documented: a character of non-ASCII text is up to four of them.
        if len(text) > self._max_payload or (
                not text.isascii() and len(text.encode("utf-8", "surrogatepass")) > self._max_payload):
            raise InvalidArgument("typed_data_json", f"is larger than {self._max_payload} bytes")
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidArgument("typed_data_json",
                                  f"is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
        except RecursionError:
            raise InvalidArgument("typed_data_json", "is nested too deeply") from None
        except ValueError:  # e.g. an integer of more than 4,300 digits (Python's conversion limit)
            raise InvalidArgument("typed_data_json", "holds a number too large to read") from None
        if not isinstance(data, dict):
            raise InvalidArgument("typed_data_json", "must be a JSON object")
        return data

    @staticmethod
    def _hash_typed_data(data: dict[str, Any]) -> TypedDataHash:
        try:
            return hash_typed_data(data)
        except TypedDataError as exc:
            raise InvalidArgument(f"typed_data_json.{exc.field}", str(exc)) from None
        except RecursionError:
            raise InvalidArgument("typed_data_json", "types are nested too deeply") from None


class SignerApp(GrpcServiceApp):
    """The signer process: audit log, Vault session, key store, salt ledger, gRPC server, Vault watch."""

    def __init__(self, settings: SignerSettings, env: Mapping[str, str]):
        self.settings = settings
        self.audit_log = AuditLog(settings.audit_log)
        self.vault = VaultSession(settings.vault)
        self.keys = KeyStore(self.vault, KeyPaths(settings.key_prefix), cache_ttl_s=settings.key_cache_s)
        self.ledger = SaltLedger(settings.watermark_db, synchronous=settings.watermark_sync,
                                 retention_s=settings.watermark_retention_s)
        self.server = GrpcServer(settings.server, domain=ERROR_DOMAIN,
                                 authenticator=TokenAuthenticator.from_env(env), method_scopes=METHOD_SCOPES)
        signer_service_pb2_grpc.add_SignerServiceServicer_to_server(
            SignerServicer(self.keys, self.ledger, max_payload_bytes=settings.max_payload_bytes,
                           audit_log=self.audit_log), self.server.grpc)
        self.vault_watch = VaultWatch(self.vault, settings.vault_check_s, self._vault_access_changed, logger=log)

    async def start(self) -> None:
        self.audit_log.open()  # a path that cannot be opened is a configuration error, before anything starts
        await self.ledger.start()
        try:
            await self.vault.start()
        except Exception as exc:  # start anyway: NOT_SERVING until Vault is reachable and accepts the token
            log.warning("vault not ready at start", extra={"error": type(exc).__name__})
        await self.server.start([SERVICE_NAME])
        await self.vault_watch.start()

    async def _vault_access_changed(self, access: VaultAccess) -> None:
        """Ready only while Vault is up, unsealed and accepts the signer's token: every `Sign` needs that.

        Otherwise the cached keys are dropped (signing stops with Vault, as the operator who sealed it or
        revoked the token means) and they are loaded again on demand once it is back. A single key Vault
        will not let the signer read is not checked here: that fails its own `Sign` calls
        (VAULT_PERMISSION_DENIED) and no others, and a caller's choice of key id must not make the signer
        unready.
        """
        available = access is VaultAccess.AVAILABLE
        if not available:
            self.keys.clear()
        await self.server.set_ready(available)  # the overall status and the service's: readiness, as everywhere

    async def aclose(self, grace_s: float | None = None) -> None:
        await self.vault_watch.aclose()
        await self.server.stop(grace_s)
        await self.keys.aclose()
        await self.ledger.aclose()
        await self.vault.aclose()
        self.audit_log.close()

"""A Syndr account for tests: keys held locally, registered with the venue as the document's script does."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from portico.runtime.eip712 import hash_typed_data
from portico.runtime.secp256k1 import Secp256k1Key, generate_private_key
from portico.venues.syndr import models, typed_data
from portico.venues.syndr.credentials import ApiCredentials
from portico.venues.syndr.http import SyndrHttpClient

ORDER_TYPES = {"limit": typed_data.OrderType.LIMIT, "market": typed_data.OrderType.MARKET}
TIME_IN_FORCE = {"GTC": typed_data.TimeInForce.GTC, "IOC": typed_data.TimeInForce.IOC,
                 "FOK": typed_data.TimeInForce.FOK}


def sign(key: Secp256k1Key, data: dict[str, Any]) -> str:
    return "0x" + key.sign_digest(hash_typed_data(data).digest).hex()


@dataclass
class SyndrAccount:
    account_key: Secp256k1Key
    signing_key: Secp256k1Key
    credentials: ApiCredentials
    orderbook_address: str
    instrument_ids: dict[str, int] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.account_key.address

    def order(self, instrument: str, side: str, amount: str, price: str | None = None, *,
              order_type: str = "limit", time_in_force: str = "GTC", post_only: bool = False,
              reduce_only: bool = False, salt: int | None = None, label: str = "",
              signed_by: Secp256k1Key | None = None, sign_price: str | None = None) -> dict[str, Any]:
        """Params of private/buy or private/sell, signed (by `signed_by`, default the signing key)."""
        now = int(time.time() * 1000)
        salt = secrets.randbits(64) if salt is None else salt
        expiration = now + 60_000
        data = typed_data.order_typed_data(
            verifying_contract=self.orderbook_address, account=self.address,
            instrument_id=self.instrument_ids[instrument], is_buy=side == "buy",
            order_type=int(ORDER_TYPES[order_type]), time_in_force=int(TIME_IN_FORCE[time_in_force]),
            post_only=post_only, reduce_only=reduce_only, price=Decimal(sign_price or price or "0"),
            amount=Decimal(amount), salt=salt, expiration=expiration, timestamp=now)
        params: dict[str, Any] = {
            "order_type": order_type, "time_in_force": time_in_force, "post_only": post_only,
            "reduce_only": reduce_only, "instrument_name": instrument, "amount": amount, "timestamp": now,
            "expiration": expiration, "salt": salt, "signature": sign(signed_by or self.signing_key, data),
        }
        if price is not None:
            params["price"] = price
        if label:
            params["label"] = label
        return params

    def edit(self, order: models.Order, amount: str, price: str) -> dict[str, Any]:
        """Params of private/edit, re-signed over the new price and amount (same salt)."""
        now = int(time.time() * 1000)
        salt = int(order.salt) if order.salt is not None else 0
        expiration = int(order.expiration) if order.expiration else now + 60_000
        data = typed_data.order_typed_data(
            verifying_contract=self.orderbook_address, account=self.address,
            instrument_id=self.instrument_ids[order.instrument_name], is_buy=order.direction == "buy",
            order_type=int(ORDER_TYPES[order.order_type.lower()]),
            time_in_force=int(TIME_IN_FORCE[order.time_in_force or "GTC"]), post_only=bool(order.post_only),
            reduce_only=bool(order.reduce_only), price=Decimal(price), amount=Decimal(amount), salt=salt,
            expiration=expiration, timestamp=now)
        return {"order_id": order.order_id, "instrument_name": order.instrument_name, "amount": amount,
                "price": price, "time_in_force": order.time_in_force or "GTC", "type": order.order_type.lower(),
                "timestamp": now, "salt": salt, "expiration": expiration, "signature": sign(self.signing_key, data)}


async def register(http: SyndrHttpClient, *, account_key: Secp256k1Key | None = None,
                   signing_key: Secp256k1Key | None = None) -> SyndrAccount:
    """Register a (new) signing key for an account, as the document's API Key Setup script does."""
    account_key = account_key or Secp256k1Key(generate_private_key())
    signing_key = signing_key or Secp256k1Key(generate_private_key())
    contracts = models.parse_l3_contracts((await http.call("public/get_l3_contracts")).result)
    manager = contracts.signing_keys_manager_address
    nonces = (await http.call("public/get_signing_key_nonces",
                              {"account": account_key.address, "signing_key": signing_key.address})).result
    expires_at = typed_data.SIGNING_KEY_NEVER_EXPIRES
    sign_key = typed_data.sign_key_typed_data(verifying_contract=manager, account=account_key.address,
                                              nonce=nonces["verify_signing_key_nonce"])
    register_key = typed_data.register_signing_key_typed_data(
        verifying_contract=manager, key=signing_key.address, expires_at=expires_at,
        nonce=nonces["signing_key_register_nonce"])
    result = (await http.call("public/register_signing_key", {
        "account": account_key.address, "signerPublicAddress": signing_key.address, "expiresAt": str(expires_at),
        "signingKeySignature": sign(signing_key, sign_key), "accountSignature": sign(account_key, register_key),
    })).result
    registration = models.parse_register_signing_key(result)
    instruments = models.parse_instruments((await http.call("public/get_instruments", {"kind": "any"})).result)
    assert contracts.orderbook_address is not None
    return SyndrAccount(account_key, signing_key, ApiCredentials(registration.api_key, registration.api_secret),
                        contracts.orderbook_address, {name: i.id for name, i in instruments.items()})

"""`portico.account.v1.AccountService`, and the app that wires it to the venue, Vault, the signer and refdata."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from typing import Any, Final

import grpc

from portico.account.convert import (
    VENUE_SCOPES,
    api_key_proto,
    collateral_proto,
    deposit_proto,
    position_proto,
    summary_proto,
)
from portico.account.positions import PositionFeeds
from portico.account.registration import SigningKeyRegistrar
from portico.account.settings import AccountSettings
from portico.account.v1 import account_pb2
from portico.account.v1 import account_service_pb2 as pb
from portico.account.v1 import account_service_pb2_grpc as pb_grpc
from portico.refdata.v1 import reference_data_service_pb2 as refdata_pb
from portico.refdata.v1 import reference_data_service_pb2_grpc as refdata_grpc
from portico.runtime.auth import TokenAuthenticator
from portico.runtime.client import bearer, open_channel
from portico.runtime.decimals import format_decimal, parse_decimal
from portico.runtime.errors import FailedPrecondition, InvalidArgument, Unavailable
from portico.runtime.fanout import StreamConsumer
from portico.runtime.lifecycle import GrpcServiceApp
from portico.runtime.paging import offset_from_token, page_size, page_token
from portico.runtime.server import GrpcServer
from portico.runtime.signing_keys import KeyPaths
from portico.runtime.vault import VaultError, VaultSession
from portico.signer.client import SignerClient
from portico.venues.accounts import SyndrAccounts, VenueAccountStore, check_account, check_venue
from portico.venues.syndr import models, typed_data
from portico.venues.syndr.errors import SyndrError, map_venue_errors, to_portico_error

__all__ = ["SERVICE_NAME", "AccountApp", "AccountServicer"]

log = logging.getLogger("portico.account")

_SERVICE = pb.DESCRIPTOR.services_by_name["AccountService"]
SERVICE_NAME = _SERVICE.full_name
_ADMIN_METHODS = frozenset({"SetPortfolioMargin", "SetLeverage", "CreateApiKey", "DeactivateApiKey",
                            "RegisterSigningKey"})
METHOD_SCOPES = {f"/{SERVICE_NAME}/{m.name}": "admin" if m.name in _ADMIN_METHODS else "read"
                 for m in _SERVICE.methods}
ERROR_DOMAIN = "account.portico"
_CURRENCY = re.compile(r"[A-Z0-9]{1,16}")
_NAME = re.compile(r"[\w .:-]{0,64}")
MAX_SIGNING_KEY_VALIDITY_S: Final = 10 * 365 * 86_400


class AccountServicer(pb_grpc.AccountServiceServicer):
    """The RPCs: thin over the venue, except RegisterSigningKey (see `registration`)."""

    def __init__(self, accounts: SyndrAccounts, vault: VaultSession, registrar: SigningKeyRegistrar,
                 positions: PositionFeeds, refdata: refdata_grpc.ReferenceDataServiceStub, service_token: str):
        self.accounts = accounts
        self.vault = vault
        self.registrar = registrar
        self.positions = positions
        self.refdata = refdata
        self._metadata = bearer(service_token)

    async def _call(self, account: str, method: str, params: dict[str, Any] | None = None) -> Any:
        return (await self.accounts.call(account, method, params)).result

    @map_venue_errors
    async def GetAccountSummary(self, request: pb.GetAccountSummaryRequest, context: Any) -> Any:
        venue, account = check_venue(request.venue), check_account(request.account)
        summary = models.parse_account_summary(await self._call(account, "private/get_account_summary"))
        return pb.GetAccountSummaryResponse(summary=summary_proto(venue, account, summary))

    @map_venue_errors
    async def ListPositions(self, request: pb.ListPositionsRequest, context: Any) -> Any:
        venue, account = check_venue(request.venue), check_account(request.account)
        size = page_size(request.page_size)
        offset = offset_from_token(request.page_token, ("positions", venue, account))
        positions = sorted(models.parse_positions(await self._call(account, "private/get_positions")),
                           key=lambda p: p.instrument_name)
        page = positions[offset:offset + size]
        more = offset + size < len(positions)
        return pb.ListPositionsResponse(
            positions=[position_proto(venue, account, p) for p in page],
            next_page_token=page_token(offset + size, ("positions", venue, account)) if more else "")

    async def StreamPositions(self, request: pb.StreamPositionsRequest,
                              context: Any) -> AsyncIterator[pb.StreamPositionsResponse]:
        venue, account = check_venue(request.venue), check_account(request.account)
        try:
            feed = await self.positions.get(venue, account)
        except SyndrError as exc:
            raise to_portico_error(exc) from None
        consumer = StreamConsumer("positions")
        feed.add(consumer)
        try:
            async for batch in consumer.batches():
                yield pb.StreamPositionsResponse(updates=batch)
        finally:
            feed.remove(consumer)

    @map_venue_errors
    async def ListDeposits(self, request: pb.ListDepositsRequest, context: Any) -> Any:
        venue, account = check_venue(request.venue), check_account(request.account)
        size = page_size(request.page_size)
        offset = offset_from_token(request.page_token, ("deposits", venue, account))
        by_asset = models.parse_deposits(await self._call(account, "private/get_deposits"))
        deposits = sorted((d for records in by_asset.values() for d in records),
                          key=lambda d: (d.timestamp, d.tx_hash), reverse=True)
        page = deposits[offset:offset + size]
        more = offset + size < len(deposits)
        return pb.ListDepositsResponse(
            deposits=[deposit_proto(venue, account, d) for d in page],
            next_page_token=page_token(offset + size, ("deposits", venue, account)) if more else "")

    @map_venue_errors
    async def ListCollaterals(self, request: pb.ListCollateralsRequest, context: Any) -> Any:
        check_venue(request.venue)
        collaterals = models.parse_supported_collaterals(
            (await self.accounts.public.call("public/get_supported_collaterals")).result)
        return pb.ListCollateralsResponse(collaterals=[collateral_proto(c) for _, c in sorted(collaterals.items())])

    @map_venue_errors
    async def GetPortfolioMargin(self, request: pb.GetPortfolioMarginRequest, context: Any) -> Any:
        check_venue(request.venue)
        account = check_account(request.account)
        if not _CURRENCY.fullmatch(request.currency):
            raise InvalidArgument("currency", "required: a currency code such as ETH")
        data = models.parse_portfolio_margin_data(await self._call(
            account, "private/get_portfolio_margin_data", {"currency": request.currency, "from": account}))
        return pb.GetPortfolioMarginResponse(portfolio_margin=account_pb2.PortfolioMargin(
            currency=request.currency, future_loss_array=[format_decimal(v) for v in data.future_loss_array],
            options_loss_array=[format_decimal(v) for v in data.options_loss_array],
            total_loss_array=[format_decimal(v) for v in data.total_loss_array],
            futures_contingency=format_decimal(data.futures_contingency),
            options_contingency=format_decimal(data.options_contingency)))

    @map_venue_errors
    async def SetPortfolioMargin(self, request: pb.SetPortfolioMarginRequest, context: Any) -> Any:
        """The venue only toggles; toggle only when the mode differs, so the call is idempotent."""
        check_venue(request.venue)
        account = check_account(request.account)
        summary = models.parse_account_summary(await self._call(account, "private/get_account_summary"))
        enabled = bool(summary.is_portfolio_margined)
        if enabled != request.enabled:
            toggled = models.parse_portfolio_margin_toggle(await self._call(account,
                                                                            "private/toggle_portfolio_margin"))
            enabled = toggled.portfolio_margin
        return pb.SetPortfolioMarginResponse(
            margin_mode=account_pb2.MARGIN_MODE_PORTFOLIO if enabled else account_pb2.MARGIN_MODE_STANDARD)

    @map_venue_errors
    async def SetLeverage(self, request: pb.SetLeverageRequest, context: Any) -> Any:
        venue, account = check_venue(request.venue), check_account(request.account)
        if not request.symbol:
            raise InvalidArgument("symbol", "required")
        leverage = parse_decimal(request.leverage, "leverage", positive=True)
        if leverage != leverage.to_integral_value() or leverage < 1:
            raise InvalidArgument("leverage", "must be a whole number of at least 1")
        try:
            reply = await self.refdata.GetInstrument(
                refdata_pb.GetInstrumentRequest(venue=venue, symbol=request.symbol), metadata=self._metadata,
                timeout=5)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise InvalidArgument("symbol", f"{venue} has no instrument {request.symbol!r}",
                                      reason="INSTRUMENT_NOT_FOUND") from None
            raise Unavailable(f"reference data unavailable: {exc.code().name}", reason="REFDATA_UNAVAILABLE") from None
        instrument = reply.instrument
        if instrument.max_leverage and leverage > Decimal(instrument.max_leverage):
            raise InvalidArgument("leverage", f"{leverage} is above {request.symbol}'s maximum "
                                  f"{instrument.max_leverage}", reason="LEVERAGE_TOO_HIGH",
                                  metadata={"max_leverage": instrument.max_leverage})
        await self._call(account, "private/update_instrument_leverage",
                         {"instrument_id": instrument.venue_instrument_id, "updated_leverage": int(leverage)})
        return pb.SetLeverageResponse(symbol=request.symbol, leverage=format_decimal(leverage))

    @map_venue_errors
    async def ListApiKeys(self, request: pb.ListApiKeysRequest, context: Any) -> Any:
        venue, account = check_venue(request.venue), check_account(request.account)
        size = page_size(request.page_size)
        offset = offset_from_token(request.page_token, ("api-keys", venue, account))
        raw = await self._call(account, "private/get_api_keys")
        keys = models.parse_api_keys(raw)
        active = {str(item.get("api_key") or item.get("apiKey")): item.get("active", True) is not False
                  for item in (raw.get("apiKeys", []) if isinstance(raw, dict) else raw) if isinstance(item, dict)}
        page = keys[offset:offset + size]
        more = offset + size < len(keys)
        return pb.ListApiKeysResponse(
            api_keys=[api_key_proto(k, active=active.get(k.api_key, True)) for k in page],
            next_page_token=page_token(offset + size, ("api-keys", venue, account)) if more else "")

    @map_venue_errors
    async def CreateApiKey(self, request: pb.CreateApiKeyRequest, context: Any) -> Any:
        """The secret goes straight into Vault; the answer says where, never what."""
        venue, account = check_venue(request.venue), check_account(request.account)
        if request.scope not in VENUE_SCOPES:
            raise InvalidArgument("scope", "must be API_KEY_SCOPE_ADMIN, _READ_WRITE or _READ_ONLY")
        if not _NAME.fullmatch(request.name):
            raise InvalidArgument("name", "at most 64 letters, digits, spaces and . : _ -")
        created = models.parse_created_api_key(await self._call(
            account, "private/create_api_key", {"scope": VENUE_SCOPES[request.scope], "name": request.name}))
        path = f"portico/venues/{venue}/api-keys/{account.lower()}/{created.api_key}"
        try:
            await self.vault.write_kv(path, {"api_key": created.api_key, "api_secret": created.api_secret,
                                             "name": request.name, "scope": int(VENUE_SCOPES[request.scope])})
        except VaultError as exc:
            # The venue shows a secret once: without Vault it is lost, so the key must not stay active.
            log.error("storing a new API key failed; deactivating it", extra={"account": account,
                                                                              "error": type(exc).__name__})
            await self._call(account, "private/deactivate_api_key", {"api_key": created.api_key})
            raise Unavailable("Vault did not take the new API key's secret; the key was deactivated",
                              reason="VAULT_UNAVAILABLE") from None
        key = models.ApiKey(api_key=created.api_key, scope=VENUE_SCOPES[request.scope], name=request.name)
        return pb.CreateApiKeyResponse(api_key=api_key_proto(key, vault_path=f"{self._mount()}/{path}"))

    @map_venue_errors
    async def DeactivateApiKey(self, request: pb.DeactivateApiKeyRequest, context: Any) -> Any:
        venue, account = check_venue(request.venue), check_account(request.account)
        if not request.api_key:
            raise InvalidArgument("api_key", "required")
        record = await self.accounts.store.get(venue, account)
        if record.credentials.api_key == request.api_key:
            raise FailedPrecondition("this is the key Portico trades with; register a new signing key first",
                                     reason="API_KEY_IN_USE")
        await self._call(account, "private/deactivate_api_key", {"api_key": request.api_key})
        keys = models.parse_api_keys(await self._call(account, "private/get_api_keys"))
        key = next((k for k in keys if k.api_key == request.api_key),
                   models.ApiKey(api_key=request.api_key, scope=-1))
        return pb.DeactivateApiKeyResponse(api_key=api_key_proto(key, active=False))

    @map_venue_errors
    async def RegisterSigningKey(self, request: pb.RegisterSigningKeyRequest, context: Any) -> Any:
        venue, account = check_venue(request.venue), check_account(request.account)
        validity_s: float | None = None
        if request.HasField("validity"):
            validity_s = request.validity.ToTimedelta().total_seconds()
            if not 60 <= validity_s <= MAX_SIGNING_KEY_VALIDITY_S:
                raise InvalidArgument("validity", "must be between one minute and ten years (unset: never expires)")
        registration = await self.registrar.register(venue, account, validity_s)
        record = registration.record
        response = pb.RegisterSigningKeyResponse(
            signing_key_id=record.signing_key_id, signing_key_address=record.signing_key_address,
            api_key=api_key_proto(models.ApiKey(api_key=record.credentials.api_key, scope=0,
                                                 name="registered signing key"),
                                  vault_path=f"{self._mount()}/portico/venues/{venue}/accounts/{account.lower()}"))
        if registration.expires_at != typed_data.SIGNING_KEY_NEVER_EXPIRES:
            response.expire_time.FromSeconds(registration.expires_at)
        return response

    def _mount(self) -> str:
        return self.vault.settings.kv_mount.strip("/")


class AccountApp(GrpcServiceApp):
    """The account process: Vault, venue clients, signer and refdata channels, position feeds, gRPC server."""

    def __init__(self, settings: AccountSettings, env: Mapping[str, str]):
        self.settings = settings
        self.vault = VaultSession(settings.vault)
        self.accounts = SyndrAccounts(settings.syndr_http_url,
                                      VenueAccountStore(self.vault, cache_ttl_s=settings.credentials_cache_s),
                                      timeout_s=settings.venue_timeout_s, rate_share=settings.venue_rate_share)
        self.signer_channel = open_channel(settings.signer_addr)
        self.refdata_channel = open_channel(settings.refdata_addr)
        signer = SignerClient(self.signer_channel, settings.service_token)
        self.registrar = SigningKeyRegistrar(self.vault, KeyPaths(settings.signer_key_prefix), signer, self.accounts)
        self.positions = PositionFeeds(settings.syndr_ws_url, self.accounts)
        self.server = GrpcServer(settings.server, domain=ERROR_DOMAIN,
                                 authenticator=TokenAuthenticator.from_env(env), method_scopes=METHOD_SCOPES)
        pb_grpc.add_AccountServiceServicer_to_server(
            AccountServicer(self.accounts, self.vault, self.registrar, self.positions,
                            refdata_grpc.ReferenceDataServiceStub(self.refdata_channel), settings.service_token),
            self.server.grpc)

    async def start(self) -> None:
        await self.vault.start()
        await self.server.start([SERVICE_NAME])

    async def aclose(self, grace_s: float | None = None) -> None:
        await self.server.stop(grace_s)
        await self.positions.aclose()
        await self.accounts.aclose()
        await self.signer_channel.close()
        await self.refdata_channel.close()
        await self.vault.aclose()

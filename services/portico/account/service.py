"""`portico.account.v1.AccountService`, and the app that wires it to the venue, Vault, the signer and refdata."""

from __future__ import annotations

import asyncio
import logging
import re
import time
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
from portico.account.leases import AccountLeases, Lease
from portico.account.positions import PositionFeeds
from portico.account.registration import Completions, SigningKeyRegistrar
from portico.account.settings import DEACTIVATE_ATTEMPTS, DEACTIVATE_PAUSE_S, AccountSettings
from portico.account.v1 import account_pb2
from portico.account.v1 import account_service_pb2 as pb
from portico.account.v1 import account_service_pb2_grpc as pb_grpc
from portico.refdata.v1 import reference_data_service_pb2 as refdata_pb
from portico.refdata.v1 import reference_data_service_pb2_grpc as refdata_grpc
from portico.runtime.auth import TokenAuthenticator
from portico.runtime.client import bearer, open_channel
from portico.runtime.decimals import format_decimal, parse_decimal
from portico.runtime.errors import FailedPrecondition, Internal, InvalidArgument, PorticoError, Unavailable
from portico.runtime.fanout import StreamConsumer
from portico.runtime.lifecycle import GrpcServiceApp
from portico.runtime.paging import cursor_from_token, offset_from_token, page_size, page_token, position_from_token
from portico.runtime.server import GrpcServer
from portico.runtime.signing_keys import KeyPaths
from portico.runtime.vault import VaultError, VaultNotFound, VaultSession, vault_unavailable
from portico.signer.client import SignerClient
from portico.venues.accounts import SyndrAccounts, VenueAccount, VenueAccountStore, check_account, check_venue
from portico.venues.syndr import models, typed_data
from portico.venues.syndr.constants import ErrorCode
from portico.venues.syndr.errors import (
    SyndrAuthError,
    SyndrError,
    SyndrRateLimited,
    SyndrTransportError,
    SyndrVenueFailure,
    map_venue_errors,
    outcome_unknown,
    to_portico_error,
)

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
_API_KEY = re.compile(r"[A-Za-z0-9_=+/.:-]{1,256}")  # it names a Vault path below the account's API keys
MAX_SIGNING_KEY_VALIDITY_S: Final = 10 * 365 * 86_400


def api_key_path(venue: str, account: str, api_key: str) -> str:
    """Where CreateApiKey keeps a key's secret (below the KV mount)."""
    return f"portico/venues/{venue}/api-keys/{account.lower()}/{api_key}"


def _holdable(api_key: str) -> bool:
    """An API key that names a Vault path below the account's keys (no way out of them), as DeactivateApiKey
    takes it: CreateApiKey keeps only such keys (deactivating any other the venue issues)."""
    return bool(_API_KEY.fullmatch(api_key)) and all(part not in ("", ".", "..") for part in api_key.split("/"))


def _now_s() -> dict[str, Any]:
    """`private/get_account_summary`'s required `timestamp` ("Current time in seconds", the document's table)."""
    return {"timestamp": int(time.time())}


class AccountServicer(pb_grpc.AccountServiceServicer):
    """The RPCs: thin over the venue, except RegisterSigningKey (see `registration`)."""

    def __init__(self, accounts: SyndrAccounts, vault: VaultSession, registrar: SigningKeyRegistrar,
                 positions: PositionFeeds, refdata: refdata_grpc.ReferenceDataServiceStub, service_token: str,
                 completions: Completions, leases: AccountLeases, *, venue_timeout_s: float):
        self.accounts = accounts
        self.vault = vault
        self.registrar = registrar
        self.positions = positions
        self.refdata = refdata
        self.completions = completions
        self.leases = leases
        self.venue_timeout_s = venue_timeout_s
        self._metadata = bearer(service_token)
        self._margin_locks: dict[str, asyncio.Lock] = {}  # by account: one read-compare-toggle at a time

    async def _call(self, account: str, method: str, params: dict[str, Any] | None = None) -> Any:
        return (await self.accounts.call(account, method, params)).result

    @map_venue_errors
    async def GetAccountSummary(self, request: pb.GetAccountSummaryRequest, context: Any) -> Any:
        venue, account = check_venue(request.venue), check_account(request.account)
        summary = models.parse_account_summary(await self._call(account, "private/get_account_summary", _now_s()))
        return pb.GetAccountSummaryResponse(summary=summary_proto(venue, account, summary))

    @map_venue_errors
    async def ListPositions(self, request: pb.ListPositionsRequest, context: Any) -> Any:
        """By symbol; a later page starts after the last symbol listed, so positions closed or opened meanwhile
        shift nothing (each one open from the first page to the last is listed once)."""
        venue, account = check_venue(request.venue), check_account(request.account)
        size = page_size(request.page_size)
        query = ("positions", venue, account)
        after, offset = cursor_from_token(request.page_token, query)
        positions = sorted(models.parse_positions(await self._call(account, "private/get_positions")),
                           key=lambda p: p.instrument_name)
        rest = positions[offset:] if after is None else [p for p in positions if p.instrument_name > after]
        page = rest[:size]
        more = len(rest) > size
        return pb.ListPositionsResponse(
            positions=[position_proto(venue, account, p) for p in page],
            next_page_token=page_token(len(positions) - len(rest) + len(page), query, after=page[-1].instrument_name)
            if more else "")

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
        """Newest first, within the window the first page fixed (`as_of`, ms: then, or the newest deposit's
        time if the venue's clock is ahead).

        The venue answers every deposit at once and new ones arrive at the top, possibly within the
        second of the window's end (its timestamps are in seconds): so a later page's token counts the
        entries still to come from the OLDEST end, which new deposits do not shift. Equal timestamps keep
        one order: by asset, then the venue's own order of the asset's records (oldest first).
        """
        venue, account = check_venue(request.venue), check_account(request.account)
        size = page_size(request.page_size)
        query = ("deposits", venue, account)
        position, as_of = position_from_token(request.page_token, query)
        by_asset = models.parse_deposits(await self._call(account, "private/get_deposits"))
        ranked = sorted(((d.timestamp, asset, i, d) for asset, records in by_asset.items()
                         for i, d in enumerate(records)), key=lambda entry: entry[:3], reverse=True)
        if as_of is None:  # the first page (or a token from before windows: an offset from the newest)
            as_of = max(time.time_ns() // 1_000_000, ranked[0][0] if ranked else 0)
            start = position
            deposits = [entry[3] for entry in ranked]
        else:
            deposits = [entry[3] for entry in ranked if entry[0] <= as_of]
            start = max(len(deposits) - position, 0)
        page = deposits[start:start + size]
        left = len(deposits) - (start + len(page))
        return pb.ListDepositsResponse(
            deposits=[deposit_proto(venue, account, d) for d in page],
            next_page_token=page_token(left, query, as_of=as_of) if left > 0 else "")

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
        """The venue only toggles; toggle only when the mode differs, so the call is idempotent.

        Read-compare-toggle holds the account's lock and its lease (so it is one at a time across processes
        too), and once they are taken it runs to its end even if the caller goes (a retry after a deadline, on
        this process or another, then reads the mode the first call left, never toggles it back)."""
        venue, account = check_venue(request.venue), check_account(request.account)
        what = f"SetPortfolioMargin for {account}"
        # NOT_FOUND for an account Portico does not hold before a lock or a lease (in Vault) is kept for it.
        await self.accounts.session(account)
        lock = self._margin_locks.setdefault(account.lower(), asyncio.Lock())
        await lock.acquire()
        try:  # and across processes: the account's lease in Vault
            lease = await self.leases.acquire(venue, account, "portfolio-margin", what)
        except BaseException:
            lock.release()
            raise
        enabled = await self.completions.run(self._set_portfolio_margin(account, request.enabled, lease), what,
                                             release=lock)
        return pb.SetPortfolioMarginResponse(
            margin_mode=account_pb2.MARGIN_MODE_PORTFOLIO if enabled else account_pb2.MARGIN_MODE_STANDARD)

    async def _set_portfolio_margin(self, account: str, wanted: bool, lease: Lease) -> bool:
        try:
            return await self._read_and_toggle(account, wanted, lease)
        finally:
            await lease.release()

    async def _read_and_toggle(self, account: str, wanted: bool, lease: Lease) -> bool:
        summary = models.parse_account_summary(await self._call(account, "private/get_account_summary", _now_s()))
        if summary.is_portfolio_margined is None:  # toggling blind could switch it off when asked to switch it on
            raise Unavailable("the venue's account summary does not say whether portfolio margin is on; nothing "
                              "was toggled: retry", reason="MARGIN_MODE_UNKNOWN")
        if summary.is_portfolio_margined == wanted:
            return wanted
        lease.check(self.venue_timeout_s, "private/toggle_portfolio_margin")  # the toggle lands within the lease
        toggled = models.parse_portfolio_margin_toggle(await self._call(account, "private/toggle_portfolio_margin"))
        if toggled.portfolio_margin != wanted:  # something else toggled it meanwhile (another process?)
            log.error("portfolio margin toggled, but not to the mode asked for", extra={
                "account": account, "wanted": wanted, "venue_mode": toggled.portfolio_margin})
            raise FailedPrecondition(
                f"after toggling, the venue reports portfolio margin {'on' if toggled.portfolio_margin else 'off'}, "
                f"not {'on' if wanted else 'off'} (was it changed elsewhere at the same time?): read the mode and "
                "retry", reason="MARGIN_MODE_NOT_SET")
        return wanted

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
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:  # the venue is known here: it is the symbol
                raise InvalidArgument("symbol", f"not a symbol reference data takes ({exc.details()})") from None
            raise Unavailable(f"reference data unavailable: {exc.code().name}", reason="REFDATA_UNAVAILABLE") from None
        instrument = reply.instrument
        if instrument.max_leverage and leverage > Decimal(instrument.max_leverage):
            raise InvalidArgument("leverage", f"{leverage} is above {request.symbol}'s maximum "
                                  f"{instrument.max_leverage}", reason="LEVERAGE_TOO_HIGH",
                                  metadata={"max_leverage": instrument.max_leverage})
        # The document's table types `instrument_id` as a string (its example sends "1").
        update = models.parse_leverage_update(await self._call(
            account, "private/update_instrument_leverage",
            {"instrument_id": str(instrument.venue_instrument_id), "updated_leverage": int(leverage)}))
        if not update.success:  # the document: 1 for success, 0 for failure
            raise FailedPrecondition(f"the venue did not apply leverage {leverage} to {request.symbol} "
                                     "(it answered success 0)", reason="VENUE_REFUSED", metadata={"venue": venue})
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
        """The secret goes straight into Vault; the answer says where, never what.

        From the venue's call on, create -> store (or deactivate) runs to its end whatever happens to the
        caller: an active key whose secret nobody holds must not be left behind."""
        venue, account = check_venue(request.venue), check_account(request.account)
        if request.scope not in VENUE_SCOPES:
            raise InvalidArgument("scope", "must be API_KEY_SCOPE_ADMIN, _READ_WRITE or _READ_ONLY")
        if not _NAME.fullmatch(request.name):
            raise InvalidArgument("name", "at most 64 letters, digits, spaces and . : _ -")
        key, path = await self.completions.run(
            self._create_api_key(venue, account, VENUE_SCOPES[request.scope], request.name),
            f"CreateApiKey for {account}")
        return pb.CreateApiKeyResponse(api_key=api_key_proto(key, vault_path=f"{self._mount()}/{path}"))

    async def _create_api_key(self, venue: str, account: str, scope: int, name: str) -> tuple[models.ApiKey, str]:
        # The credentials the key is made with: a rollback uses them as they are, without Vault (whose failure
        # is the usual reason for one, and which the account's client reads them from once its cache expires).
        record = (await self.accounts.session(account)).record
        try:
            created = models.parse_created_api_key(await self._call(
                account, "private/create_api_key", {"scope": scope, "name": name}))
        except SyndrError as exc:
            if outcome_unknown(exc):
                log.error("private/create_api_key outcome unknown: the venue may have created an API key whose "
                          "secret nobody holds; check ListApiKeys and have any unknown key deactivated at the venue",
                          extra={"account": account, "error": type(exc).__name__})
            raise
        path = api_key_path(venue, account, created.api_key)
        failure: PorticoError
        try:
            if not _holdable(created.api_key):  # no Vault path, or one DeactivateApiKey would never take back
                raise ValueError("the venue's name of the new API key is not one Portico can keep")
            await self.vault.write_kv(path, {"api_key": created.api_key, "api_secret": created.api_secret,
                                             "name": name, "scope": int(scope)})
        except (VaultError, ValueError) as exc:
            # The venue shows a secret once: without Vault it is lost, so the key must not stay active.
            log.error("storing a new API key failed; deactivating it", extra={
                "account": account, "api_key": created.api_key, "error": type(exc).__name__})
            failure = (Unavailable("Vault did not take the new API key's secret; the key was deactivated",
                                   reason="VAULT_UNAVAILABLE") if isinstance(exc, VaultError) else
                       Internal(f"the venue named the new API key {created.api_key[:256]!r}, which cannot be kept "
                                "under a Vault path (nor deactivated by DeactivateApiKey); the key was deactivated",
                                reason="VENUE_PROTOCOL_ERROR", metadata={"api_key": created.api_key[:256]}))
            try:
                await self._deactivate(record, created.api_key, created.api_secret)
            except SyndrError as failed:
                log.error("API key created, its secret NOT stored, and it is STILL ACTIVE at the venue: deactivate "
                          "it at the venue", extra={"account": account, "api_key": created.api_key,
                                                    "error": type(failed).__name__})
                raise Internal(f"API key {created.api_key} was created but its secret could not be stored, and "
                               "deactivating it failed: key created, secret not stored, still active: deactivate it",
                               reason="API_KEY_LEFT_ACTIVE", metadata={"api_key": created.api_key}) from None
            raise failure from None
        return models.ApiKey(api_key=created.api_key, scope=scope, name=name), path

    async def _deactivate(self, record: VenueAccount, api_key: str, api_secret: str) -> None:
        """`private/deactivate_api_key` (which wants the key's secret too) with the account's credentials in
        `record` (not read again from Vault), repeated while the venue cannot answer: deactivating is idempotent."""
        http = self.accounts.independent_client(record)
        try:
            for attempt in range(1, DEACTIVATE_ATTEMPTS + 1):
                try:
                    await http.call("private/deactivate_api_key", {"api_key": api_key, "api_secret": api_secret})
                    return
                except (SyndrTransportError, SyndrVenueFailure, SyndrRateLimited) as exc:
                    if attempt == DEACTIVATE_ATTEMPTS:
                        raise
                    log.warning("deactivating an API key failed; retrying", extra={
                        "account": record.account, "api_key": api_key, "attempt": attempt,
                        "error": type(exc).__name__})
                    await asyncio.sleep(DEACTIVATE_PAUSE_S * attempt)
        finally:
            await http.aclose()

    @map_venue_errors
    async def DeactivateApiKey(self, request: pb.DeactivateApiKeyRequest, context: Any) -> Any:
        """The venue wants the key's secret too: Portico holds it for the keys CreateApiKey made (in Vault)."""
        venue, account = check_venue(request.venue), check_account(request.account)
        if not request.api_key:
            raise InvalidArgument("api_key", "required")
        if not _holdable(request.api_key):
            raise InvalidArgument("api_key", "not an API key")
        record = await self.accounts.store.get(venue, account)
        if record.credentials.api_key == request.api_key:
            raise FailedPrecondition("this is the key Portico trades with; register a new signing key first",
                                     reason="API_KEY_IN_USE")
        try:
            stored = await self.vault.read_kv(api_key_path(venue, account, request.api_key))
        except VaultNotFound:
            stored = {}
        except VaultError as exc:
            raise vault_unavailable(exc, "read the API key's secret") from None
        secret = stored.get("api_secret")
        if not isinstance(secret, str) or not secret:
            raise FailedPrecondition(
                f"Portico does not hold the secret of API key {request.api_key} (only keys made by CreateApiKey "
                "are kept in Vault), and the venue wants it to deactivate the key: deactivate it at the venue",
                reason="API_KEY_SECRET_NOT_HELD")
        await self._deactivate_held(account, request.api_key, secret)
        keys = models.parse_api_keys(await self._call(account, "private/get_api_keys"))
        key = next((k for k in keys if k.api_key == request.api_key),
                   models.ApiKey(api_key=request.api_key, scope=-1))
        return pb.DeactivateApiKeyResponse(api_key=api_key_proto(key, active=False))

    async def _deactivate_held(self, account: str, api_key: str, secret: str) -> None:
        """`private/deactivate_api_key` with the secret Vault holds for the key.

        The venue answers UNAUTHORIZED both when the account's own credentials are refused and when `api_secret`
        is not the key's (a wrong secret in Vault): sent past `SyndrAccounts.call`, whose refusal handling
        would drop the account's record for the latter, and told apart by one read with the account's
        credentials (which does go through it, so a record the venue really refuses is dropped)."""
        session = await self.accounts.session(account)
        try:
            await session.http.call("private/deactivate_api_key", {"api_key": api_key, "api_secret": secret})
        except SyndrAuthError as exc:
            await self._call(account, "private/get_api_keys")  # raises when the account's own key is refused
            if exc.code != ErrorCode.UNAUTHORIZED:
                raise
            # Not the venue's message: the call carried the secret, which no error may repeat.
            raise FailedPrecondition(
                f"the venue refused the secret Portico holds for API key {api_key} (code {exc.code}), while the "
                "account's own credentials are accepted: the key stays active; deactivate it at the venue",
                reason="API_KEY_SECRET_REFUSED", metadata={"api_key": api_key, "venue_code": str(exc.code)}) from None

    @map_venue_errors
    async def RegisterSigningKey(self, request: pb.RegisterSigningKeyRequest, context: Any) -> Any:
        venue, account = check_venue(request.venue), check_account(request.account)
        validity_s: float | None = None
        if request.HasField("validity"):
            # Plain arithmetic, not ToTimedelta(): a Duration's seconds reach 2**63, beyond what timedelta takes.
            seconds, nanos = request.validity.seconds, request.validity.nanos
            validity_s = seconds + nanos / 1e9
            if not (0 <= nanos <= 999_999_999 and 60 <= validity_s <= MAX_SIGNING_KEY_VALIDITY_S):
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
        self.signer_channel = open_channel(settings.signer_addr, tls=settings.upstream_tls)
        self.refdata_channel = open_channel(settings.refdata_addr, tls=settings.upstream_tls)
        signer = SignerClient(self.signer_channel, settings.service_token)
        # Venue changes and what must follow them (Vault, rollbacks) run to their end: see `Completions`.
        self.completions = Completions()
        # Changes that read the venue and act on it are one at a time per account across processes.
        self.leases = AccountLeases(self.vault)
        self.registrar = SigningKeyRegistrar(self.vault, KeyPaths(settings.signer_key_prefix), signer, self.accounts,
                                             self.completions, self.leases, venue_timeout_s=settings.venue_timeout_s)
        self.positions = PositionFeeds(settings.syndr_ws_url, self.accounts)
        self.server = GrpcServer(settings.server, domain=ERROR_DOMAIN,
                                 authenticator=TokenAuthenticator.from_env(env), method_scopes=METHOD_SCOPES)
        pb_grpc.add_AccountServiceServicer_to_server(
            AccountServicer(self.accounts, self.vault, self.registrar, self.positions,
                            refdata_grpc.ReferenceDataServiceStub(self.refdata_channel), settings.service_token,
                            self.completions, self.leases, venue_timeout_s=settings.venue_timeout_s),
            self.server.grpc)

    async def start(self) -> None:
        await self.vault.start()
        await self.server.start([SERVICE_NAME])

    async def aclose(self, grace_s: float | None = None) -> None:
        await self.server.stop(grace_s)
        # Work whose caller went away (or whose handler the grace cancelled) still needs the venue and Vault,
        # so it is waited for before they close: as long as the slowest such change can take with the venue
        # and Vault slow to their timeouts (`completion_wait_s`), then it is cancelled (and that logged as an error).
        await self.completions.aclose(timeout_s=self.settings.completion_wait_s)
        await self.positions.aclose()
        await self.accounts.aclose()
        await self.signer_channel.close()
        await self.refdata_channel.close()
        await self.vault.aclose()

"""Syndr's account objects as the contract's messages (decimal strings, timestamps, enums)."""

from __future__ import annotations

from decimal import Decimal

from portico.account.v1 import account_pb2
from portico.common.v1 import side_pb2
from portico.runtime.decimals import format_decimal
from portico.venues.syndr import models

__all__ = ["api_key_proto", "collateral_proto", "deposit_proto", "position_proto", "summary_proto"]

_SCOPES = {0: account_pb2.API_KEY_SCOPE_ADMIN, 1: account_pb2.API_KEY_SCOPE_READ_WRITE,
           2: account_pb2.API_KEY_SCOPE_READ_ONLY}
VENUE_SCOPES = {proto: venue for venue, proto in _SCOPES.items()}
# The venue's `is_portfolio_margined`; not reported is not known (not standard).
_MARGIN_MODES = {True: account_pb2.MARGIN_MODE_PORTFOLIO, False: account_pb2.MARGIN_MODE_STANDARD,
                 None: account_pb2.MARGIN_MODE_UNSPECIFIED}
_STATES = {"active": account_pb2.ACCOUNT_STATE_ACTIVE, "restricted": account_pb2.ACCOUNT_STATE_RESTRICTED,
           "inactive": account_pb2.ACCOUNT_STATE_INACTIVE}


def _d(value: Decimal | None) -> str:
    return format_decimal(value) if value is not None else ""


def summary_proto(venue: str, account: str, s: models.AccountSummary) -> account_pb2.AccountSummary:
    message = account_pb2.AccountSummary(
        venue=venue, account=account, equity=_d(s.equity), available_balance=_d(s.available_balance),
        available_withdrawable_funds=_d(s.available_withdrawable_funds), initial_margin=_d(s.initial_margin),
        maintenance_margin=_d(s.maintenance_margin), initial_margin_utilization=_d(s.initial_margin_utilization),
        maintenance_margin_utilization=_d(s.maintenance_margin_utilization),
        open_orders_initial_margin=_d(s.open_orders_im), realized_pnl=_d(s.realized_pnl),
        unrealized_pnl=_d(s.unrealized_pnl), total_pnl=_d(s.total_pnl),
        collateral={k: _d(v) for k, v in s.collateral.items()},
        delta_total={k: _d(v) for k, v in s.delta_total.items()},
        margin_mode=_MARGIN_MODES[s.is_portfolio_margined],
        cancel_on_disconnect=bool(s.is_cancel_on_disconnect),
        state=_STATES.get((s.status or "").lower(), account_pb2.ACCOUNT_STATE_UNSPECIFIED),
        venue_status=s.status or "")
    if s.updated_at:
        message.update_time.FromMilliseconds(s.updated_at)
    return message


def position_proto(venue: str, account: str, p: models.Position) -> account_pb2.Position:
    """The contract's size is absolute, its side in `direction`: a venue may sign a short's size (the simulator
    does), and `SELL -x` reads as long to whoever applies the side."""
    short = p.direction == "sell" or p.size < 0
    message = account_pb2.Position(
        venue=venue, account=account, symbol=p.instrument_name,
        direction=side_pb2.SIDE_SELL if short else side_pb2.SIDE_BUY,
        size=_d(p.size.copy_abs()), average_price=_d(p.average_price), mark_price=_d(p.mark_price),
        index_price=_d(p.index_price), realized_pnl=_d(p.realized_pnl), unrealized_pnl=_d(p.unrealized_pnl),
        total_pnl=_d(p.total_pnl), realized_funding=_d(p.realized_funding), trade_fee=_d(p.trade_fee),
        position_delta=_d(p.position_delta), settlement_price=_d(p.settlement_price))
    if p.last_update_timestamp:
        message.update_time.FromMilliseconds(p.last_update_timestamp)
    return message


def deposit_proto(venue: str, account: str, d: models.Deposit) -> account_pb2.Deposit:
    message = account_pb2.Deposit(venue=venue, account=account, asset=d.asset_name, asset_address=d.asset_address or "",
                                  amount=_d(d.amount), pending=bool(d.is_pending), tx_hash=d.tx_hash)
    message.deposit_time.FromMilliseconds(d.timestamp)
    return message


def collateral_proto(c: models.Collateral) -> account_pb2.Collateral:
    return account_pb2.Collateral(symbol=c.symbol, name=c.name or "", decimals=c.decimals,
                                  collateral_weight=_d(c.collateral_weight), im_weight=_d(c.im_weight),
                                  mm_weight=_d(c.mm_weight), price_index=c.price_index or "", paused=bool(c.paused),
                                  l2_address=c.l2_address or "", l3_address=c.l3_address or "")


def api_key_proto(key: models.ApiKey, *, vault_path: str = "", active: bool = True) -> account_pb2.ApiKey:
    """The key without its secret, whatever the venue sent along."""
    message = account_pb2.ApiKey(api_key=key.api_key, name=key.name or "",
                                 scope=_SCOPES.get(key.scope, account_pb2.API_KEY_SCOPE_UNSPECIFIED), active=active,
                                 vault_path=vault_path)
    if key.created_at:
        message.create_time.FromMilliseconds(key.created_at)
    if key.updated_at:
        message.update_time.FromMilliseconds(key.updated_at)
    return message

"""The simulator's admin interface: edit instruments, set fault knobs, read the request log.

Plain JSON over HTTP under `/admin/` (not JSON-RPC: it is not part of the
venue). Protected by a bearer token when the simulator has one.

    GET    /admin/instruments                 the catalogue (venue wire shape)
    POST   /admin/instruments                 add: {"name": "ETH-26JUN26", ...optional fields}
    PATCH  /admin/instruments/{name}          change: {"tick_size": "0.5", "contract_size": "0.01", ...}
    DELETE /admin/instruments/{name}          delist (inactive; open orders cancelled)
    GET    /admin/faults  POST /admin/faults  read / set knobs: {"fail_rate": 0.1, "silent": true, ...}
    DELETE /admin/faults                      reset every knob
    POST   /admin/websockets/close            drop every WebSocket connection
    POST   /admin/accounts                    {"address": "0x...", "collateral": {"USDT": "1000"}}
    GET    /admin/requests  DELETE /admin/requests   the request log (secrets redacted)
    POST   /admin/market-maker                {"book_changes_per_second": 5000}
    POST   /admin/bursts                      {"account": "0x...", "instrument_name": "ETH-PERP"}: an on-chain
                                              failure notice on user.bursts.*
"""

from __future__ import annotations

import hmac
from dataclasses import asdict
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from aiohttp import web

from portico.sim.engine import EngineError
from portico.sim.errors import RpcFailure
from portico.sim.security import parse_address

if TYPE_CHECKING:
    from portico.sim.server import Simulator

__all__ = ["add_routes"]


def _bad(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


def add_routes(app: web.Application, sim: Simulator) -> None:
    """Attach the admin routes for `sim` to `app`."""

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/admin/") and sim.config.admin_token:
            supplied = request.headers.get("Authorization", "")
            if not hmac.compare_digest(supplied.encode(), f"Bearer {sim.config.admin_token}".encode()):
                return _bad("admin token required", 401)
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except (ValueError, EngineError, RpcFailure) as exc:
            if not request.path.startswith("/admin/"):
                raise
            return _bad(str(getattr(exc, "message", exc)))

    app.middlewares.append(guard)

    async def body(request: web.Request) -> dict[str, Any]:
        try:
            data = await request.json(loads=sim.decode)
        except ValueError:
            raise ValueError("body must be a JSON object") from None
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        return data

    async def list_instruments(request: web.Request) -> web.Response:
        return web.json_response([i.to_wire() for i in sim.engine.instruments()])

    async def add_instrument(request: web.Request) -> web.Response:
        data = await body(request)
        instrument = sim.add_instrument(str(data.pop("name", "")), **data)
        return web.json_response(instrument.to_wire(), status=201)

    async def change_instrument(request: web.Request) -> web.Response:
        data = await body(request)
        instrument = sim.update_instrument(request.match_info["name"], **data)
        return web.json_response(instrument.to_wire())

    async def delist_instrument(request: web.Request) -> web.Response:
        instrument = sim.delist(request.match_info["name"])
        return web.json_response(instrument.to_wire())

    async def get_faults(request: web.Request) -> web.Response:
        return web.json_response(sim.faults.to_dict())

    async def set_faults(request: web.Request) -> web.Response:
        sim.faults.update(await body(request))
        return web.json_response(sim.faults.to_dict())

    async def reset_faults(request: web.Request) -> web.Response:
        sim.faults.reset()
        return web.json_response(sim.faults.to_dict())

    async def close_websockets(request: web.Request) -> web.Response:
        return web.json_response({"closed": await sim.close_websockets()})

    async def open_account(request: web.Request) -> web.Response:
        data = await body(request)
        address = parse_address(data.get("address"), "address")
        collateral = data.get("collateral") or {"USDT": str(sim.config.default_collateral)}
        if not isinstance(collateral, dict):
            raise ValueError("collateral must map currencies to amounts")
        try:
            amounts = {str(k): Decimal(str(v)) for k, v in collateral.items()}
        except InvalidOperation:
            raise ValueError("collateral amounts must be decimals") from None
        sim.open_account(address, amounts)
        return web.json_response({"address": address}, status=201)

    async def requests_log(request: web.Request) -> web.Response:
        return web.json_response([asdict(r) for r in sim.requests], dumps=_dumps)

    async def clear_requests(request: web.Request) -> web.Response:
        sim.requests.clear()
        return web.json_response({"cleared": True})

    async def market_maker(request: web.Request) -> web.Response:
        data = await body(request)
        rate = data.get("book_changes_per_second")
        if isinstance(rate, bool) or not isinstance(rate, int | float | Decimal) or rate < 0:
            raise ValueError("book_changes_per_second must be a non-negative number")
        sim.market_maker.changes_per_second = float(rate)
        return web.json_response({"book_changes_per_second": float(rate)})

    async def burst(request: web.Request) -> web.Response:
        data = await body(request)
        account = parse_address(data.get("account"), "account")
        name = str(data.get("instrument_name", ""))
        sim.engine.instrument(name)
        sim.notifier.burst(account, name)
        return web.json_response({"sent": True})

    app.router.add_get("/admin/instruments", list_instruments)
    app.router.add_post("/admin/instruments", add_instrument)
    app.router.add_patch("/admin/instruments/{name}", change_instrument)
    app.router.add_delete("/admin/instruments/{name}", delist_instrument)
    app.router.add_get("/admin/faults", get_faults)
    app.router.add_post("/admin/faults", set_faults)
    app.router.add_delete("/admin/faults", reset_faults)
    app.router.add_post("/admin/websockets/close", close_websockets)
    app.router.add_post("/admin/accounts", open_account)
    app.router.add_get("/admin/requests", requests_log)
    app.router.add_delete("/admin/requests", clear_requests)
    app.router.add_post("/admin/market-maker", market_maker)
    app.router.add_post("/admin/bursts", burst)


def _dumps(obj: Any) -> str:
    from portico.sim.server import dumps

    return dumps(obj)

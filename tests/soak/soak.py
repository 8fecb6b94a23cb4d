"""Soak run: the whole suite under load and faults for a bounded time, then checked end to end.

    python -m tests.soak.soak --minutes 5 --out bench-results/soak.json      # or `make soak MINUTES=5`

Brings the suite up exactly as `portico up` does (`tests.support.suite.RestartableSuite`, in this process so
that one service can be killed and restarted), then for `--minutes`:

- the simulator's market maker makes 2,000 book changes/s on its instruments;
- 50 consumers (two worker processes, `tests.soak.consumers`) stream ETH-PERP at depth 10 through market data,
  applying every update and checking every chain and checksum, reconnecting when their stream ends;
- an order every 50 ms through execution, each with its own client id: resting orders 20 % away from the
  market (alternately buys and sells), most of them cancelled by client id 2 s later and the rest left open,
  and every tenth a market order that fills; UNAVAILABLE (and deadline) retried with the same client id;
- the simulator drops every WebSocket connection every 20 s;
- market data and execution are each SIGKILLed once and restarted (by default at 25 % and 45 % of the run).

Then: orders stop, `CancelAllOrders`, the market maker pauses, and the run checks that every consumer's book
equals the venue's, that the venue holds at most one order per client id (by label), that every journaled
order is in a final state that matches the venue's, and that each service's memory (RSS from /proc) is flat
after warm-up. Figures go to `--out` as JSON; the exit code is 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import grpc
import httpx

from portico.common.v1 import side_pb2
from portico.execution.v1 import execution_service_pb2 as pb
from portico.execution.v1 import execution_service_pb2_grpc as pb_grpc
from portico.execution.v1 import order_pb2
from portico.execution.venue import SyndrVenue, open_orders, order_history_page
from portico.runtime.client import bearer, open_channel
from portico.runtime.vault import VaultSession, VaultSettings
from portico.venues.accounts import VenueAccountStore
from portico.venues.syndr import models
from portico.venues.syndr.http import SyndrHttpClient
from tests.support.portico_up import REPO
from tests.support.suite import RestartableSuite, up_options

SYMBOL = "ETH-PERP"
SERVICES = ("signer", "refdata", "marketdata", "account", "execution", "gateway", "simulator")
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
VENUE_STATES = {"open": "OPEN", "filled": "FILLED", "cancelled": "CANCELLED", "rejected": "REJECTED",
                "expired": "EXPIRED"}
FINAL = {"FILLED", "CANCELLED", "REJECTED", "EXPIRED"}


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rss_mb(pid: int) -> float | None:
    """Resident set size of the process, from /proc; None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024
    except (OSError, ValueError, StopIteration):
        return None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Orders:
    """What the order generator did."""

    prefix: str
    attempted: int = 0
    retries: int = 0
    retried_orders: int = 0
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    cancels: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies_ms: list[float] = field(default_factory=list)
    client_ids: list[str] = field(default_factory=list)


class Soak:
    def __init__(self, args: argparse.Namespace, data_dir: Path):
        self.args = args
        self.suite = RestartableSuite(up_options(data_dir))
        self.data_dir = data_dir
        self.started = time.monotonic()
        self.memory: dict[str, list[tuple[float, int, float]]] = {name: [] for name in SERVICES}
        self.orders = Orders(prefix=f"soak-{secrets.token_hex(3)}")
        self.faults: list[dict[str, Any]] = []
        self.ws_drops = 0
        self.mid = Decimal(0)
        self.venue_seen: dict[str, dict[str, Any]] = {}

    def now(self) -> float:
        return time.monotonic() - self.started

    # ------------------------------------------------------------------ background activity

    async def sample_memory(self) -> None:
        while True:
            for name in SERVICES:
                process = self.suite.processes.get(name)
                if process is None or process.poll() is not None:
                    continue
                rss = rss_mb(process.pid)
                if rss is not None:
                    self.memory[name].append((self.now(), process.pid, rss))
            await asyncio.sleep(2)

    async def drop_websockets(self, admin: httpx.AsyncClient) -> None:
        while True:
            await asyncio.sleep(self.args.ws_drop_seconds)
            with contextlib.suppress(httpx.HTTPError):
                await admin.post("/websockets/close")
                self.ws_drops += 1

    async def follow_price(self, venue: SyndrHttpClient) -> None:
        while True:
            with contextlib.suppress(Exception):
                book = (await venue.call("public/get_order_book", {"instrument_name": SYMBOL, "depth": 1})).result
                self.mid = (Decimal(str(book["best_bid_price"])) + Decimal(str(book["best_ask_price"]))) / 2
            await asyncio.sleep(2)

    async def kill_and_restart(self, name: str, at_s: float) -> None:
        await asyncio.sleep(max(0.0, at_s - self.now()))
        log(f"SIGKILL {name} (pid {self.suite.pid(name)})")
        at = self.now()
        downtime = await self.suite.kill_and_restart(name)
        self.faults.append({"service": name, "killed_at_s": round(at, 1), "serving_again_after_s": round(downtime, 2),
                            "new_pid": self.suite.pid(name)})
        log(f"{name} SERVING again after {downtime:.1f} s")

    # ------------------------------------------------------------------ orders

    async def call(self, rpc: Any, request: Any, token: str, deadline_s: float = 120) -> tuple[Any, str, int]:
        """The call, retried with the same request (and so the same client id) while UNAVAILABLE."""
        deadline = time.monotonic() + deadline_s
        attempt = 0
        while True:
            try:
                return await rpc(request, metadata=bearer(token), timeout=10), "OK", attempt
            except grpc.aio.AioRpcError as exc:
                if exc.code() in RETRYABLE and time.monotonic() < deadline:
                    attempt += 1
                    await asyncio.sleep(min(0.1 * 2 ** attempt, 2.0))
                    continue
                return None, f"{exc.code().name}: {(exc.details() or '')[:80]}", attempt

    async def place(self, stub: pb_grpc.ExecutionServiceStub, n: int, account: str, token: str,
                    rules: models.Instrument) -> None:
        client_id = f"{self.orders.prefix}-{n:06d}"
        amount = str(rules.min_trade_amount)
        tick = rules.tick_size
        if n % 10 == 0:  # a market order that fills, alternately buying and selling
            request = pb.PlaceOrderRequest(venue="syndr", account=account, symbol=SYMBOL, amount=amount,
                                           side=side_pb2.SIDE_BUY if n // 10 % 2 else side_pb2.SIDE_SELL,
                                           type=order_pb2.ORDER_TYPE_MARKET, client_order_id=client_id)
        else:  # resting far from the market
            buy = n % 2 == 1
            factor, rounding = (Decimal("0.8"), ROUND_FLOOR) if buy else (Decimal("1.2"), ROUND_CEILING)
            price = (self.mid * factor / tick).to_integral_value(rounding) * tick
            request = pb.PlaceOrderRequest(venue="syndr", account=account, symbol=SYMBOL, amount=amount,
                                           side=side_pb2.SIDE_BUY if buy else side_pb2.SIDE_SELL,
                                           type=order_pb2.ORDER_TYPE_LIMIT, price=str(price), client_order_id=client_id)
        self.orders.attempted += 1
        self.orders.client_ids.append(client_id)
        started = time.monotonic()
        reply, outcome, retries = await self.call(stub.PlaceOrder, request, token)
        self.orders.retries += retries
        self.orders.retried_orders += retries > 0
        if reply is not None:
            self.orders.latencies_ms.append((time.monotonic() - started) * 1000)
            outcome = order_pb2.OrderState.Name(reply.order.state)
        self.orders.outcomes[outcome] += 1
        if n % 10 not in (0, 9) and reply is not None:  # cancel most resting orders a little later, by client id
            await asyncio.sleep(2)
            cancel = pb.CancelOrderRequest(venue="syndr", account=account, client_order_id=client_id)
            _, cancelled, _ = await self.call(stub.CancelOrder, cancel, token)
            self.orders.cancels[cancelled.split(":")[0]] += 1

    async def generate_orders(self, stub: pb_grpc.ExecutionServiceStub, account: str, token: str,
                              rules: models.Instrument, until_s: float) -> None:
        tasks: set[asyncio.Task[None]] = set()
        n = 0
        next_at = time.monotonic()
        while self.now() < until_s:
            n += 1
            task = asyncio.create_task(self.place(stub, n, account, token, rules))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            next_at += self.args.order_interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        log(f"{n} orders issued; waiting for {len(tasks)} in flight")
        if tasks:
            await asyncio.wait(tasks, timeout=180)

    # ------------------------------------------------------------------ the run

    async def run(self) -> dict[str, Any]:
        log(f"bringing the suite up in {self.data_dir}")
        state = await self.suite.bring_up()
        background: list[asyncio.Task[Any]] = []
        workers: list[asyncio.subprocess.Process] = []
        try:
            return await self._run(state, background, workers)
        finally:
            for task in background:
                task.cancel()
            for worker in workers:
                if worker.returncode is None:
                    worker.kill()
                    await worker.wait()

    async def _run(self, state: dict[str, Any], background: list[asyncio.Task[Any]],
                   workers: list[asyncio.subprocess.Process]) -> dict[str, Any]:
        # The venue as the account sees it, with the account's own API key (from Vault, as execution reads it).
        settings = VaultSettings(addr=state["vault"]["addr"], auth_method="token", token=self.suite.vault_root_token())
        async with httpx.AsyncClient(base_url=state["simulator"]["admin"], timeout=10) as admin, \
                SyndrHttpClient(state["simulator"]["http"]) as venue, \
                VaultSession(settings) as vault, \
                open_channel(state["services"]["execution"]) as channel:
            account_venue = SyndrVenue(state["simulator"]["http"], VenueAccountStore(vault), timeout_s=10)
            try:
                return await self._load_and_check(state, admin, venue, account_venue, channel, background, workers)
            finally:
                await account_venue.aclose()

    async def _load_and_check(self, state: dict[str, Any], admin: httpx.AsyncClient, venue: SyndrHttpClient,
                              account_venue: SyndrVenue, channel: grpc.aio.Channel,
                              background: list[asyncio.Task[Any]],
                              workers: list[asyncio.subprocess.Process]) -> dict[str, Any]:
        args = self.args
        duration_s = args.minutes * 60
        tokens, account = state["tokens"], state["demo"]["account"]
        instruments = models.parse_instruments((await venue.call("public/get_instruments", {"kind": "any"})).result)
        rules = instruments[SYMBOL]
        (await admin.post("/market-maker", json={"book_changes_per_second": args.book_changes})).raise_for_status()
        per_worker = [args.consumers // args.workers + (i < args.consumers % args.workers)
                      for i in range(args.workers)]
        for count in per_worker:
            workers.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.soak.consumers", "--target", state["services"]["marketdata"],
                "--count", str(count), "--symbol", SYMBOL, cwd=REPO, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, env={**os.environ, "SOAK_TOKEN": tokens["read"]}))
        self.started = time.monotonic()
        background.extend(asyncio.create_task(coro) for coro in (
            self.sample_memory(), self.drop_websockets(admin), self.follow_price(venue),
            self.follow_venue_orders(account_venue, account)))
        await self.until(lambda: self.mid > 0, 10)
        faults = [asyncio.create_task(self.kill_and_restart("marketdata", args.kill_marketdata_at * duration_s)),
                  asyncio.create_task(self.kill_and_restart("execution", args.kill_execution_at * duration_s))]
        log(f"load on for {args.minutes} min: {args.book_changes} changes/s, {args.consumers} consumers, "
            f"an order every {args.order_interval * 1000:.0f} ms")
        await self.generate_orders(pb_grpc.ExecutionServiceStub(channel), account, tokens["trade"], rules,
                                   duration_s)
        await asyncio.gather(*faults)
        load_s = self.now()

        log("cancelling every order, pausing the market maker")
        stub = pb_grpc.ExecutionServiceStub(channel)
        reply, cancel_all, _ = await self.call(stub.CancelAllOrders, pb.CancelAllOrdersRequest(
            venue="syndr", account=account), tokens["trade"])
        if reply is not None:
            cancel_all = f"OK, {reply.cancelled_count} cancelled"  # the resting orders left open
        for task in background[1:]:
            task.cancel()
        (await admin.post("/market-maker", json={"book_changes_per_second": 0})).raise_for_status()
        venue_book = await self.quiet_venue_book(venue)
        books = await self.consumer_reports(workers)
        await self.read_venue_orders(account_venue, account)
        venue_orders = list(self.venue_seen.values())
        journal = await self.journal()
        background[0].cancel()

        return self.figures(load_s, cancel_all, venue_book, books, venue_orders, journal)

    async def until(self, predicate: Any, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not reached")
            await asyncio.sleep(0.1)

    async def quiet_venue_book(self, venue: SyndrHttpClient) -> dict[str, Any]:
        """The venue's book once it has stopped changing."""
        previous: dict[str, Any] | None = None
        for _ in range(60):
            await asyncio.sleep(1)
            book = (await venue.call("public/get_order_book", {"instrument_name": SYMBOL, "depth": 10})).result
            if previous is not None and book.get("change_id") == previous.get("change_id"):
                return dict(book)
            previous = book
        raise TimeoutError("the venue's book kept changing with the market maker paused")

    async def consumer_reports(self, workers: list[asyncio.subprocess.Process]) -> list[dict[str, Any]]:
        reports: list[dict[str, Any]] = []
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(b"report\n")
            await worker.stdin.drain()
        for worker in workers:
            out, _ = await asyncio.wait_for(worker.communicate(), 90)
            reports.extend(json.loads(out.decode().strip().splitlines()[-1]))
        return reports

    async def read_venue_orders(self, venue: SyndrVenue, account: str) -> None:
        """Merge the demo account's orders as the venue has them (open ones, then its history, which keeps
        only the newest 10,000 closed orders) into `venue_seen`, by order id: later reads overwrite earlier ones."""
        found = await open_orders(venue, account)
        offset = 0
        while True:
            page = await order_history_page(venue, account, None, offset, 500)
            found.extend(page)
            if len(page) < 500:
                break
            offset += len(page)
        for order in found:
            if str(order.get("label", "")).startswith(self.orders.prefix):
                self.venue_seen[str(order["order_id"])] = order

    async def follow_venue_orders(self, venue: SyndrVenue, account: str) -> None:
        """Read the venue's orders every minute, so that none leaves its history unseen on a long run."""
        while True:
            await asyncio.sleep(60)
            try:
                await self.read_venue_orders(venue, account)
            except Exception as exc:  # a failed read is retried next minute; the final read always runs
                log(f"reading the venue's orders failed: {exc!r}")

    async def journal(self) -> list[tuple[str, str, str]]:
        """(client id, state, order id) of every journaled soak order, once none is left in a non-final state
        (the journal follows the venue's stream; give it up to 30 s after the cancel-all)."""
        path = self.data_dir / "execution" / "journal.sqlite3"
        rows: list[tuple[str, str, str]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.closing(sqlite3.connect(path, timeout=10)) as db:
                rows = db.execute("SELECT client_order_id, state, order_id FROM orders WHERE client_order_id LIKE ?",
                                  (self.orders.prefix + "-%",)).fetchall()
            if all(state in FINAL for _, state, _ in rows):
                break
            await asyncio.sleep(1)
        return rows

    # ------------------------------------------------------------------ figures

    def memory_figures(self) -> dict[str, Any]:
        figures: dict[str, Any] = {}
        warmup = self.args.warmup_seconds
        for name, samples in self.memory.items():
            if not samples:
                continue
            last_pid = samples[-1][1]
            life = [(t, mb) for t, pid, mb in samples if pid == last_pid]
            start = life[0][0]
            settled = [(t, mb) for t, mb in life if t >= start + warmup] or life
            times, values = [t for t, _ in settled], [mb for _, mb in settled]
            slope = statistics.linear_regression(times, values).slope * 60 if len(settled) > 2 else 0.0
            # Growth from the first to the last quarter of the settled window, by medians: a garbage-collected
            # process's RSS saw-tooths by several MB, which first-vs-last sample would read as growth or shrinkage.
            quarter = max(1, len(values) // 4)
            growth = statistics.median(values[-quarter:]) - statistics.median(values[:quarter])
            figures[name] = {
                "restarted": len({pid for _, pid, _ in samples}) > 1, "samples": len(settled),
                "window_s": round(times[-1] - times[0], 1), "first_mb": round(values[0], 1),
                "last_mb": round(values[-1], 1), "max_mb": round(max(values), 1), "growth_mb": round(growth, 1),
                "slope_mb_per_min": round(slope, 2),
                # Flat: after warm-up it grew (first to last quarter, medians) by no more than 5 MB or 5 %,
                # whichever is larger.
                "flat": growth <= max(5.0, 0.05 * values[0]),
                # Every sample about 10 s apart: [seconds into the run, MB] (a restart shows as a drop).
                "series": [[round(t), round(mb, 1)] for t, _, mb in samples[::5]],
            }
        return figures

    def figures(self, load_s: float, cancel_all: str, venue_book: dict[str, Any], books: list[dict[str, Any]],
                venue_orders: list[dict[str, Any]], journal: list[tuple[str, str, str]]) -> dict[str, Any]:
        def levels(side: list[Any]) -> list[tuple[Decimal, Decimal]]:
            return [(Decimal(str(p)), Decimal(str(a))) for p, a in side]

        venue_top = (levels(venue_book.get("bids", [])), levels(venue_book.get("asks", [])))
        equal = [levels(b["bids"]) == venue_top[0] and levels(b["asks"]) == venue_top[1] for b in books]
        labels = collections.Counter(str(o.get("label")) for o in venue_orders)
        duplicates = {label: n for label, n in labels.items() if n > 1}
        venue_by_id = {str(o["order_id"]): o for o in venue_orders}
        journal_ids = {order_id for _, _, order_id in journal if order_id}
        mismatched, not_final, missing_at_venue = [], [], []
        for client_id, state, order_id in journal:
            if state not in FINAL:
                not_final.append((client_id, state))
            if order_id:
                found = venue_by_id.get(order_id)
                if found is None:
                    missing_at_venue.append(client_id)
                elif VENUE_STATES.get(str(found.get("order_state")).lower()) != state:
                    mismatched.append((client_id, state, found.get("order_state")))
            elif state != "REJECTED":
                missing_at_venue.append(client_id)
        not_journaled = [str(o.get("label")) for o in venue_orders if str(o["order_id"]) not in journal_ids]
        memory = self.memory_figures()
        orders = self.orders
        stream_errors: collections.Counter[str] = collections.Counter()
        for b in books:
            stream_errors.update(b["stream_errors"])
        checks = {
            "every_book_equals_the_venue": all(equal) and len(books) == self.args.consumers,
            "no_broken_chain_or_checksum": not any(b["broken"] for b in books),
            "no_duplicate_orders_at_the_venue": not duplicates,
            "every_journaled_order_final_and_matching_the_venue": not (mismatched or not_final or missing_at_venue
                                                                       or not_journaled),
            "memory_flat_after_warmup": all(m["flat"] for n, m in memory.items() if n != "simulator"),
        }
        return {
            "benchmark": "soak",
            "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                        "loadavg_at_end": list(os.getloadavg())},
            "settings": {"minutes": self.args.minutes, "book_changes_per_second": self.args.book_changes,
                         "consumers": self.args.consumers, "consumer_processes": self.args.workers, "depth": 10,
                         "symbol": SYMBOL, "order_interval_ms": self.args.order_interval * 1000,
                         "websocket_drop_every_s": self.args.ws_drop_seconds,
                         "memory_warmup_s": self.args.warmup_seconds,
                         "kill_at_fraction": {"marketdata": self.args.kill_marketdata_at,
                                              "execution": self.args.kill_execution_at}},
            "load_seconds": round(load_s, 1),
            "faults": {"websocket_drops": self.ws_drops, "kills": self.faults},
            "books": {
                "consumers": len(books), "equal_to_venue": sum(equal),
                "at_venue_change_id": sum(b["sequence"] == venue_book.get("change_id") for b in books),
                "venue_change_id": venue_book.get("change_id"),
                "updates_applied": sum(b["updates"] for b in books),
                "updates_per_consumer_per_s": round(sum(b["updates"] for b in books) / max(1, len(books)) / load_s, 1),
                "snapshots": sum(b["snapshots"] for b in books), "status_updates": sum(b["statuses"] for b in books),
                "broken": sum(b["broken"] for b in books),
                "broken_first": [x for b in books for x in b["broken_first"]][:5],
                "streams_opened": sum(b["streams_opened"] for b in books), "stream_ends": dict(stream_errors),
            },
            "orders": {
                "attempted": orders.attempted, "per_second": round(orders.attempted / (self.args.minutes * 60), 1),
                "outcomes": dict(orders.outcomes), "retried_orders": orders.retried_orders,
                "retries": orders.retries, "cancels": dict(orders.cancels), "cancel_all": cancel_all,
                "place_p50_ms": percentile(orders.latencies_ms, 0.5),
                "place_p99_ms": percentile(orders.latencies_ms, 0.99),
                "place_max_ms": max(orders.latencies_ms, default=None),
                "venue_orders": len(venue_orders), "duplicate_labels": duplicates,
                "journaled": len(journal), "journal_states": dict(collections.Counter(s for _, s, _ in journal)),
                "venue_states": dict(collections.Counter(str(o.get("order_state")) for o in venue_orders)),
                "not_final": not_final[:10], "state_mismatches": mismatched[:10],
                "journaled_but_not_at_venue": missing_at_venue[:10], "at_venue_but_not_journaled": not_journaled[:10],
            },
            "memory": memory,
            "checks": checks,
            "passed": all(checks.values()),
        }


async def soak_once(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="portico-soak-") as tmp:
        soak = Soak(args, Path(args.data_dir) if args.data_dir else Path(tmp))
        try:
            return await soak.run()
        finally:
            await asyncio.to_thread(soak.suite.stop)


def run_and_write(args: argparse.Namespace) -> int:
    figures = asyncio.run(soak_once(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    log(f"checks: {json.dumps(figures['checks'])}; figures in {out}")
    return 0 if figures["passed"] else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--out", default="bench-results/soak.json")
    parser.add_argument("--data-dir", default="", help="keep the suite's data and logs here (default: a temp dir)")
    parser.add_argument("--book-changes", type=int, default=2000)
    parser.add_argument("--consumers", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2, help="consumer processes")
    parser.add_argument("--order-interval", type=float, default=0.05)
    parser.add_argument("--ws-drop-seconds", type=float, default=20.0)
    # Warm-up: execution's bounded dedupe memories (5,000 orders and updates) fill in about two minutes at
    # 20 orders/s; memory is judged after that.
    parser.add_argument("--warmup-seconds", type=float, default=150.0)
    parser.add_argument("--kill-marketdata-at", type=float, default=0.25, help="fraction of the run")
    parser.add_argument("--kill-execution-at", type=float, default=0.45, help="fraction of the run")
    raise SystemExit(run_and_write(parser.parse_args()))


if __name__ == "__main__":
    main()

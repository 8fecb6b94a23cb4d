"""`portico sim` / `python -m portico.sim`: run the Syndr-compatible venue on its own."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from decimal import Decimal

from portico.runtime.config import ConfigError, setting
from portico.runtime.lifecycle import freeze_startup_objects
from portico.runtime.logs import configure_logging
from portico.runtime.main import event_loop_factory, run_in_event_loop
from portico.sim.server import SimConfig, Simulator

__all__ = ["add_arguments", "main", "run"]

ADMIN_TOKEN = setting("PORTICO_SIM_ADMIN_TOKEN", "", "Bearer token the simulator's `/admin/` interface requires "
                      "(unset: open, for loopback development).", scope="simulator", secret=True)


def _names(value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected one or more instrument names, comma-separated")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SimConfig()
    parser.add_argument("--host", default=defaults.host, help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=defaults.port, help="HTTP + WebSocket port (default 8700)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of every random choice")
    parser.add_argument("--book-changes-per-second", type=float, default=defaults.book_changes_per_second,
                        help="market-maker activity across all instruments")
    parser.add_argument("--no-market-maker", action="store_true", help="books move only with client orders")
    parser.add_argument("--market-maker-instruments", type=_names, default=None, metavar="NAME[,NAME...]",
                        help="concentrate market-maker activity on these instruments (default: all)")
    parser.add_argument("--extra-instruments", type=int, default=0, help="generate this many more instruments")
    parser.add_argument("--default-collateral", default=str(defaults.default_collateral),
                        help="USDT credited to an account when it registers a signing key")


def config_from(args: argparse.Namespace) -> SimConfig:
    return SimConfig(host=args.host, port=args.port, seed=args.seed,
                     book_changes_per_second=args.book_changes_per_second, market_maker=not args.no_market_maker,
                     market_maker_instruments=args.market_maker_instruments,
                     catalog_extra=args.extra_instruments, default_collateral=Decimal(args.default_collateral),
                     admin_token=ADMIN_TOKEN.get_str(os.environ) or None)


async def _serve(config: SimConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with Simulator(config) as sim:
        freeze_startup_objects()
        print(f"Syndr simulator: {sim.http_url}  {sim.ws_url}  admin {sim.admin_url}", flush=True)
        await stop.wait()


def run(args: argparse.Namespace) -> int:
    configure_logging("sim", os.environ)
    try:
        event_loop_factory(os.environ)
    except ConfigError as exc:
        print(f"portico sim: configuration error: {exc}", file=sys.stderr)
        return 2
    run_in_event_loop(_serve(config_from(args)), os.environ)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="portico sim", description=__doc__)
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))


if __name__ == "__main__":
    main()

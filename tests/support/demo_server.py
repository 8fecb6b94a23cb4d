"""A minimal server on the shared runtime, for runtime tests (run in-process or as `python -m`).

`/test.Demo/Wait` sleeps for the number of milliseconds in its request (ASCII
digits) and echoes them; `/test.Demo/Fail` raises what its request names;
`/test.Demo/Undeclared` has no declared scope.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping

import grpc

from portico.runtime.auth import TokenAuthenticator
from portico.runtime.errors import InvalidArgument, Unavailable
from portico.runtime.logs import configure_logging
from portico.runtime.server import GrpcServer, ServerSettings

SCOPES = {"/test.Demo/Wait": "read", "/test.Demo/Fail": "read"}


async def wait(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await asyncio.sleep(int(request or b"0") / 1000)
    return request


async def fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    if request == b"invalid":
        raise InvalidArgument("price", "must be on the tick")
    if request == b"unavailable":
        raise Unavailable("venue down", reason="VENUE_UNREACHABLE", metadata={"venue": "syndr"})
    raise RuntimeError("secret-ish internal detail 0xdeadbeef")


def build(env: Mapping[str, str]) -> GrpcServer:
    server = GrpcServer(ServerSettings.from_env(env, 0), domain="test.portico",
                        authenticator=TokenAuthenticator.from_env(env), method_scopes=SCOPES)
    handlers = {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in
                (("Wait", wait), ("Fail", fail), ("Undeclared", wait))}
    server.grpc.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Demo", handlers)])
    return server


async def _main() -> None:
    server = build(os.environ)
    port = await server.start(["test.Demo"])
    print(port, flush=True)
    await server.run_until_signalled()


if __name__ == "__main__":
    configure_logging("demo", os.environ)
    asyncio.run(_main())
    sys.exit(0)

"""A TCP forwarder that tests can cut, to make a real server unreachable on demand.

Put it between a client and a server, then `block()` closes every live
connection and closes each new one as soon as it is accepted, which is what a
client sees when Vault (or the load balancer in front of it) goes away;
`unblock()` restores forwarding. `stall()` instead keeps every connection
open but forwards nothing more either way, which is what a client sees when
the peer's host vanished without closing anything. Real sockets on
127.0.0.1, no mocking.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.support.ports import free_port


class TcpProxy:
    """Forward 127.0.0.1:<free port> to target_host:target_port."""

    def __init__(self, target_host: str, target_port: int, *, listen_port: int | None = None) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = listen_port or free_port()
        self.host = "127.0.0.1"
        self._server: asyncio.Server | None = None
        self._blocked = False
        self._stalled = False
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0
        self.rejected = 0

    def __repr__(self) -> str:
        return f"TcpProxy({self.addr} -> {self.target_host}:{self.target_port}, blocked={self._blocked})"

    @property
    def addr(self) -> str:
        """host:port to connect to instead of the target."""
        return f"{self.host}:{self.port}"

    @property
    def blocked(self) -> bool:
        return self._blocked

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        await self._drop_all()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def block(self) -> None:
        """Cut all live connections and close new ones immediately."""
        self._blocked = True
        await self._drop_all()

    async def unblock(self) -> None:
        self._blocked = False

    def stall(self) -> None:
        """Keep connections open but drop every byte from now on, both ways (a silently vanished peer)."""
        self._stalled = True

    def resume(self) -> None:
        self._stalled = False

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _drop_all(self) -> None:
        for client, upstream in list(self._conns):
            client.transport.abort()
            if upstream is not None:
                upstream.transport.abort()
        self._conns.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._blocked:
            self.rejected += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            self.rejected += 1
            writer.transport.abort()
            return
        if self.blocked:  # block() may have run while we were connecting upstream
            self.rejected += 1
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self.accepted += 1
        conn = (writer, up_writer)
        self._conns.add(conn)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        try:
            # When either direction ends, the connection is over: close both sides.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            self._tasks.difference_update(pumps)
            self._conns.discard(conn)
            writer.transport.abort()
            up_writer.transport.abort()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
            while data := await src.read(65536):
                if self._stalled:
                    continue
                dst.write(data)
                await dst.drain()

"""A loopback TCP proxy in front of the test Kafka broker that rewrites the broker addresses in
Metadata and FindCoordinator responses so that a client keeps talking through the proxy, and that
can, on demand, answer Metadata with no broker at all (topics untouched): what a Kafka 4 KRaft
broker answers for a few milliseconds while it is stopped gracefully (fenced but still serving).

Usage:
    with KafkaProxy(KAFKA_BOOTSTRAP) as proxy:
        ... add_broker(proxy.address) ...
        proxy.zero_brokers = True

The proxy runs an asyncio loop in a thread of its own; `close` (or leaving the `with`) stops it
and every connection, within a few seconds at most.
"""
from __future__ import annotations

import asyncio
import struct
import threading
from typing import Optional

METADATA = 3
FIND_COORDINATOR = 10


class _Reader:
    """Reads Kafka protocol fields from a bytes buffer."""

    def __init__(self, buf: bytes, pos: int = 0):
        self.buf, self.pos = buf, pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise ValueError("truncated Kafka response")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def int16(self) -> int:
        return struct.unpack(">h", self.take(2))[0]

    def int32(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def uvarint(self) -> int:
        shift = value = 0
        while True:
            b = self.take(1)[0]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7

    def string(self, flexible: bool) -> Optional[bytes]:
        """A (nullable) string: compact (length + 1 as uvarint) when flexible, else int16 length."""
        n = self.uvarint() - 1 if flexible else self.int16()
        return None if n < 0 else self.take(n)

    def skip_tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())


def _uvarint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _string(s: Optional[bytes], flexible: bool) -> bytes:
    if s is None:
        return _uvarint(0) if flexible else struct.pack(">h", -1)
    return (_uvarint(len(s) + 1) if flexible else struct.pack(">h", len(s))) + s


def rewrite_metadata(frame: bytes, version: int, host: bytes, port: int, zero: bool) -> bytes:
    """A Metadata response (without its size prefix) with every broker at host:port, or with no
    broker when `zero`. Versions 0-13; everything after the broker list is kept as it is."""
    flexible = version >= 9
    r = _Reader(frame, 4)  # correlation id
    if flexible:
        r.skip_tags()  # response header v1
    if version >= 3:
        r.int32()  # throttle_time_ms
    body_start_brokers = r.pos
    count = r.uvarint() - 1 if flexible else r.int32()
    brokers = []
    for _ in range(max(count, 0)):
        node = r.int32()
        r.string(flexible)  # host
        r.int32()  # port
        rack = r.string(flexible) if version >= 1 else None
        if flexible:
            r.skip_tags()
        brokers.append((node, rack))
    rest = frame[r.pos:]
    if zero:
        brokers = []
    out = bytearray(frame[:body_start_brokers])
    out += _uvarint(len(brokers) + 1) if flexible else struct.pack(">i", len(brokers))
    for node, rack in brokers:
        out += struct.pack(">i", node) + _string(host, flexible) + struct.pack(">i", port)
        if version >= 1:
            out += _string(rack, flexible)
        if flexible:
            out += _uvarint(0)
    return bytes(out + rest)


def rewrite_find_coordinator(frame: bytes, version: int, host: bytes, port: int) -> bytes:
    """A FindCoordinator response (versions 0-2, what librdkafka 2.12 sends) with the coordinator
    at host:port (when there is one)."""
    if version > 2:
        return frame
    r = _Reader(frame, 4)
    if version >= 1:
        r.int32()  # throttle_time_ms
    r.int16()  # error_code
    if version >= 1:
        r.string(False)  # error_message
    node_at = r.pos
    node = r.int32()
    r.string(False)
    r.int32()
    if node < 0:
        return frame
    return frame[:node_at] + struct.pack(">i", node) + _string(host, False) + struct.pack(">i", port) + frame[r.pos:]


class KafkaProxy:
    def __init__(self, upstream: str, host: str = "127.0.0.1"):
        up_host, up_port = upstream.rsplit(":", 1)
        self.upstream = (up_host, int(up_port))
        self.host = host
        self.port = 0
        #: While true, every Metadata response lists no broker.
        self.zero_brokers = False
        #: Metadata responses passed on, and how many of them listed no broker.
        self.metadata_responses = 0
        self.zeroed_responses = 0
        #: Client connections open now, and accepted in all.
        self.open_connections = 0
        self.accepted = 0
        #: Responses that could not be parsed (their connection was closed).
        self.errors: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._server: Optional[asyncio.base_events.Server] = None
        self._tasks: set[asyncio.Task] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kafka-proxy", daemon=True)
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "KafkaProxy":
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._client, self.host, 0), self._loop)
        self._server = fut.result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def close(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> "KafkaProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _count(self, attr: str, delta: int = 1) -> None:
        with self._lock:
            setattr(self, attr, getattr(self, attr) + delta)

    async def _client(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self._count("accepted")
        self._count("open_connections")
        u_writer = None
        try:
            u_reader, u_writer = await asyncio.wait_for(asyncio.open_connection(*self.upstream), timeout=10)
            # correlation id -> (api key, api version) of the requests in flight on this connection
            inflight: dict[int, tuple[int, int]] = {}
            up = asyncio.create_task(self._requests(c_reader, u_writer, inflight))
            down = asyncio.create_task(self._responses(u_reader, c_writer, inflight))
            try:
                await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (up, down):
                    t.cancel()
                await asyncio.gather(up, down, return_exceptions=True)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            pass
        except ValueError as e:  # a response the proxy could not parse: the test should fail
            self.errors.append(repr(e))
        except asyncio.CancelledError:
            pass  # closing the proxy
        finally:
            for w in (c_writer, u_writer):
                if w is not None:
                    w.close()
            self._count("open_connections", -1)
            self._tasks.discard(task)

    @staticmethod
    async def _frame(reader: asyncio.StreamReader) -> bytes:
        size = struct.unpack(">i", await reader.readexactly(4))[0]
        return await reader.readexactly(size)

    async def _requests(self, reader, writer, inflight) -> None:
        while True:
            frame = await self._frame(reader)
            api_key, api_version, corr = struct.unpack(">hhi", frame[:8])
            inflight[corr] = (api_key, api_version)
            writer.write(struct.pack(">i", len(frame)) + frame)
            await writer.drain()

    async def _responses(self, reader, writer, inflight) -> None:
        host = self.host.encode()
        while True:
            frame = await self._frame(reader)
            corr = struct.unpack(">i", frame[:4])[0]
            api_key, api_version = inflight.pop(corr, (-1, -1))
            if api_key == METADATA:
                zero = self.zero_brokers
                frame = rewrite_metadata(frame, api_version, host, self.port, zero)
                self._count("metadata_responses")
                if zero:
                    self._count("zeroed_responses")
            elif api_key == FIND_COORDINATOR:
                frame = rewrite_find_coordinator(frame, api_version, host, self.port)
            writer.write(struct.pack(">i", len(frame)) + frame)
            await writer.drain()

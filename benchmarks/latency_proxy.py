#!/usr/bin/env python
"""A TCP proxy that adds network latency: a local fake-gcs-server that answers like a far bucket.

    python benchmarks/latency_proxy.py --upstream http://127.0.0.1:4443 [--delay-ms 15] [--port 0]

Every byte is delivered ``delay`` after it arrived, in each direction (default 15 ms each
way, so 30 ms a request's round trip), without slowing the bytes behind it: a chunk read
from one side is queued with its due time and written to the other side when due, so a
burst of pipelined requests or a streamed response takes one delay, not one per chunk, and
a connection kept alive is kept alive (one upstream connection per client connection, both
closed together; a half close is forwarded). What it does not model: bandwidth, loss, and
the connection handshake (a new connection costs nothing extra unless
``connect_round_trips`` says so; TCP costs one, TLS one or two more).

As a module (the benchmarks use it so)::

    with FakeGcs() as gcs, ProxyProcess(gcs.endpoint, delay_ms=15) as proxy:
        storage.configure(storage_endpoint=proxy.endpoint)

``LatencyProxy`` runs its asyncio loop in a daemon thread of this process; ``ProxyProcess``
runs one in a child process, so that the code it serves, busy in Python, can't hold up its
forwarding (the GIL) — what the benchmarks use.

``python benchmarks/latency_proxy.py --check`` starts a fake-gcs-server, times small GETs
direct and through a proxy, and prints the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from types import TracebackType
from urllib.parse import urlsplit

CHUNK = 64 * 1024


class LatencyProxy:
    """A latency-adding TCP proxy to ``upstream`` (``http://host:port``), on 127.0.0.1."""

    def __init__(
        self,
        upstream: str,
        *,
        delay_ms: float = 15.0,
        port: int = 0,
        connect_round_trips: int = 0,
    ) -> None:
        parts = urlsplit(upstream if "://" in upstream else f"http://{upstream}")
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"--upstream {upstream!r}: give host and port, e.g. 127.0.0.1:4443")
        self.upstream_host, self.upstream_port = parts.hostname, parts.port
        self.delay = delay_ms / 1000
        self.connect_delay = 2 * self.delay * connect_round_trips
        self.port = port
        self.connections = 0  # client connections accepted so far (keep-alive shows here)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.late = 0.0  # how late the loop's timers fire, on average: delivered that early

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: give this where the upstream's URL would go."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LatencyProxy:
        """Listen (in a daemon thread with its own event loop) and return once listening."""
        ready = threading.Event()
        failed: list[BaseException] = []

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, "127.0.0.1", self.port)
                )
                self.port = self._server.sockets[0].getsockname()[1]
                self.late = loop.run_until_complete(_timer_lateness(self.delay))
            except BaseException as err:  # handed to start()'s caller
                failed.append(err)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=serve, name="latency-proxy", daemon=True)
        self._thread.start()
        ready.wait()
        if failed:
            raise failed[0]
        return self

    def stop(self) -> None:
        """Close the listener and every connection; safe to call twice."""
        loop, self._loop = self._loop, None
        if loop is None:
            return

        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join(timeout=10)

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self.connections += 1
        try:
            if self.connect_delay:
                await asyncio.sleep(self.connect_delay)
            upstream_r, upstream_w = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except (OSError, asyncio.CancelledError):
            client_w.close()
            self._tasks.discard(task)  # type: ignore[arg-type]
            return
        try:
            await asyncio.gather(self._pipe(client_r, upstream_w), self._pipe(upstream_r, client_w))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for writer in (client_w, upstream_w):
                writer.close()
            self._tasks.discard(task)  # type: ignore[arg-type]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward ``reader`` to ``writer``, each chunk ``delay`` after it arrived."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - self.late - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:  # the sender closed its side: pass the half close on
                    with contextlib.suppress(OSError):
                        if writer.can_write_eof():
                            writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                try:
                    data = await reader.read(CHUNK)
                except OSError:
                    data = b""
                queue.put_nowait((loop.time() + self.delay, data))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()


class ProxyProcess:
    """A ``LatencyProxy`` in a child process (``python latency_proxy.py``): it shares no GIL
    with the code it serves, so a busy client does not delay the proxy's forwarding.

    ``endpoint`` is the proxy's URL once started (a context manager, as ``LatencyProxy``)."""

    def __init__(self, upstream: str, *, delay_ms: float = 15.0) -> None:
        self.upstream, self.delay_ms = upstream, delay_ms
        self.endpoint = ""
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> ProxyProcess:
        cmd = [sys.executable, os.path.abspath(__file__), "--upstream", self.upstream]
        cmd += ["--delay-ms", str(self.delay_ms)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()  # "http://127.0.0.1:PORT -> ..." once listening
        if not line.startswith("http://"):
            self.__exit__(None, None, None)
            raise RuntimeError(f"the latency proxy did not start: {line!r}")
        self.endpoint = line.split()[0]
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


async def _timer_lateness(delay: float, n: int = 20) -> float:
    """Seconds an ``asyncio.sleep(delay)`` overruns, on average (the selector rounds its
    timeout up to the millisecond): the proxy delivers that much early to add ``delay``."""
    if delay <= 0:
        return 0.0
    loop = asyncio.get_running_loop()
    late = []
    for _ in range(n):
        start = loop.time()
        await asyncio.sleep(delay)
        late.append(loop.time() - start - delay)
    return max(0.0, statistics.median(late))


def _get_ms(url: str, n: int) -> list[float]:
    """Milliseconds per GET of ``url``, ``n`` times, each on a fresh connection (urllib)."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as resp:
            resp.read()
        times.append(1000 * (time.perf_counter() - start))
    return times


def _keepalive_get_ms(base: str, path: str, n: int) -> list[float]:
    """Milliseconds per GET of ``path``, ``n`` times on one kept-alive connection."""
    import http.client

    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    times = []
    try:
        for _ in range(n):
            start = time.perf_counter()
            conn.request("GET", path)
            conn.getresponse().read()
            times.append(1000 * (time.perf_counter() - start))
    finally:
        conn.close()
    return times


def check(delay_ms: float, n: int = 30) -> int:
    """Start a fake-gcs-server, time GETs direct and through a proxy; print the difference."""
    from confpipe.testing.gcs import FakeGcs

    path = "/storage/v1/b"
    with FakeGcs() as gcs:
        _keepalive_get_ms(gcs.endpoint, path, 3)  # warm the server
        direct = statistics.median(_keepalive_get_ms(gcs.endpoint, path, n))
        with LatencyProxy(gcs.endpoint, delay_ms=delay_ms) as proxy:
            in_thread = statistics.median(_keepalive_get_ms(proxy.endpoint, path, n))
            connections = proxy.connections
        with ProxyProcess(gcs.endpoint, delay_ms=delay_ms) as child:
            proxied = statistics.median(_keepalive_get_ms(child.endpoint, path, n))
            fresh = statistics.median(_get_ms(child.endpoint + path, 5))
    added, expected = proxied - direct, 2 * delay_ms
    print(f"GET {path}, median of {n} on one kept-alive connection:")
    print(f"  direct                   {direct:7.2f} ms")
    print(f"  proxied (child process)  {proxied:7.2f} ms  (+{added:.2f}; expected +{expected:g})")
    print(f"  proxied (in a thread)    {in_thread:7.2f} ms  (+{in_thread - direct:.2f})")
    print(f"  client connections the in-thread proxy saw for those {n} GETs: {connections}")
    print(f"  a GET on a new connection each time, proxied: {fresh:.2f} ms")
    ok = abs(added - expected) <= max(2.0, 0.1 * expected) and connections == 1
    print(f"{'PASS' if ok else 'FAIL'}: one GET through the proxy takes ~{expected:g} ms more")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", help="the server to forward to: http://HOST:PORT")
    parser.add_argument("--delay-ms", type=float, default=15.0, help="added each way (15)")
    parser.add_argument("--port", type=int, default=0, help="where to listen (0: a free port)")
    parser.add_argument(
        "--connect-round-trips", type=int, default=0, help="extra round trips per new connection"
    )
    parser.add_argument(
        "--check", action="store_true", help="time GETs to a fake-gcs-server direct and proxied"
    )
    args = parser.parse_args(argv)
    if args.check:
        return check(args.delay_ms)
    if not args.upstream:
        parser.error("--upstream is required (or --check)")
    proxy = LatencyProxy(
        args.upstream,
        delay_ms=args.delay_ms,
        port=args.port,
        connect_round_trips=args.connect_round_trips,
    ).start()
    print(
        f"{proxy.endpoint} -> {args.upstream}, +{args.delay_ms:g} ms each way "
        f"(STORAGE_EMULATOR_HOST={proxy.endpoint}); Ctrl-C stops",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

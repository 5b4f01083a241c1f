"""The gs:// store: confpipe's Store primitives on Google Cloud Storage's JSON API, via gcsfs.

Imported only when a ``gs://`` prefix is used (``storage.store_for``): a local run never pays
for gcsfs or google-auth. Requests go through gcsfs's aiohttp session (its credentials,
retries, endpoint) on fsspec's IO loop; nothing is cached, so no listing hides a new lease.

read       metadata (generation, ``updated``) and media fetched together; they match when
           the media's ``X-Goog-Generation`` is the metadata's generation (else again)
read_many  one media request per path, ``concurrency`` in flight; mtime = ``Last-Modified``
           rounded *up* to the second (never before ``updated``: ages are never too big)
create     a multipart upload with ``ifGenerationMatch=0``
replace    a multipart upload with ``ifGenerationMatch=<version>`` (version = generation)
delete     replace with an empty tombstone (a compare-and-swap), then DELETE it with
           ``ifGenerationMatch``: exact on GCS and on fake-gcs-server (which ignores
           preconditions on DELETE)
write      an upload without precondition

A failed precondition (HTTP 412) is an outcome, not an error: None or False. Each upload
carries a random nonce in its metadata: when gcsfs retried an upload whose first attempt
landed (its response was lost), the 412 of the retry is recognized as our own success.

Retry window (``retry_window``; else ``$CONFPIPE_STORAGE_RETRY_WINDOW`` seconds, else 30 s,
for the shared store and local jobs alike): each primitive above gives up within it
and raises ``StoreUnreachable``; once the server stopped answering, every request fails at
once until a quick probe finds it back (``gcsreach``). So a run whose store is down ends
within about one window, each step with a one-line error; gcsfs's retry tracebacks go to
DEBUG logging only. The lock's timing check (``lease_timeout`` >= 3 heartbeat intervals +
this window) is stated against it.

Endpoint: ``GcsStore(endpoint=...)``, or ``storage.configure(storage_endpoint=...)`` for the
shared store (the gcp backend's ``storage_endpoint``), else ``$STORAGE_EMULATOR_HOST`` (as
gcsfs and google-cloud-storage read it), else Google. With an endpoint the client is
anonymous unless ``token=`` says otherwise; without one, gcsfs's usual credentials apply.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import quote

from aiohttp import ClientTimeout
from fsspec.asyn import sync

from confpipe.errors import ConfigError
from confpipe.storage.base import Blob
from confpipe.storage.gcsreach import Reach, ReachingGCSFileSystem, quiet_gcsfs_tracebacks

T = TypeVar("T")
NONCE = "confpipe-nonce"
FIELDS = "generation,updated,metadata"  # of an object's metadata, all that is needed
BIG = 32 * 2**20  # write() hands bigger objects to gcsfs (resumable uploads)
RETRY_WINDOW = 30.0  # seconds a primitive keeps trying a store that does not answer
WINDOW_ENV = "CONFPIPE_STORAGE_RETRY_WINDOW"


class ServerClock:
    """A lower bound of the storage server's clock, learned from the server's own responses.

    A response says what time it was on the server before it arrived: its ``Date`` header
    (whole seconds) and the ``updated`` time of an object in it (microseconds; fresh after
    our own uploads). That time minus the local monotonic time at arrival bounds the
    clocks' offset from below; the best bound is kept, weakened by ``drift`` per second.
    So ``now()`` never runs ahead of the server: a lease's age is never overestimated (a live
    lease is never taken over early; a stale one at most ~1 s late before this process has
    uploaded anything). No wall clock, ours or the lease writer's, is ever used.
    """

    def __init__(self, drift: float = 1e-4) -> None:
        self.drift = drift
        self._offset: float | None = None
        self._seen = 0.0
        self._lock = threading.Lock()
        self._date = ("", 0.0)  # the last Date header parsed (it changes once a second)

    def observe(self, server_time: float, arrived: float) -> None:
        """``server_time`` was current on the server before monotonic time ``arrived``."""
        offset = server_time - arrived
        with self._lock:
            if self._offset is None or offset > self._bound(arrived):
                self._offset, self._seen = offset, arrived

    def observe_response(self, headers: Mapping[str, str], objects: Iterable[Any] = ()) -> None:
        arrived = time.monotonic()
        date = headers.get("Date")
        if date:
            if date != self._date[0]:
                self._date = (date, parsedate_to_datetime(date).timestamp())
            self.observe(self._date[1], arrived)
        for obj in objects:
            if isinstance(obj, dict) and "updated" in obj:
                self.observe(_timestamp(obj["updated"]), arrived)

    def now(self) -> float | None:
        """The server's time (a lower bound), or None before any response was seen."""
        mono = time.monotonic()
        with self._lock:
            return None if self._offset is None else mono + self._bound(mono)

    def _bound(self, mono: float) -> float:
        assert self._offset is not None
        return self._offset - self.drift * abs(mono - self._seen)


CONCURRENCY = 100  # reads in flight in ``read_many``: aiohttp's default connection pool.
# At 30 ms a round trip, 1,000 status reads take 0.3 s of waiting at 100, 0.9 s at 32.


class GcsStore:
    """``gs://BUCKET/NAME`` objects; versions are object generations, mtimes ``updated``."""

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        token: Any = None,
        concurrency: int = CONCURRENCY,
        timeout: float = 60.0,
        retry_window: float | None = None,
    ) -> None:
        emulator = os.environ.get("STORAGE_EMULATOR_HOST", "")
        endpoint = endpoint or (emulator if emulator not in ("", "default") else None)
        if endpoint and "://" not in endpoint:
            endpoint = f"http://{endpoint}"
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        if token is None and self.endpoint is not None:
            token = "anon"
        quiet_gcsfs_tracebacks()
        retry_window = retry_window_from_env() if retry_window is None else retry_window
        self.reach = Reach(retry_window)
        self.fs = ReachingGCSFileSystem(
            endpoint_url=self.endpoint, token=token, use_listings_cache=False,
            skip_instance_cache=True,
            requests_timeout=ClientTimeout(sock_connect=timeout, sock_read=timeout),
        )  # fmt: skip
        self.fs.reach = self.reach
        self.concurrency = concurrency
        self.retry_window = retry_window
        self.clock = ServerClock()
        self._bucket = "confpipe-clock"  # the last bucket used: where now() asks for the time

    def read(self, path: str) -> Blob | None:
        return self._run(self._read, path)

    def read_many(self, paths: Iterable[str]) -> list[Blob | None]:
        return self._run(self._read_many, list(paths))

    def create(self, path: str, data: bytes) -> str | None:
        obj = self._run(self._upload, path, data, "0")
        return None if obj is None else str(obj["generation"])

    def replace(self, path: str, data: bytes, version: str) -> str | None:
        if not _is_generation(version):
            return None
        obj = self._run(self._upload, path, data, version)
        return None if obj is None else str(obj["generation"])

    def delete(self, path: str, version: str) -> bool:
        return _is_generation(version) and bool(self._run(self._delete, path, version))

    def write(self, path: str, data: bytes) -> None:
        if len(data) > BIG:  # not bounded: a big upload may take longer than the window
            sync(self.fs.loop, self.fs._pipe_file, path, data)
        else:
            self._run(self._upload, path, data, None)

    def now(self) -> float:
        now = self.clock.now()
        if now is None:  # nothing heard from the server yet
            self._run(self._probe)
            now = self.clock.now()
        if now is None:
            raise OSError(f"{self.fs._location} sent no Date header: no clock to judge leases")
        return now

    def _run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run a primitive's coroutine on gcsfs's loop, bounded by the retry window."""
        work = self.reach.bounded(fn(*args), self.fs._location)
        return sync(self.fs.loop, lambda: work)  # type: ignore[no-any-return]

    async def _call(self, method: str, url: str, **params: Any) -> tuple[Mapping[str, str], bytes]:
        headers, body = await self.fs._call(method, url, **params)
        return headers, body

    async def _read_many(self, paths: list[str]) -> list[Blob | None]:
        gate = asyncio.Semaphore(self.concurrency)

        async def one(path: str) -> Blob | None:
            async with gate:
                return await self._read_media(path)

        return list(await asyncio.gather(*(one(p) for p in paths)))

    async def _read(self, path: str) -> Blob | None:
        bucket, key = self._split(path)
        for _ in range(10):
            meta, media = await asyncio.gather(
                self._meta(bucket, key), self._media(bucket, key), return_exceptions=True
            )
            for got in (meta, media):
                if isinstance(got, BaseException) and not isinstance(got, FileNotFoundError):
                    raise got
            if isinstance(meta, FileNotFoundError) and isinstance(media, FileNotFoundError):
                return None
            if isinstance(meta, dict) and isinstance(media, tuple):
                generation, (headers, data) = str(meta["generation"]), media
                if "X-Goog-Generation" not in headers:
                    raise OSError(f"{self.fs._location}: no X-Goog-Generation in responses")
                if headers["X-Goog-Generation"] == generation:
                    return Blob(data, generation, _timestamp(meta["updated"]))
            # replaced, created or deleted between the two requests: look again
        raise OSError(f"{path}: changed on every read, 10 times in a row")

    async def _read_media(self, path: str) -> Blob | None:
        """One request: content, generation and a whole-second mtime, rounded up."""
        bucket, key = self._split(path)
        try:
            headers, data = await self._media(bucket, key)
        except FileNotFoundError:
            return None
        generation, modified = headers.get("X-Goog-Generation"), headers.get("Last-Modified")
        if generation is None or modified is None:  # unsaid: ask the metadata too
            return await self._read(path)
        return Blob(data, generation, parsedate_to_datetime(modified).timestamp() + 1.0)

    async def _meta(self, bucket: str, key: str) -> dict[str, Any]:
        headers, body = await self._call("GET", self._url(bucket, key), fields=FIELDS)
        meta: dict[str, Any] = json.loads(body)
        self.clock.observe_response(headers, [meta])
        return meta

    async def _media(
        self, bucket: str, key: str, generation: str | None = None
    ) -> tuple[Mapping[str, str], bytes]:
        url = f"{self.fs._location}/download/storage/v1/b/{_q(bucket)}/o/{_q(key)}"
        headers, body = await self._call("GET", url, alt="media", generation=generation)
        self.clock.observe_response(headers)
        return headers, body

    async def _upload(
        self, path: str, data: bytes, if_generation: str | None
    ) -> dict[str, Any] | None:
        """Upload ``data`` (only if the generation is ``if_generation``): its metadata or None."""
        bucket, key = self._split(path)
        nonce = uuid.uuid4().hex
        boundary = uuid.uuid4().hex
        meta = json.dumps({"name": key, "metadata": {NONCE: nonce}})
        payload = b"".join([
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
            meta.encode(),
            f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode(),
            data,
            f"\r\n--{boundary}--".encode(),
        ])  # fmt: skip
        url = f"{self.fs._location}/upload/storage/v1/b/{_q(bucket)}/o"
        try:
            headers, body = await self._call(
                "POST", url, uploadType="multipart", ifGenerationMatch=if_generation,
                headers={"Content-Type": f'multipart/related; boundary="{boundary}"'},
                data=payload,
            )  # fmt: skip
        except FileExistsError:  # 412: the precondition failed, unless a retry hid our success
            return await self._landed(bucket, key, nonce)
        except FileNotFoundError as err:  # only a missing bucket answers an upload with 404
            raise FileNotFoundError(f"gs://{bucket}: no such bucket (writing {path})") from err
        obj: dict[str, Any] = json.loads(body)
        self.clock.observe_response(headers, [obj])
        return obj

    async def _landed(self, bucket: str, key: str, nonce: str) -> dict[str, Any] | None:
        """The object's metadata if it holds the upload tagged ``nonce``, else None."""
        try:
            meta = await self._meta(bucket, key)
        except FileNotFoundError:
            return None
        return meta if (meta.get("metadata") or {}).get(NONCE) == nonce else None

    async def _delete(self, path: str, version: str) -> bool:
        tombstone = await self._upload(path, b"", version)
        if tombstone is None:
            return False
        bucket, key = self._split(path)
        try:
            await self._call(
                "DELETE", self._url(bucket, key), ifGenerationMatch=tombstone["generation"]
            )
        except FileNotFoundError:  # a retried DELETE whose first attempt landed
            pass
        except FileExistsError:  # our tombstone was replaced meanwhile: that object stays
            return False
        return True

    async def _probe(self) -> None:
        """One cheap request, for its ``Date`` header (whatever the answer)."""
        session = await self.fs._set_session()
        url = f"{self._url(self._bucket, '')}?maxResults=1&fields=kind"
        async with session.get(url, headers=self.fs._get_headers(None)) as response:
            await response.read()
            self.clock.observe_response(response.headers)

    def _url(self, bucket: str, key: str) -> str:
        return f"{self.fs._location}/storage/v1/b/{_q(bucket)}/o/{_q(key)}".rstrip("/")

    def _split(self, path: str) -> tuple[str, str]:
        bucket, _, key = path.split("://", 1)[-1].partition("/")
        if not bucket or not key:
            raise ValueError(f"{path!r}: an object path on gs:// is gs://BUCKET/NAME")
        self._bucket = self.reach.bucket = bucket
        return bucket, key


def retry_window_from_env() -> float:
    """``$CONFPIPE_STORAGE_RETRY_WINDOW`` (seconds, > 0), else ``RETRY_WINDOW``."""
    text = os.environ.get(WINDOW_ENV, "").strip()
    if not text:
        return RETRY_WINDOW
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise ConfigError(
            f"{WINDOW_ENV}={text!r}: give the gs:// store's retry window in seconds, "
            f"e.g. {WINDOW_ENV}=30"
        )
    return seconds


def _q(part: str) -> str:
    return quote(part, safe="")


def _is_generation(version: str) -> bool:
    return version.isdigit() and version != "0"


def _timestamp(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339).timestamp()

"""Shared fixtures: one fake-gcs-server per session, a fresh ``gs://`` prefix per test, and a
FakeBatch or FakeTpu per test that finds the fake GCS server.

The server starts on first use only (a run of local tests never starts it), and the
environment points this process and every subprocess it launches at it (the Batch and TPU
fakes are imported by their fixtures: a local test never loads Google's SDKs). gcsfs reads
``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT`` when imported, so that is set here, before any test
module can import it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from confpipe import ConfpipeError, storage
from confpipe.testing.gcs import FakeGcs, find_binary

if TYPE_CHECKING:
    from confpipe.testing.batch import FakeBatch
    from confpipe.testing.tpu import FakeTpu

os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
# the config caches (confpipe.config.diskcache) of this session, and of every CLI it runs:
# in a folder of its own, never the user's
os.environ["CONFPIPE_CACHE_DIR"] = tempfile.mkdtemp(prefix="confpipe-test-cache-")
atexit.register(shutil.rmtree, os.environ["CONFPIPE_CACHE_DIR"], True)

BUCKET = "confpipe-tests"


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[FakeGcs]:
    """A running fake-gcs-server with bucket ``BUCKET``; the environment points at it."""
    pytest.importorskip("gcsfs", reason="gs:// tests need confpipe[gcp]")
    try:
        find_binary()
    except ConfpipeError as err:
        pytest.skip(str(err))
    with FakeGcs() as gcs, pytest.MonkeyPatch.context() as env:
        for key, value in gcs.env.items():
            env.setenv(key, value)
        gcs.create_bucket(BUCKET)
        storage.configure()  # the shared gs:// store is rebuilt and finds the fake
        yield gcs
        storage.configure()


@pytest.fixture
def gs_prefix(fake_gcs: FakeGcs) -> str:
    """A fresh ``gs://`` prefix on the fake server, unique to this test."""
    return f"gs://{BUCKET}/t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def fake_batch(fake_gcs: FakeGcs) -> Iterator[FakeBatch]:
    """A FakeBatch made after the fake GCS: its jobs' "image" environment finds the fake."""
    from confpipe.testing.batch import FakeBatch

    with FakeBatch() as fake:
        yield fake


@pytest.fixture
def fake_tpu(fake_gcs: FakeGcs) -> Iterator[FakeTpu]:
    """A FakeTpu made after the fake GCS: its hosts' "image" environment finds the fake."""
    from confpipe.testing.tpu import FakeTpu

    with FakeTpu(grace=5.0) as fake:
        yield fake

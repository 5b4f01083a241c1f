"""Offline fakes of the cloud services confpipe talks to, for tests and for users' own runs.

gcs     ``FakeGcs``: a local fake-gcs-server, so ``gs://`` prefixes run without Google
batch   ``FakeBatch``: an in-process Cloud Batch API server that runs jobs on this machine
tpu     ``FakeTpu``: an in-process Cloud TPU API server whose TPU hosts run on this machine

Each submodule is imported on its own (``from confpipe.testing.gcs import FakeGcs``), so
using one fake never pays for another's client libraries.

Beside the layers, for tests and demos: may import any of confpipe (the fakes check requests
with the backends' own catalogues); nothing in confpipe imports ``confpipe.testing``.
"""

"""``backend=gcp``: Cloud Batch for CPU/GPU steps, Cloud TPU for TPU steps.

Google's SDKs are imported only when a backend is built (google-cloud-tpu on the first TPU
step): importing this package costs nothing.

settings          GcpConf: the gcp settings, declared and checked once
router            GcpBackend: TPU steps to Cloud TPU, the others to Cloud Batch
cloud             what the Batch and TPU backends share: client, staging, outages
job               a job on Google Cloud: its id, labels, entry command and env
api               the API clients: endpoints, credentials, calls retried through outages
batch             the Cloud Batch backend; batch_request: the Job request and its status
tpu               the Cloud TPU backend; tpu_request: the QueuedResource and its status
machine_catalog   which Compute Engine machine type serves a step's resources
tpu_catalog       which TPU a ``resources.tpu`` names, and where it is offered
staging           the working tree archived under the prefix for jobs
vm                what a cloud VM runs for one job (``python -m confpipe.backends.vm``)
hosts             the start and exit records each host of a TPU slice writes

May import: ``confpipe.backends``, ``confpipe.storage``, ``confpipe.errors``,
``confpipe.cancel`` (never ``confpipe.engine``, ``confpipe.config`` or ``confpipe.cli``).
"""

"""``backend=gcp``: Cloud Batch for CPU/GPU steps, Cloud TPU for TPU steps.

Google's SDKs are imported only when a backend is built (google-cloud-tpu on the first TPU
step): importing this package costs nothing.
"""

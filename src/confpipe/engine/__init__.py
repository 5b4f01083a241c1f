"""The engine: steps made executable and run, each exactly once, its outcome recorded.

spec        ``StepSpec``: a step's identity, hash and output path
status      the records beside each output (status, info, result, lease paths)
cache       skip what succeeded; record RUNNING, the result and SUCCESS last
lock        a lease per step: heartbeat, takeover, fencing
remote      the one job wrapper: ``@remote``, ``as_job`` and ``run_job``
plan        the read-only plan: which steps run, why, and where
pipeline    ``run()``: plan, wrap each step once (cache, lock, remote), run
runner/     a DAG of tasks on threads, knowing nothing of steps

May import: ``confpipe.backends``, ``confpipe.storage``, ``confpipe.errors``,
``confpipe.cancel`` (never ``confpipe.config`` or ``confpipe.cli``).
"""

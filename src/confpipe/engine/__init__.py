"""The engine: steps made executable and run, each exactly once, its outcome recorded.

spec        ``StepSpec``: a step's identity, hash and output path
coerce      a step's config coerced to its function's annotations (1 -> 1.0 for a float)
outcome     ``Outcome``: the one enum of what a launch does with a step (plan and end)
status      the records beside each output (status, info, result, lease paths)
cache       skip what succeeded; record RUNNING, the result and SUCCESS last
fingerprint a step function's code fingerprint; codechanges: which code changed since
logcap      a log's cap: its first and last megabytes kept
lock        a lease per step: takeover, fencing
owner       who holds a lease, and whether a holder on this machine is gone
heartbeat   refreshes held leases; gives up one whose refreshes stopped landing
remote      the one job wrapper: ``@remote``, ``as_job`` and ``run_job``
plan        the read-only plan: which steps run, why, and where
select      ``run_only``: the steps its names and shell globs pick
report      the ``Reporter`` protocol, and the plain lines of a run given no reporter
steplog     each thread step's stdout, stderr and logging, routed to its own log.txt
joblog      a job's log followed as it grows (each new line echoed), then the step's log
frames      the user's own frames in a traceback's text: where a failure is to be fixed
options     ``RunOptions``: a run's options, given whole
pipeline    ``run()``: plan, wrap each step once (cache, lock, remote), run
runner/     a DAG of tasks on threads, knowing nothing of steps (only ``outcome``)

May import: ``confpipe.backends``, ``confpipe.storage``, ``confpipe.errors``,
``confpipe.cancel`` (never ``confpipe.config`` or ``confpipe.cli``).
"""

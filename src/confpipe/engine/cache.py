"""cache(fn): skip a step that already succeeded; otherwise record it and commit SUCCESS last.

``Records`` are the hooks that run inside the step's lease (lock.py): re-check the status
after acquiring, write RUNNING + info, and at the end write the result and then SUCCESS
(or FAILED with the traceback). Each commit is fenced by a refresh of the lease, and each
status write is a compare-and-swap on the record this launch last read or wrote: a launch
that lost its lease (paused past the lease timeout, say, between its fence and its write)
finds the record changed by the launch that took over, and can never mark the step
succeeded.

Every status record and the info record carry the fingerprints of the code that wrote them
(``StepSpec.code`` and ``lineage``). They are not identity: a step that succeeded with other
code is still done, unless the run asks to re-run changed code (``rerun_on_code_change``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict
from typing import Any

from confpipe.backends import encode_result
from confpipe.backends.results import StoredResult
from confpipe.cancel import CancelScope
from confpipe.engine import beside
from confpipe.engine.codechanges import code_changed
from confpipe.engine.lock import Lease, LockOptions, try_acquire
from confpipe.engine.outcome import Outcome
from confpipe.engine.spec import StepSpec
from confpipe.engine.status import (
    Status,
    StepState,
    clear_output,
    error_path,
    info_path,
    launch_info,
    log_path,
    read_status_blob,
    result_path,
    result_problem,
    status_path,
    swap_status,
    unrecorded_path,
    write_cause,
    write_json,
)
from confpipe.errors import LeaseLost, PreviousFailure, StepFailed
from confpipe.redact import public_resources
from confpipe.storage import Store, loss_level

log = logging.getLogger("confpipe")


class Records:
    """The records of one step on its store, written by the launch ``owner``."""

    def __init__(
        self, store: Store, spec: StepSpec, owner: str, where: str = "thread",
        reattaches: bool = False,
    ) -> None:  # fmt: skip
        self.store, self.spec, self.owner, self.where = store, spec, owner, where
        self.reattaches = reattaches  # its jobs' backend re-attaches to an earlier live job
        self.arrived: float | None = None  # when the step was called, before any lease wait
        self.started: float | None = None
        self._previous: Status | None = None  # the record found before this attempt
        self._version: str | None = None  # of the status record last read or written
        self._committed = False  # SUCCESS written: a late failure (Ctrl-C) must not undo it
        self.rerun_on_code_change = False  # set by ``cache``: code changed means not done
        self._primed = False  # ``_previous`` and ``_version`` are the plan's read: not re-read
        self._unchecked = False  # the status was read (or primed), not yet checked by a write
        self._info: Future[None] | None = None  # the info record's write, beside the work
        self._began = False  # RUNNING was written beside the lease's creation (``early``)

    def prime(self, status: Status | None, version: str | None) -> None:
        """Start from the status the plan read (and its version): the step's first ``status``
        is that, not a read. Safe however old it is: the first write, RUNNING, is a
        compare-and-swap on that version, which fails if anyone wrote since; then ``done``
        reads it afresh."""
        self._previous, self._version, self._primed = status, version, True

    def done(self, output_path: str) -> bool:
        """Whether the step is done, checked under the lease. The status just seen before
        the lease was taken is not read again: ``begin``'s compare-and-swap checks it (a
        launch that committed meanwhile changed its version). After a failed ``begin``, or
        a lost lease, it is read."""
        if self._unchecked:
            self._unchecked = False
            return self.found_done(output_path, self._previous)
        return self.found_done(output_path, self.status(output_path))

    def found_done(self, output_path: str, status: Status | None) -> bool:
        """The step, planned to run, is done after all (``status`` just read): it succeeded
        (another launch finished it), and its result record is whole (one read, on this rare
        path only: the plan may have found it damaged, which is why the step is to run)."""
        if not succeeded(self.spec, status, self.rerun_on_code_change):
            return False
        path = result_path(output_path)
        blob = self.store.read(path)
        why = "missing" if blob is None else result_problem(blob.data)
        if why is None:
            return True
        log.warning("step %s: unreadable record %s (%s): runs again", self.spec.name, path, why)
        return False  # its files stay: only its result record was damaged

    def skipped(self) -> Any:
        """What the step's executable returns when it found the step done."""
        return Outcome.CACHED

    def status(self, output_path: str) -> Status | None:
        """The step's status in ``output_path`` (None if it holds another hash's records):
        the plan's, the first time, when it was primed; otherwise one read."""
        if self._primed:
            self._primed = False
        else:
            status, self._version = read_status_blob(self.store, output_path)
            self._previous = None if status is None else status.of(self.spec.hash)
        self._unchecked = True
        return self._previous

    def early(self, output_path: str) -> Future[str | None] | None:
        """For a step with no status record at all (as just seen), on a store with round
        trips: create its RUNNING record now, beside the creation of its lease rather than
        after it, one round trip less on each new step's way. ``settle`` says whether it
        counts. None where it doesn't apply (a record exists, or a local store)."""
        if self._version is not None or not self._unchecked:
            return None  # a record exists (or was not just seen): RUNNING goes under the lease
        if not beside.pays_round_trips(output_path):
            return None
        self.started = time.time()
        running = self._record(StepState.RUNNING, early=True)
        return beside.submit(swap_status, self.store, output_path, running, None)

    def settle(self, output_path: str, early: Future[str | None], at_once: bool | None) -> None:
        """The early RUNNING is this attempt's begin only if the lease was created by this
        launch's first request for it (``at_once``): leases on such a store are released,
        never deleted, so that lease is the first ever held here, and nobody else can have
        written the status since ours landed. Otherwise (the lease was waited for, taken
        over, or released before) the status is read again under the lease and RUNNING
        written by compare-and-swap, as usual; with no lease at all (None: cancelled while
        waiting) an early RUNNING that landed is deleted again."""
        try:
            version = early.result()
        except Exception:  # the store failed: the usual path reads it again, and says so
            version = None
        if version is not None and at_once:
            self._version, self._began = version, True
            return
        self._unchecked = False  # read it again under the lease
        if version is not None and at_once is None:
            with contextlib.suppress(Exception):
                self.store.delete(status_path(output_path), version)

    def begin(self, output_path: str) -> bool:
        """Write info and RUNNING, and start a retry from an empty folder (``_fresh``); False
        if the status changed since ``status`` read it (a launch that had lost the lease
        committed or failed meanwhile): check it again."""
        with contextlib.suppress(Exception):  # a lost attempt's info write lands first
            self._info_written()
        previous = self._previous
        self._unchecked = False
        if self._began:  # RUNNING is written already, by ``early``
            self._began = False
        else:
            self.started = time.time()
            if not self._status(output_path, StepState.RUNNING):
                return False
        if previous is not None and previous.early and not self._attempted(previous, output_path):
            previous = None  # an early RUNNING of a launch that never got the lease
        self._write_info(output_path)
        if previous is not None:  # the last attempt's log: not this one's (a step that
            with contextlib.suppress(FileNotFoundError):  # prints nothing writes none)
                self.store.fs.rm(log_path(output_path))
        if previous is not None and previous.state is StepState.FAILED:
            with contextlib.suppress(FileNotFoundError):  # the last attempt's: not this one's
                self.store.fs.rm(error_path(output_path))
        if previous is not None and previous.state is StepState.RUNNING:
            with contextlib.suppress(FileNotFoundError):  # its unrecorded failure's marker
                self.store.fs.rm(unrecorded_path(output_path))
        if previous is not None and self._fresh(previous):
            gone = clear_output(self.store, output_path)
            if gone:
                log.info(
                    "step %s: removed %d file(s) of its earlier attempt from %s",
                    self.spec.name, gone, output_path,
                )  # fmt: skip
        return True

    def _attempted(self, early: Status, output_path: str) -> bool:
        """Whether the launch that wrote an ``early`` RUNNING got the lease and began: never
        this launch's own (it is beginning now); another's if its info record exists
        (written as it began). One read, only on this rare path (two launches raced for a
        new step, or one died as it began)."""
        if early.worker == self.owner:
            return False
        return self.store.read(info_path(output_path)) is not None

    def _write_info(self, output_path: str) -> None:
        """Write the info record: on a store with round trips, beside the step's work (it
        is waited for before the commit, with the result record's write); locally, now."""
        path, record = info_path(output_path), self.info(output_path)
        if not beside.pays_round_trips(output_path):
            write_json(self.store, path, record)
            return
        self._info = beside.submit(write_json, self.store, path, record)

    def _info_written(self) -> None:
        """Wait for the info record's write; raise its error (the step is not done)."""
        pending, self._info = self._info, None
        if pending is not None:
            pending.result()

    def _fresh(self, previous: Status) -> bool:
        """Whether this attempt clears what an earlier one of this step left in its folder.

        Only a retry's: the folder holds a record of this step (failed, interrupted, not run
        for a failed dependency) that is not SUCCESS, so its files are an unfinished
        attempt's. Never cleared: a folder without a record of this step (a new step, a
        folder given by hand that holds other files, another step's records), nor one whose
        record is unreadable (it may have said SUCCESS), nor one whose function returned (its
        value could not be recorded: a fixed function may find its work there). A job on a
        backend that re-attaches to a live job of an earlier launch (cloud) keeps the files
        of an attempt that may still be running (RUNNING, or interrupted with ``detach``):
        that job goes on writing them."""
        if previous.state is StepState.SUCCESS or previous.returned or previous.unreadable:
            return False
        live = previous.state is StepState.RUNNING or bool(previous.interrupted)
        return not (self.reattaches and live)

    def succeed(self, output_path: str, value: Any, fence: Callable[[], None]) -> None:
        """Write the result record, then SUCCESS. A job's record (``StoredResult``) is moved
        into place, not read: a result is stored once and never held by the driver. A value
        that can't be recorded fails the step before anything else is written: its output
        folder stays as it is."""
        data: bytes | None = None
        if not isinstance(value, StoredResult):
            try:
                data = encode_result(self.spec.name, value)
            except Exception as err:
                self.fail(output_path, err, fence)
                raise
        fence()  # still ours (and extended): the two writes below are this launch's to make
        path = result_path(output_path)
        try:
            if isinstance(value, StoredResult):
                self.store.fs.mv(value.path, path)
            else:
                assert data is not None
                self.store.write(path, data)
            path = info_path(output_path)
            self._info_written()  # written meanwhile: the commit waits for both
        except Exception as err:  # a full disk: the step did not succeed, and says why
            what = "result" if path == result_path(output_path) else "info"
            failure = StepFailed(
                self.spec.name, f"could not record its {what}: {write_cause(err, path)}"
            )
            failure.returned = True  # type: ignore[attr-defined]  # the work is done: keep it
            failure.__cause__ = err
            self.fail(output_path, failure, fence)
            raise failure from err
        self._committed = self._status(output_path, StepState.SUCCESS)
        if not self._committed:
            raise LeaseLost(
                self.spec.name,
                "another launch took the step over while this one was committing; this launch "
                "did not commit it",
            )

    def fail(
        self, output_path: str, error: BaseException, fence: Callable[[], None],
        interrupted: bool = False,
    ) -> None:  # fmt: skip
        """Record FAILED and the traceback. When a write fails (a full disk), the step's own
        error is kept (the caller raises it), carrying why (``unrecorded``), and a marker
        tells the next plan, where it can still be written."""
        if self._committed:  # Ctrl-C between the commit and the lease's release
            return
        with contextlib.suppress(Exception):  # its failure is the step's: recorded below
            self._info_written()
        fence()
        trace = "".join(traceback.format_exception(error))
        message = (
            error.message if isinstance(error, StepFailed) else f"{type(error).__name__}: {error}"
        )
        lost: list[str] = []  # why a record could not be written
        level = logging.WARNING
        try:
            self.store.write(error_path(output_path), error_text(error, trace).encode())
        except Exception as err:  # a full disk, say: the status record may still fit
            lost.append(write_cause(err, error_path(output_path)))
            level = loss_level(err)
        try:
            self._status(  # not written if another launch took the step over: its record stays
                output_path, StepState.FAILED, error=message, traceback=trace,
                interrupted=interrupted or None, returned=_returned(error),
            )  # fmt: skip
        except Exception as err:
            lost.append(write_cause(err, status_path(output_path)))
            level = loss_level(err)
            self._mark(output_path, lost[-1])
        if lost:  # the summary says so too, with the step's failure
            log.log(level, "step %s: could not record its failure: %s", self.spec.name, lost[-1])
            with contextlib.suppress(AttributeError, TypeError):  # an error that takes none
                error.unrecorded = lost[-1]  # type: ignore[attr-defined]

    def _mark(self, output_path: str, cause: str) -> None:
        """Leave ``unrecorded.txt`` for the next plan, saying why FAILED isn't recorded (an
        empty one where even that can't be written: it takes no space, only an inode)."""
        marker = unrecorded_path(output_path)
        try:
            self.store.write(marker, f"{cause}\n".encode())
        except Exception:
            with contextlib.suppress(Exception):
                self.store.fs.touch(marker, truncate=True)

    def info(self, output_path: str) -> dict[str, Any]:
        spec, resources = self.spec, self.spec.resources
        return {
            "name": spec.name,
            "hash": spec.hash,
            "fn": spec.fn_path,
            "config": spec.hash_inputs["config"],
            "deps": {dep.name: dep.identity for dep in spec.dependencies},
            "resources": _public(asdict(resources)) if resources else None,
            "hash_inputs": spec.hash_inputs,
            "output_path": output_path,
            "where": self.where,
            "code": spec.code,
            "lineage": spec.lineage,
            **launch_info(),
        }

    def _status(self, output_path: str, state: StepState, **fields: Any) -> bool:
        """Write the status over the one last seen; False if another launch wrote since."""
        status = self._record(state, **fields)
        version = swap_status(self.store, output_path, status, self._version)
        if version is None:
            return False
        self._version = version
        return True

    def _record(self, state: StepState, **fields: Any) -> Status:
        """The status record this launch writes now."""
        waited = None
        if self.arrived is not None and self.started is not None:
            waited = round(max(0.0, self.started - self.arrived), 3) or None
        spec = self.spec
        return Status(
            state, self.owner, time.time(), started=self.started, hash=spec.hash,
            waited=waited, code=spec.code, lineage=spec.lineage, where=self.where, **fields,
        )  # fmt: skip


def _returned(error: BaseException) -> bool | None:
    """True for the failure of a step whose function returned (its value could not be
    recorded): set by ``encode_result``, the job's record, or ``succeed``."""
    return True if isinstance(error, StepFailed) and getattr(error, "returned", None) else None


def error_text(error: BaseException, trace: str) -> str:
    """What error.txt holds: the traceback; for a job, the job's own traceback first."""
    remote = getattr(error, "remote_traceback", "") or ""
    if not remote:
        return trace
    return f"{remote.rstrip()}\n\nThe driver's side (the job's failure as raised there):\n{trace}"


def _public(resources: dict[str, Any]) -> dict[str, Any]:
    """Resources as recorded: env values are secret-ish, so only their names are kept."""
    return public_resources(resources)  # secret_env too: names only


def succeeded(spec: StepSpec, status: Status | None, rerun_on_code_change: bool = False) -> bool:
    """The step is done: it succeeded (with ``rerun_on_code_change``: with the code it has now,
    its own and its upstream steps'; a record older than the fingerprints counts as done)."""
    if status is None or status.state is not StepState.SUCCESS:
        return False
    return not (rerun_on_code_change and code_changed(spec, status))


def cache(
    fn: Callable[..., Any], records: Records, *, force_run_failed: bool = True,
    rerun_on_code_change: bool = False,
) -> Callable[..., Any]:  # fmt: skip
    """Return ``Outcome.CACHED`` without calling ``fn`` when the step already succeeded (a
    step function's own value is JSON, never an enum). With ``rerun_on_code_change``, a step
    that succeeded with other code is run again (``records`` re-check it under the lease)."""
    records.rerun_on_code_change = rerun_on_code_change

    @functools.wraps(fn)
    def cached(*, output_path: str, **config: Any) -> Any:
        records.arrived = time.time()
        status = records.status(output_path)
        if records.found_done(output_path, status):
            return Outcome.CACHED
        if status is not None and status.is_failure() and not force_run_failed:
            raise previous_failure(records.spec.name, status)
        return fn(output_path=output_path, **config)

    return cached


def previous_failure(step: str, status: Status) -> PreviousFailure:
    return PreviousFailure(
        step,
        f"failed in an earlier launch ({status.error}); fix it, then rerun with "
        "force_run_failed=true to retry it",
    )


def record_dep_failed(
    store: Store, spec: StepSpec, output_path: str, failed_dep: str, owner: str,
    options: LockOptions, scope: CancelScope,
) -> None:  # fmt: skip
    """Persist DEP_FAILED, unless another launch holds the step or it already succeeded."""
    lease = try_acquire(store, spec.name, output_path, owner, options, scope)
    if not isinstance(lease, Lease):
        return
    try:
        status, version = read_status_blob(store, output_path)
        if status is None or status.of(spec.hash) is None or status.state is not StepState.SUCCESS:
            lease.fence()
            record = Status(
                StepState.DEP_FAILED,
                owner,
                time.time(),
                failed_dep=failed_dep,
                hash=spec.hash,
                code=spec.code,
                lineage=spec.lineage,
            )
            swap_status(store, output_path, record, version)  # lost to a late commit: fine
    finally:
        lease.release()

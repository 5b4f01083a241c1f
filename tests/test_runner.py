"""The runner: dependency order, the concurrency cap, failure isolation, validation, Ctrl-C."""

from __future__ import annotations

import _thread
import signal
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from confpipe.engine.outcome import Outcome
from confpipe.engine.runner import Report, Result, Task, run_tasks
from confpipe.errors import ConfigError

# A root task lingers this long, so that a scheduler ignoring dependencies would be caught
# starting a dependent early. It is a window for bugs to show, never an assertion.
LINGER = 0.05


class Trace:
    """Records, from inside the calls, which tasks started while their deps were unfinished."""

    def __init__(self, tasks: dict[str, tuple[str, ...]]) -> None:
        self.deps = tasks
        self.lock = threading.Lock()
        self.finished: set[str] = set()
        self.calls: list[str] = []
        self.violations: list[str] = []

    def task(self, key: str) -> Task:
        def call() -> str:
            with self.lock:
                self.calls.append(key)
                missing = [dep for dep in self.deps[key] if dep not in self.finished]
                if missing:
                    self.violations.append(f"{key} started before {missing}")
            if not self.deps[key]:
                threading.Event().wait(LINGER)
            with self.lock:
                self.finished.add(key)
            return f"value of {key}"

        return Task(key, self.deps[key], call)

    def tasks(self) -> list[Task]:
        return [self.task(key) for key in self.deps]


def outcomes(report: Report) -> dict[str, Outcome]:
    return {key: result.outcome for key, result in report.results.items()}


def returns(value: object) -> Callable[[], object]:
    return lambda: value


def never_called(key: str) -> Callable[[], object]:
    def call() -> object:
        raise AssertionError(f"{key} must not run")

    return call


def run_interrupted(
    tasks: Sequence[Task],
    *,
    max_concurrent: int,
    cancel: threading.Event | None = None,
    on_done: Callable[[Result], None] | None = None,
    grace: float = 5.0,
) -> Report:
    """run_tasks(), failing the test (not the whole session) if Ctrl-C escapes it."""
    try:
        return run_tasks(
            tasks, max_concurrent=max_concurrent, cancel=cancel, on_done=on_done, grace=grace
        )
    except KeyboardInterrupt:
        pytest.fail("run_tasks() let KeyboardInterrupt escape")


# --- dependency order -----------------------------------------------------------------------


def test_diamond_starts_each_task_after_its_deps_succeeded() -> None:
    trace = Trace({"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")})
    report = run_tasks(trace.tasks(), max_concurrent=4)
    assert trace.violations == []
    assert outcomes(report) == dict.fromkeys("abcd", Outcome.SUCCEEDED)
    assert report.results["d"].value == "value of d"
    assert not report.interrupted


def test_fan_out_starts_children_after_root_and_sink_after_all_children() -> None:
    children = {f"child{i}": ("root",) for i in range(20)}
    trace = Trace({"root": (), **children, "sink": tuple(children)})
    report = run_tasks(trace.tasks(), max_concurrent=4)
    assert trace.violations == []
    assert trace.calls[0] == "root" and trace.calls[-1] == "sink"
    assert set(outcomes(report).values()) == {Outcome.SUCCEEDED}


def test_ready_tasks_start_fifo_in_input_order() -> None:
    trace = Trace({"x": (), "y": ("a",), "a": (), "z": ()})
    run_tasks(trace.tasks(), max_concurrent=1)
    assert trace.calls == ["x", "a", "z", "y"]


def test_report_follows_input_order_when_the_input_is_not_topological() -> None:
    trace = Trace({"c": ("b",), "b": ("a",), "a": ()})
    report = run_tasks(trace.tasks(), max_concurrent=2)
    assert trace.calls == ["a", "b", "c"]
    assert list(report.results) == ["c", "b", "a"]


# --- concurrency ----------------------------------------------------------------------------


def test_concurrency_cap_is_respected() -> None:
    cap = 3
    in_flight = 0
    peak = 0
    lock = threading.Lock()
    barrier = threading.Barrier(cap, timeout=30)  # holds each call until `cap` are in flight

    def call() -> None:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        barrier.wait()
        threading.Event().wait(LINGER)  # a scheduler ignoring the cap would start more now
        with lock:
            in_flight -= 1

    tasks = [Task(f"t{i}", (), call) for i in range(10 * cap)]
    report = run_tasks(tasks, max_concurrent=cap)
    assert set(outcomes(report).values()) == {Outcome.SUCCEEDED}
    assert peak == cap


@pytest.mark.parametrize("max_concurrent", [8, 13])
def test_tasks_run_in_parallel_up_to_the_cap(max_concurrent: int) -> None:
    barrier = threading.Barrier(8, timeout=10)  # passes only if all 8 calls are in flight
    tasks = [Task(f"t{i}", (), barrier.wait) for i in range(8)]
    report = run_tasks(tasks, max_concurrent=max_concurrent)
    assert outcomes(report) == {f"t{i}": Outcome.SUCCEEDED for i in range(8)}


def test_ten_thousand_tasks_reuse_at_most_max_concurrent_threads() -> None:
    cap = 8
    before = set(threading.enumerate())
    baseline = threading.active_count()
    peak = baseline
    workers: set[threading.Thread] = set()
    lock = threading.Lock()

    def call() -> None:
        nonlocal peak
        with lock:
            peak = max(peak, threading.active_count())
            workers.add(threading.current_thread())

    # 100 chains of 100, each link also depending on the same link of the previous chain.
    tasks = [
        Task(
            f"t{i}",
            (*([f"t{i - 1}"] if i % 100 else []), *([f"t{i - 100}"] if i >= 100 else [])),
            call,
        )
        for i in range(10_000)
    ]
    started = time.monotonic()
    report = run_tasks(tasks, max_concurrent=cap)
    assert time.monotonic() - started < 60  # sanity only
    assert set(outcomes(report).values()) == {Outcome.SUCCEEDED}
    assert len(workers) <= cap
    assert peak <= baseline + cap
    left = set(threading.enumerate()) - before
    assert not [t for t in left if t.name.startswith("confpipe-runner")]  # joined when done


# --- failures -------------------------------------------------------------------------------


def test_failure_fails_only_its_transitive_dependents() -> None:
    boom = ValueError("boom")

    def fail() -> None:
        raise boom

    tasks = [
        Task("a", (), fail),
        Task("b", ("a",), never_called("b")),
        Task("c", ("b",), never_called("c")),
        Task("e", (), returns("e")),
        Task("d", ("c", "e"), never_called("d")),
        Task("f", ("e",), returns("f")),
    ]
    done: list[Result] = []
    report = run_tasks(tasks, max_concurrent=2, on_done=done.append)
    assert outcomes(report) == {
        "a": Outcome.FAILED,
        "b": Outcome.DEP_FAILED,
        "c": Outcome.DEP_FAILED,
        "e": Outcome.SUCCEEDED,
        "d": Outcome.DEP_FAILED,
        "f": Outcome.SUCCEEDED,
    }
    assert report.results["a"].error is boom
    assert {report.results[key].failed_dep for key in "bcd"} == {"a"}
    assert report.results["f"].value == "f"
    assert not report.interrupted
    reported = [result.key for result in done]
    assert sorted(reported) == sorted("abcdef")
    assert reported.index("a") < reported.index("b") < reported.index("c") < reported.index("d")


def test_base_exception_in_a_task_is_recorded_as_failed() -> None:
    def exit_() -> None:
        raise SystemExit(3)

    tasks = [Task("exit", (), exit_), Task("next", ("exit",), never_called("next"))]
    tasks.append(Task("other", (), returns(1)))
    report = run_tasks(tasks, max_concurrent=1)
    assert outcomes(report) == {
        "exit": Outcome.FAILED,
        "next": Outcome.DEP_FAILED,
        "other": Outcome.SUCCEEDED,
    }
    assert isinstance(report.results["exit"].error, SystemExit)


# --- callbacks ------------------------------------------------------------------------------


def test_callbacks_run_in_the_calling_thread_in_dependency_order() -> None:
    events: list[tuple[str, str]] = []
    threads: set[int] = set()

    def on_start(key: str) -> None:
        threads.add(threading.get_ident())
        events.append(("start", key))

    def on_done(result: Result) -> None:
        threads.add(threading.get_ident())
        events.append(("done", result.key))

    trace = Trace({"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")})
    run_tasks(trace.tasks(), max_concurrent=4, on_start=on_start, on_done=on_done)
    assert threads == {threading.get_ident()}
    for key, deps in trace.deps.items():
        assert all(events.index(("done", dep)) < events.index(("start", key)) for dep in deps)
        assert events.index(("start", key)) < events.index(("done", key))


def test_failing_on_done_propagates_after_cancelling_the_run() -> None:
    cancel = threading.Event()
    slow_saw_cancel: list[bool] = []

    def slow() -> None:
        slow_saw_cancel.append(cancel.wait(30))

    def on_done(result: Result) -> None:
        if result.key == "quick":
            raise RuntimeError("display bug")

    tasks = [
        Task("slow", (), slow),
        Task("quick", (), returns(None)),
        Task("after_quick", ("quick",), never_called("after_quick")),
    ]
    with pytest.raises(RuntimeError, match="display bug"):
        run_tasks(tasks, max_concurrent=2, cancel=cancel, on_done=on_done)
    assert cancel.is_set()
    assert slow_saw_cancel == [True]  # waited for within the grace period


def test_failing_on_start_propagates_and_starts_nothing_more() -> None:
    def on_start(key: str) -> None:
        if key == "b":
            raise RuntimeError("progress bug")

    tasks = [Task("a", (), returns(1)), Task("b", ("a",), never_called("b"))]
    with pytest.raises(RuntimeError, match="progress bug"):
        run_tasks(tasks, max_concurrent=1, on_start=on_start)


# --- validation -----------------------------------------------------------------------------


def test_cycle_is_a_config_error_that_shows_the_path() -> None:
    tasks = [
        Task("x", (), never_called("x")),
        Task("a", ("b",), never_called("a")),
        Task("b", ("c", "x"), never_called("b")),
        Task("c", ("a",), never_called("c")),
        Task("after", ("c",), never_called("after")),
    ]
    with pytest.raises(ConfigError) as info:
        run_tasks(tasks, max_concurrent=2)
    assert str(info.value) == (
        "dependency cycle: a -> b -> c -> a"
        " (each task depends on the next; remove one of these dependencies)"
    )


def test_self_dependency_is_a_cycle() -> None:
    with pytest.raises(ConfigError, match=r"^dependency cycle: a -> a \("):
        run_tasks([Task("a", ("a",), never_called("a"))], max_concurrent=1)


def test_cycle_at_the_end_of_a_long_chain_is_found_without_recursion() -> None:
    n = 5000
    tasks = [Task(f"t{i}", (f"t{i - 1}",) if i else (), never_called("t")) for i in range(n)]
    tasks += [Task("p", (f"t{n - 1}", "q"), never_called("p"))]
    tasks += [Task("q", ("p",), never_called("q"))]
    with pytest.raises(ConfigError, match=r"^dependency cycle: p -> q -> p "):
        run_tasks(tasks, max_concurrent=4)


def test_duplicate_key_is_a_value_error() -> None:
    tasks = [Task("a", (), never_called("a")), Task("a", (), never_called("a"))]
    with pytest.raises(ValueError, match="duplicate task key 'a'"):
        run_tasks(tasks, max_concurrent=1)


def test_unknown_dep_is_a_value_error_with_a_suggestion() -> None:
    tasks = [Task("train", (), never_called("a")), Task("eval", ("trian",), never_called("b"))]
    with pytest.raises(ValueError, match=r"'eval' depends on 'trian'.*did you mean 'train'"):
        run_tasks(tasks, max_concurrent=1)


@pytest.mark.parametrize("max_concurrent", [0, -1])
def test_max_concurrent_below_one_is_a_value_error(max_concurrent: int) -> None:
    with pytest.raises(ValueError, match="max_concurrent"):
        run_tasks([Task("a", (), never_called("a"))], max_concurrent=max_concurrent)


def test_no_tasks_is_an_empty_report() -> None:
    assert run_tasks([], max_concurrent=1) == Report({}, interrupted=False)


# --- Ctrl-C and cancellation ----------------------------------------------------------------


def test_ctrl_c_cancels_unstarted_tasks_and_records_the_running_one() -> None:
    cancel = threading.Event()

    def waiter() -> str:
        _thread.interrupt_main()
        return "noticed cancel" if cancel.wait(60) else "cancel never came"

    tasks = [
        Task("waiter", (), waiter),
        Task("after", ("waiter",), never_called("after")),
        Task("other", (), never_called("other")),
    ]
    done: list[str] = []
    report = run_interrupted(
        tasks, max_concurrent=1, cancel=cancel, on_done=lambda r: done.append(r.key)
    )
    assert report.interrupted
    assert cancel.is_set()
    assert report.results["waiter"] == Result("waiter", Outcome.SUCCEEDED, "noticed cancel")
    assert outcomes(report) == {
        "waiter": Outcome.SUCCEEDED,
        "after": Outcome.CANCELLED,
        "other": Outcome.CANCELLED,
    }
    assert done[0] == "waiter" and sorted(done[1:]) == ["after", "other"]
    assert signal.set_wakeup_fd(-1) == -1  # the runner restored the wake-up fd


def test_ctrl_c_without_a_cancel_event_still_cancels_the_rest() -> None:
    def interrupt() -> str:
        _thread.interrupt_main()
        return "returned"

    tasks = [Task("a", (), interrupt), Task("b", ("a",), never_called("b"))]
    report = run_interrupted(tasks, max_concurrent=1)
    assert report.interrupted
    assert report.results["b"].outcome is Outcome.CANCELLED


def test_a_task_still_running_after_grace_is_cancelled() -> None:
    release = threading.Event()

    def stubborn() -> str:
        _thread.interrupt_main()
        release.wait(60)  # ignores cancel
        return "too late"

    try:
        report = run_interrupted([Task("stubborn", (), stubborn)], max_concurrent=1, grace=0.2)
    finally:
        release.set()
    assert report.interrupted
    assert report.results["stubborn"] == Result("stubborn", Outcome.CANCELLED)


def test_second_ctrl_c_stops_waiting_for_running_tasks() -> None:
    cancel = threading.Event()
    release = threading.Event()

    def stubborn() -> None:
        _thread.interrupt_main()
        cancel.wait(60)
        _thread.interrupt_main()
        release.wait(60)

    started = time.monotonic()
    try:
        report = run_interrupted(
            [Task("stubborn", (), stubborn)], max_concurrent=1, cancel=cancel, grace=600
        )
    finally:
        release.set()
    assert time.monotonic() - started < 30  # sanity: far less than the grace period
    assert report.interrupted
    assert report.results["stubborn"].outcome is Outcome.CANCELLED


def test_cancel_set_by_another_thread_stops_the_run_promptly() -> None:
    cancel = threading.Event()
    release = threading.Event()

    def sets_cancel_elsewhere() -> str:
        threading.Thread(target=cancel.set).start()
        release.wait(60)  # ignores cancel: only a woken scheduler can end the run
        return "too late"

    tasks = [
        Task("a", (), sets_cancel_elsewhere),
        Task("b", ("a",), never_called("b")),
        Task("c", (), never_called("c")),
    ]
    started = time.monotonic()
    try:
        report = run_tasks(tasks, max_concurrent=1, cancel=cancel, grace=0.2)
    finally:
        release.set()
    assert time.monotonic() - started < 30  # sanity: not the 60 s the task would wait
    assert report.interrupted
    assert outcomes(report) == dict.fromkeys("abc", Outcome.CANCELLED)


def test_cancel_set_before_the_run_starts_nothing() -> None:
    cancel = threading.Event()
    cancel.set()
    tasks = [Task("a", (), never_called("a")), Task("b", ("a",), never_called("b"))]
    report = run_tasks(tasks, max_concurrent=1, cancel=cancel)
    assert report.interrupted
    assert outcomes(report) == dict.fromkeys("ab", Outcome.CANCELLED)


def test_a_stopped_run_says_at_once_which_tasks_it_waits_for_and_how_long() -> None:
    cancel = threading.Event()
    release = threading.Event()
    told: list[tuple[list[str], float, float]] = []
    started = time.monotonic()

    def stubborn() -> None:
        cancel.set()
        release.wait(60)  # ignores cancel: the runner waits out its grace for it

    tasks = [
        Task("stubborn", (), stubborn),
        Task("quick", (), lambda: None),
        Task("later", ("stubborn",), never_called("later")),
    ]
    try:
        report = run_tasks(
            tasks, max_concurrent=2, cancel=cancel, grace=0.3,
            on_stop=lambda keys, grace: told.append((keys, grace, time.monotonic() - started)),
        )  # fmt: skip
    finally:
        release.set()
    assert report.interrupted
    ((keys, grace, when),) = told  # once, before the grace period
    assert "stubborn" in keys and "later" not in keys and grace == 0.3
    assert when < 0.3
    assert report.results["stubborn"].outcome is Outcome.CANCELLED

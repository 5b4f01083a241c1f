"""One contract suite for the store primitives, the lease lock and the status commits, run on
every store kind."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

from confpipe.cancel import CancelScope
from confpipe.engine.cache import Records
from confpipe.engine.lock import Holder, Lease, LockOptions, _heartbeat, try_acquire
from confpipe.engine.spec import StepSpec
from confpipe.engine.status import StepState, lease_path, read_status
from confpipe.errors import LeaseLost
from confpipe.storage import Blob, Store, store_for
from tests import stepfns
from tests.storeclock import ClockedStore
from tests.waits import eventually

LEASE = LockOptions()  # the defaults (30 s, 90 s): time passes on the store's clock
FAST = LockOptions(heartbeat_interval=0.05, lease_timeout=0.5)  # real heartbeats


@pytest.fixture(params=["local", "memory", pytest.param("gs", marks=pytest.mark.slow)])
def root(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[str]:
    if request.param == "local":
        yield str(tmp_path)
    elif request.param == "memory":
        yield f"memory://contract-{uuid.uuid4().hex}"
    else:  # fake-gcs-server (tests/conftest.py)
        yield str(request.getfixturevalue("gs_prefix"))


def store(root: str) -> Store:
    return store_for(root)


# -- primitives ---------------------------------------------------------------------------


def test_create_if_absent(root: str) -> None:
    s, path = store(root), f"{root}/a/obj"
    assert s.read(path) is None
    v = s.create(path, b"one")
    assert v is not None
    assert s.create(path, b"two") is None
    blob = s.read(path)
    assert blob is not None and blob.data == b"one" and blob.version == v


def test_compare_and_swap(root: str) -> None:
    s, path = store(root), f"{root}/obj"
    assert s.replace(path, b"x", "nope") is None
    v1 = s.create(path, b"one")
    assert v1 is not None
    v2 = s.replace(path, b"two", v1)
    assert v2 is not None and v2 != v1
    assert s.replace(path, b"three", v1) is None  # stale version loses
    blob = s.read(path)
    assert blob is not None and blob.data == b"two"


def test_delete_only_if_version_matches(root: str) -> None:
    s, path = store(root), f"{root}/obj"
    v1 = s.create(path, b"one")
    assert v1 is not None
    v2 = s.replace(path, b"two", v1)
    assert v2 is not None
    assert not s.delete(path, v1)
    assert s.delete(path, v2)
    assert s.read(path) is None


def test_racing_creates_have_one_winner(root: str) -> None:
    s, path = store(root), f"{root}/race"
    wins: list[bytes] = []
    barrier = threading.Barrier(8)

    def go(i: int) -> None:
        barrier.wait()
        if s.create(path, str(i).encode()) is not None:
            wins.append(str(i).encode())

    threads = [threading.Thread(target=go, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    blob = s.read(path)
    assert len(wins) == 1 and blob is not None and blob.data == wins[0]


def test_read_many_reads_like_read(root: str) -> None:
    s = store(root)
    paths = [f"{root}/many/{i}" for i in range(5)]
    for path in paths[:3]:
        s.write(path, path.encode())
    many, one = s.read_many(paths), [s.read(p) for p in paths]
    assert [b is None for b in many] == [False, False, False, True, True]
    for got, exact in zip(many[:3], one[:3], strict=True):
        assert got is not None and exact is not None
        assert (got.data, got.version) == (exact.data, exact.version)
        assert exact.mtime <= got.mtime <= exact.mtime + 1  # rounded up, if at all


def test_store_timestamps_track_writes(root: str) -> None:
    s, path = store(root), f"{root}/t"
    s.write(path, b"1")
    blob = s.read(path)
    assert blob is not None and abs(s.now() - blob.mtime) < 5


# -- lease lock: time passes on the store's clock (tests/storeclock.py), not in sleeps -----


@pytest.fixture
def clock(root: str) -> ClockedStore:
    return ClockedStore(store(root))


def acquire(s: Store, root: str, owner: str, options: LockOptions = LEASE) -> Lease | Holder:
    return try_acquire(s, "step", f"{root}/out", owner, options, CancelScope())


def test_second_launch_sees_the_holder(root: str, clock: ClockedStore) -> None:
    lease = acquire(clock, root, "launch-a")
    assert isinstance(lease, Lease)
    other = acquire(clock, root, "launch-b")
    assert isinstance(other, Holder) and other.owner == "launch-a" and other.age < 1
    clock.advance(LEASE.lease_timeout - 1)  # no heartbeat yet, but not stale either
    other = acquire(clock, root, "launch-b")
    assert isinstance(other, Holder) and other.owner == "launch-a"
    lease.release()
    again = acquire(clock, root, "launch-b")
    assert isinstance(again, Lease)
    again.release()


def test_heartbeat_keeps_the_lease_beyond_its_timeout(root: str, clock: ClockedStore) -> None:
    lease = acquire(clock, root, "launch-a", FAST)
    assert isinstance(lease, Lease)
    for _ in range(3):  # a timeout passes on the store's clock; the real heartbeat renews
        clock.advance(FAST.lease_timeout)
        heartbeats(clock, lease, 2)  # the second surely went out after the advance
        holder = acquire(clock, root, "launch-b", FAST)
        assert isinstance(holder, Holder) and holder.owner == "launch-a"
    lease.fence()  # still ours
    lease.release()


def heartbeats(s: Store, lease: Lease, count: int) -> None:
    """Wait for ``count`` refreshes of ``lease``, each within its timeout in real time."""
    for _ in range(count):
        before = s.read(lease.path)
        assert before is not None

        def refreshed(before: Blob = before) -> bool:
            now = s.read(lease.path)
            return now is not None and now.version != before.version

        eventually(refreshed, "a heartbeat", seconds=lease.options.lease_timeout)


def test_stale_lease_is_taken_over_by_exactly_one(root: str, clock: ClockedStore) -> None:
    # a launch that died: its lease record exists but nobody heartbeats it
    assert clock.create(lease_path(f"{root}/out"), b'{"owner": "dead"}') is not None
    clock.advance(LEASE.lease_timeout - 1)
    assert isinstance(acquire(clock, root, "early"), Holder)
    clock.advance(2)
    got: list[Lease] = []
    barrier = threading.Barrier(6)

    def go(i: int) -> None:
        barrier.wait()
        result = acquire(clock, root, f"launch-{i}")
        if isinstance(result, Lease):
            got.append(result)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 1
    got[0].release()


def test_lost_lease_fences_and_cancels_and_release_spares_the_new_holder(
    root: str, clock: ClockedStore
) -> None:
    old = acquire(clock, root, "launch-a")
    assert isinstance(old, Lease)
    _heartbeat.remove(old)  # as if launch-a froze: no more heartbeats
    clock.advance(LEASE.lease_timeout + 1)
    froze(old, LEASE.lease_timeout + 1)  # its own clock went on too
    new = acquire(clock, root, "launch-b")
    assert isinstance(new, Lease)
    with pytest.raises(LeaseLost, match="taken over by launch-b"):
        old.fence()
    assert old.scope.wait(2) and "lease lost" in old.scope.reason
    old.release()  # must not delete launch-b's lease
    holder = acquire(clock, root, "launch-c")
    assert isinstance(holder, Holder) and holder.owner == "launch-b"
    new.release()


def froze(lease: Lease, seconds: float) -> None:
    """As if the launch holding ``lease`` was frozen for ``seconds``: its monotonic clock
    went on while no heartbeat was sent (the store's clock is advanced by the caller)."""
    lease._refreshed -= seconds


def test_a_fence_while_the_heartbeat_is_on_schedule_takes_no_round_trip(
    root: str, clock: ClockedStore
) -> None:
    lease = acquire(clock, root, "launch-a")
    assert isinstance(lease, Lease)
    before = clock.read(lease.path)
    lease.fence()  # refreshed (acquired) under heartbeat_interval ago: ours, provably
    same = clock.read(lease.path)  # not written: no refresh was sent
    assert before is not None and same is not None and same.version == before.version
    froze(lease, LEASE.heartbeat_interval)  # a beat is due: the fence refreshes the lease
    lease.fence()
    after = clock.read(lease.path)
    assert after is not None and after.version != before.version
    lease.release()


class AnswerLost(ClockedStore):
    """The next ``replace`` lands, but its answer is lost (a server frozen past the client's
    retry window applies it when it wakes): the caller gets a ConnectionError."""

    lose_next = False

    def replace(self, path: str, data: bytes, version: str) -> str | None:
        landed = super().replace(path, data, version)
        if self.lose_next:
            self.lose_next = False
            raise ConnectionError("no answer within the retry window")
        return landed


def test_a_heartbeat_that_landed_unanswered_keeps_the_lease(root: str) -> None:
    lossy = AnswerLost(store(root))
    lease = acquire(lossy, root, "launch-a")
    assert isinstance(lease, Lease)
    _heartbeat.remove(lease)  # this test beats by hand
    lossy.lose_next = True
    assert lease.refresh()  # failed, as far as it knows: retried later
    assert lease.refresh() and not lease.is_lost()  # its own late write, adopted
    holder = acquire(lossy, root, "launch-b")
    assert isinstance(holder, Holder) and holder.owner == "launch-a"
    lease.release()


def test_a_takeover_after_an_unanswered_heartbeat_still_loses_the_lease(root: str) -> None:
    lossy = AnswerLost(store(root))
    lease = acquire(lossy, root, "launch-a")
    assert isinstance(lease, Lease)
    _heartbeat.remove(lease)
    lossy.lose_next = True
    assert lease.refresh()
    lossy.advance(LEASE.lease_timeout + 1)  # launch-a's heartbeats stop reaching the store
    taker = acquire(lossy, root, "launch-b")
    assert isinstance(taker, Lease)
    assert not lease.refresh() and lease.lost is not None and "launch-b" in lease.lost
    taker.release()


# -- status commits: a launch that lost its lease between its fence and its write ----------


def records(root: str, owner: str) -> Records:
    return Records(store(root), StepSpec("s", stepfns.add, {"a": 1, "b": 2}), owner)


def test_a_late_commit_after_a_takeover_is_refused(root: str) -> None:
    out = f"{root}/s"
    paused, taker = records(root, "launch-a"), records(root, "launch-b")
    assert paused.status(out) is None and paused.begin(out)
    assert taker.status(out) is not None and taker.begin(out)  # took the lease, RUNNING
    with pytest.raises(LeaseLost, match="did not commit it"):
        paused.succeed(out, 1, fence=lambda: None)  # its fence passed just before the pause
    paused.fail(out, RuntimeError("late"), fence=lambda: None)  # nor can it record a failure
    status = read_status(store(root), out)
    assert status is not None and status.state is StepState.RUNNING
    assert status.worker == "launch-b"
    taker.succeed(out, 3, fence=lambda: None)
    status = read_status(store(root), out)
    assert status is not None and status.state is StepState.SUCCESS
    assert status.worker == "launch-b"


def test_a_takeover_that_a_late_commit_beat_finds_the_step_done(root: str) -> None:
    out = f"{root}/s"
    paused, taker = records(root, "launch-a"), records(root, "launch-b")
    paused.status(out)
    assert paused.begin(out)
    assert not taker.done(out)  # launch-b sees launch-a's RUNNING, then launch-a commits
    paused.succeed(out, 3, fence=lambda: None)
    assert not taker.begin(out)  # so launch-b does not overwrite the commit...
    assert taker.done(out)  # ...and finds the step done when it checks again
    status = read_status(store(root), out)
    assert status is not None and status.state is StepState.SUCCESS
    assert status.worker == "launch-a"


def test_an_interruption_after_the_commit_leaves_it_committed(root: str) -> None:
    out = f"{root}/s"
    launch = records(root, "launch-a")
    launch.status(out)
    assert launch.begin(out)
    launch.succeed(out, 3, fence=lambda: None)
    # Ctrl-C lands before the lease is released: abandon_held records the held steps
    launch.fail(out, KeyboardInterrupt(), fence=lambda: None, interrupted=True)
    status = read_status(store(root), out)
    assert status is not None and status.state is StepState.SUCCESS

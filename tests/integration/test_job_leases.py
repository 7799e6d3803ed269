"""Job leases and lanes (SPEC 8, 19): a live run renews its lease and is never taken over, a dead worker's
run is reaped and the next run catches up, a reaped run's late finish changes nothing, and a long job does
not hold up a short one that is due. Time is a FakeClock. Threads are waited for on Events, joins and
polled conditions with generous timeouts; no duration is asserted."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import NOW_MS, STAFF
from tests.helpers import ev, wait_for
from voicemon.clock import FakeClock
from voicemon.domain.records import RunRecord
from voicemon.domain.schedule import previous_fire
from voicemon.domain.timeutil import HOUR_MS, MINUTE_MS, floor_to, format_time
from voicemon.errors import StorageError
from voicemon.jobs import JobDefinition, JobRunner, build_runner
from voicemon.service import Services
from voicemon.settings import Settings
from voicemon.storage import jobs as job_store
from voicemon.storage import snapshots as snapshot_store

LEASE_S = 30
LEASE_MS = LEASE_S * 1000
WAIT_S = 60.0  # generous: only ever reached when something is broken
ONCE_A_DAY = "0 0 * * *"  # its one tick of the test's day is 00:00; nothing else fires meanwhile


@dataclass
class Gate:
    """A job body that blocks until released, as a long run does."""

    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def run(self, _target_ms: int | None) -> dict[str, Any]:
        self.entered.set()
        if not self.release.wait(WAIT_S):
            raise RuntimeError("never released")
        return {"released": True}


@pytest.fixture
def lease_settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, key_cache_s=0, job_lease_s=LEASE_S, scheduler_poll_s=0.02)


@pytest.fixture
def workers(lease_settings: Settings, clock: FakeClock) -> Iterator[tuple[Services, Services]]:
    """Two workers (two engines) on one database, on one clock."""
    pair = (Services(lease_settings, clock), Services(lease_settings, clock))
    for svc in pair:
        svc.start()
    yield pair
    for svc in pair:
        svc.stop()


def _stored(services: Services, run_id: str) -> RunRecord:
    with services.db.read() as conn:
        return job_store.get_run(conn, run_id)


def _runs_of(services: Services, name: str) -> list[RunRecord]:
    with services.db.read() as conn:
        return job_store.list_runs(conn, name, 100)


def _lease_until(services: Services, run_id: str, until_ms: int) -> Callable[[], bool]:
    return lambda: _stored(services, run_id).lease_until_ms == until_ms


def _actions(caplog: pytest.LogCaptureFixture, action: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "action", None) == action]


def _tick(runner: JobRunner) -> list[RunRecord]:
    started = runner.tick()
    assert runner.flush(WAIT_S)
    return started


class _ByHand:
    """``run_now`` in a thread of its own, as an HTTP request or the CLI would run it."""

    def __init__(self, runner: JobRunner, name: str) -> None:
        self.result: list[RunRecord] = []
        self._thread = threading.Thread(target=lambda: self.result.append(runner.run_now(STAFF, name)))
        self._thread.start()

    def join(self) -> RunRecord:
        self._thread.join(WAIT_S)
        assert not self._thread.is_alive()
        (record,) = self.result
        return record


def _start_long_run(
    how: str, runner: JobRunner, services: Services, gate: Gate
) -> tuple[str, _ByHand | None]:
    """Start the gated job on ``runner`` (scheduled or by hand); its run_id once its body is working."""
    by_hand = None
    if how == "scheduled":
        (started,) = runner.tick()
        run_id = started.run_id
    else:
        by_hand = _ByHand(runner, "long")
    assert gate.entered.wait(WAIT_S)
    if by_hand is not None:
        (record,) = _runs_of(services, "long")
        run_id = record.run_id
    return run_id, by_hand


def _finish_long_run(
    runner: JobRunner, services: Services, run_id: str, by_hand: _ByHand | None
) -> RunRecord:
    if by_hand is not None:
        returned = by_hand.join()
        assert returned == _stored(services, run_id)
        return returned
    assert runner.flush(WAIT_S)
    return _stored(services, run_id)


# --- a live run keeps its lease ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["scheduled", "by_hand"])
def test_a_run_longer_than_its_lease_is_not_reaped_while_it_renews(
    how: str, workers: tuple[Services, Services], lease_settings: Settings, clock: FakeClock
) -> None:
    gate = Gate()
    runner = JobRunner(workers[0].db, clock, lease_settings, [JobDefinition("long", ONCE_A_DAY, gate.run)])
    # Another worker, with a job of its own: each of its ticks reaps whatever lease ran out.
    other = JobRunner(
        workers[1].db, clock, lease_settings, [JobDefinition("quick", ONCE_A_DAY, lambda _: {})]
    )
    run_id, by_hand = _start_long_run(how, runner, workers[0], gate)

    for _ in range(8):  # four lease lengths, half a lease at a time
        clock.advance(LEASE_MS // 2)
        wait_for(
            _lease_until(workers[0], run_id, clock.now_ms() + LEASE_MS),
            WAIT_S,
            "the heartbeat to renew the lease from the clock",
        )
        _tick(other)
        stored = _stored(workers[1], run_id)
        assert (stored.status, stored.owner) == ("running", runner.owner)

    assert clock.now_ms() - NOW_MS == 4 * LEASE_MS
    gate.release.set()
    final = _finish_long_run(runner, workers[0], run_id, by_hand)
    assert final.status == "succeeded", final.error
    assert (final.summary, final.finished_ms, final.lease_until_ms) == (
        '{"released":true}',
        clock.now_ms(),
        None,
    )
    assert [r.run_id for r in _runs_of(workers[0], "long")] == [run_id]  # nobody ran it a second time


# --- a dead worker's run ----------------------------------------------------------------------------------


def test_a_run_whose_worker_died_is_reaped_and_the_next_run_catches_up(
    workers: tuple[Services, Services], clock: FakeClock
) -> None:
    dead, survivor = workers
    hour = floor_to(NOW_MS, HOUR_MS) - HOUR_MS  # 01:00, complete since 02:00
    batch = [ev("artifact_received", f"dw{i}", hour + (10 + i) * MINUTE_MS) for i in range(3)]
    assert dead.ingest_blocking(batch, STAFF).accepted == 3
    schedule = dead.settings.schedule_aggregate_hourly
    now = clock.now_ms()
    # The dead worker inserted and claimed the 02:30 tick, then died before its run began.
    with dead.db.write() as conn:
        assert job_store.insert_tick(conn, "dead-run", "aggregate-hourly", previous_fire(schedule, now))
        claimed = job_store.claim_next(conn, "dead-worker", now, now + LEASE_MS, "aggregate-hourly")
    assert claimed is not None
    assert claimed.run_id == "dead-run"
    runner = build_runner(survivor)

    clock.advance(LEASE_MS)  # a lease exactly at now is still held
    _tick(runner)
    assert _stored(survivor, "dead-run").status == "running"

    clock.advance(1)
    _tick(runner)
    reaped = _stored(survivor, "dead-run")
    assert (reaped.status, reaped.finished_ms) == ("failed", clock.now_ms())
    assert reaped.error == "the worker running it stopped (lease expired)"
    with survivor.db.read() as conn:
        assert snapshot_store.load_rows(conn, "hourly", hour, hour + 1, "") == []  # not run again meanwhile

    clock.set(floor_to(NOW_MS, HOUR_MS) + HOUR_MS + 30 * MINUTE_MS)  # 03:30: the next scheduled run
    done = {r.name: _stored(survivor, r.run_id) for r in _tick(runner)}
    catch_up = done["aggregate-hourly"]
    assert catch_up.status == "succeeded", catch_up.error
    assert catch_up.summary is not None
    assert format_time(hour) in catch_up.summary
    with survivor.db.read() as conn:
        (row,) = snapshot_store.load_rows(conn, "hourly", hour, hour + 1, "")
    assert row.parts.received == 3
    assert _stored(survivor, "dead-run") == reaped


# --- a stalled worker's late finish -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["scheduled", "by_hand"])
def test_a_reaped_runs_late_finish_does_not_overwrite_its_failed_record(
    how: str,
    workers: tuple[Services, Services],
    lease_settings: Settings,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    stalled = threading.Event()
    real_renew = job_store.renew_lease

    def renew(*args: Any) -> bool:
        if stalled.is_set():
            raise StorageError("database write failed: OperationalError")
        return real_renew(*args)

    monkeypatch.setattr(job_store, "renew_lease", renew)
    gate = Gate()
    runner = JobRunner(workers[0].db, clock, lease_settings, [JobDefinition("long", ONCE_A_DAY, gate.run)])
    other = JobRunner(workers[1].db, clock, lease_settings, [])
    run_id, by_hand = _start_long_run(how, runner, workers[0], gate)

    # The worker stalls (its renewals no longer reach the database) past its lease: the other reaps it.
    stalled.set()
    clock.advance(LEASE_MS + 1)
    _tick(other)
    reaped = _stored(workers[1], run_id)
    assert (reaped.status, reaped.finished_ms, reaped.summary) == ("failed", clock.now_ms(), None)

    # It comes back: its heartbeat finds the run no longer its own, and its finish is refused.
    stalled.clear()
    wait_for(lambda: bool(_actions(caplog, "lease_lost")), WAIT_S, "the heartbeat to see the loss")
    clock.advance(MINUTE_MS)
    gate.release.set()
    final = _finish_long_run(runner, workers[0], run_id, by_hand)
    assert final == reaped
    assert _stored(workers[0], run_id) == reaped
    lost = [
        (getattr(r, "run_id", None), getattr(r, "refused_status", None)) for r in _actions(caplog, "run_lost")
    ]
    assert lost == [(run_id, "succeeded")]


# --- lanes ------------------------------------------------------------------------------------------------


def test_a_long_job_does_not_hold_up_a_short_one_that_is_due(services: Services, clock: FakeClock) -> None:
    gate = Gate()
    short_ran: list[int] = []

    def short(_target_ms: int | None) -> dict[str, Any]:
        short_ran.append(clock.now_ms())
        return {"ok": True}

    jobs = [
        JobDefinition("long-cleanup", "*/10 * * * *", gate.run),
        JobDefinition("evaluate", "*/5 * * * *", short),
    ]
    runner = JobRunner(services.db, clock, services.settings, jobs)  # a lease of 15 minutes
    started = {r.name: r for r in runner.tick()}  # 02:40: both are due
    assert set(started) == {"long-cleanup", "evaluate"}
    assert gate.entered.wait(WAIT_S)
    long_id = started["long-cleanup"].run_id

    def short_done(run_id: str) -> Callable[[], bool]:
        return lambda: _stored(services, run_id).status == "succeeded"

    wait_for(short_done(started["evaluate"].run_id), WAIT_S, "the short job to run beside the long one")
    assert _stored(services, long_id).status == "running"

    # Two more due ticks of the short job while the long one still works; the busy lane takes nothing.
    for _ in range(2):
        clock.advance(5 * MINUTE_MS)
        (again,) = runner.tick()
        assert again.name == "evaluate"
        wait_for(short_done(again.run_id), WAIT_S, "the next short tick to run too")
    assert short_ran == [NOW_MS, NOW_MS + 5 * MINUTE_MS, NOW_MS + 10 * MINUTE_MS]
    assert [(r.run_id, r.status) for r in _runs_of(services, "long-cleanup")] == [(long_id, "running")]

    gate.release.set()
    assert runner.flush(WAIT_S)
    assert _stored(services, long_id).status == "succeeded"
    # Free again, the long job's lane takes its latest due tick (02:50), as after downtime.
    (caught_up,) = _tick(runner)
    assert (caught_up.name, caught_up.scheduled_for_ms) == ("long-cleanup", NOW_MS + 10 * MINUTE_MS)
    assert _stored(services, caught_up.run_id).status == "succeeded"


# --- the store's guards -----------------------------------------------------------------------------------


def test_renewal_and_finish_are_guarded_by_owner_and_state(services: Services) -> None:
    now = NOW_MS
    with services.db.write() as conn:
        assert job_store.insert_tick(conn, "r1", "job", now)
        assert job_store.claim_next(conn, "w1", now, now + LEASE_MS, "other-job") is None
        claimed = job_store.claim_next(conn, "w1", now, now + LEASE_MS, "job")
        assert claimed is not None
        assert (claimed.status, claimed.owner, claimed.lease_until_ms) == ("running", "w1", now + LEASE_MS)
        assert job_store.claim_next(conn, "w2", now, now + LEASE_MS, "job") is None  # taken

        # Another worker can neither renew nor finish it.
        assert not job_store.renew_lease(conn, "r1", "w2", now + 5 * LEASE_MS)
        assert job_store.finish(conn, "r1", "w2", job_store.SUCCEEDED, now, "{}", None) is None
        assert job_store.get_run(conn, "r1") == claimed

        # Its owner renews it, so the lease it had is no reason to reap it.
        assert job_store.renew_lease(conn, "r1", "w1", now + 2 * LEASE_MS)
        assert job_store.reap_expired(conn, now + LEASE_MS + 1) == 0
        assert job_store.reap_expired(conn, now + 2 * LEASE_MS + 1) == 1

        # Reaped, it is no longer its owner's either.
        reaped = job_store.get_run(conn, "r1")
        assert reaped.status == "failed"
        assert not job_store.renew_lease(conn, "r1", "w1", now + 9 * LEASE_MS)
        assert job_store.finish(conn, "r1", "w1", job_store.SUCCEEDED, now, "{}", None) is None
        assert job_store.get_run(conn, "r1") == reaped

        # A run is finished once.
        assert job_store.insert_tick(conn, "r2", "job", now + HOUR_MS)
        assert job_store.claim_next(conn, "w1", now, now + LEASE_MS, "job") is not None
        done = job_store.finish(conn, "r2", "w1", job_store.SUCCEEDED, now + 1, '{"n":1}', None)
        assert done is not None
        assert (done.status, done.finished_ms, done.summary, done.lease_until_ms) == (
            "succeeded",
            now + 1,
            '{"n":1}',
            None,
        )
        assert job_store.finish(conn, "r2", "w1", job_store.FAILED, now + 2, None, "late") is None
        assert job_store.get_run(conn, "r2") == done

"""Coordinators' releases read forward in one go or in small steps: the same cuts and the same
people, with each participant's key and each release's people worked out once."""

from __future__ import annotations

import random
from datetime import UTC
from typing import Any

import pytest

from services.analytics.answers import release as release_module
from services.analytics.answers.release import Cut, Releases
from services.analytics.answers.suppression import cell_keys, record_key
from services.analytics.projection.engages import keys_of
from services.analytics.projection.memory import MemoryProjection
from shared.events import Envelope
from shared.plan import shipped_plans
from tests import factories as f

PLAN = shipped_plans()["shfa-2018"]
SECRET = b"s" * 32
EVERY = 5


def log(n: int, seed: int) -> list[tuple[int, Envelope]]:
    """``n`` events in log order: new and returning participants, anonymous surveys, gatherings
    and withdrawals."""
    rng = random.Random(seed)
    known: list[str] = []
    out: list[Envelope] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.4:
            out.append(f.survey(f.random_profile(rng)))
        elif r < 0.85 or not known:
            who = rng.choice(known) if known and rng.random() < 0.3 else f.ref()
            known.append(who)
            out.append(f.interview(who, f.random_profile(rng)))
        elif r < 0.92:
            out.append(f.gathering(rng.randint(8, 20), [f.random_profile(rng) for _ in range(rng.randint(0, 4))]))
        else:
            out.append(f.withdrawn(known.pop(rng.randrange(len(known)))))
    return list(enumerate(out, start=1))


def cut_as_before(events: list[tuple[int, Envelope]], every: int) -> tuple[Any, ...]:
    """The release as it was made before: the projection fed and the people made at every cut."""
    memory, pending, touched, cut = MemoryProjection(UTC), [], set(), (0, 0, (), None, None)
    for seq, event in events:
        pending.append((seq, event))
        touched |= keys_of([event])
        if len(touched) >= every:
            memory.feed(pending)
            pending, touched = [], set()
            first, last = memory.times.get("shfa-2018", (None, None))
            members = tuple((record_key(SECRET, p), s) for p, s in memory.participants("shfa-2018"))
            cut = (seq, cut[1] + 1, members, first, last)
    return cut


def seen(cut: Cut) -> tuple[Any, ...]:
    return cut.sequence, cut.number, cut.members, cut.first_event, cut.last_event


def releases() -> Releases:
    return Releases("shfa-2018", SECRET, EVERY, UTC)


def test_a_refresh_across_many_cuts_makes_the_release_that_small_steps_and_the_former_reading_make() -> None:
    """One take of the whole log ends at the same cut, with the same people, as one event at a time."""
    events = log(700, seed=3)
    whole, stepwise = releases(), releases()
    whole.take(events, events[-1][0])
    for pair in events:
        stepwise.take([pair], pair[0])
        stepwise.release()
    assert whole.release().number > 100
    assert seen(whole.release()) == seen(stepwise.release()) == cut_as_before(events, EVERY)
    assert whole.released(None, PLAN).keys == stepwise.released(None, PLAN).keys


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_refreshes_of_any_size_stop_at_the_cuts_the_log_decides(seed: int) -> None:
    """Reading forward in uneven steps, each release is the one the log up to there makes."""
    events = log(400, seed=seed)
    rng, steps, at = random.Random(seed), releases(), 0
    while at < len(events):
        step = rng.choice([1, 2, 7, 30, 150])
        steps.take(events[at : at + step], events[min(at + step, len(events)) - 1][0])
        at += step
        assert seen(steps.release()) == cut_as_before(events[:at], EVERY)


def test_a_first_refresh_works_out_each_key_and_the_release_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Linear work: an HMAC per participant, and the people listed once per refresh, not per cut."""
    events = log(1500, seed=9)
    hmacs: list[str] = []
    listings: list[str] = []

    def counted_key(secret: bytes, participant: str) -> int:
        hmacs.append(participant)
        return record_key(secret, participant)

    listed = MemoryProjection.participants

    def counted_listing(self: MemoryProjection, process_id: str) -> Any:
        listings.append(process_id)
        return listed(self, process_id)

    monkeypatch.setattr(release_module, "record_key", counted_key)
    monkeypatch.setattr(MemoryProjection, "participants", counted_listing)
    rel = releases()
    for start in range(0, len(events), 100):  # as a refresh takes them, batch by batch
        rel.take(events[start : start + 100], events[min(start + 100, len(events)) - 1][0])
    cut = rel.release()
    assert cut.number > 200
    assert len(hmacs) == len(set(hmacs)) == len({p for _, p in keys_of(e for _, e in events)})
    assert listings == ["shfa-2018"]
    assert rel.release() is cut and listings == ["shfa-2018"]  # asked again: the same release, not made again


def test_events_short_of_a_cut_change_nothing_coordinators_see() -> None:
    """Fewer than ``every`` participants changed since the last cut: the same release."""
    rel, seq = releases(), 0

    def one_more() -> bool:
        nonlocal seq
        seq += 1
        return rel.take([(seq, f.interview())], seq)

    while not one_more():
        pass
    cut = rel.release()
    assert cut.sequence == seq
    assert not any(one_more() for _ in range(EVERY - 1))
    assert rel.release() is cut
    assert one_more() and rel.release().number == cut.number + 1


def test_the_whole_process_keys_kept_member_by_member_are_the_keys_of_all_members() -> None:
    """Summed as people arrive, change and withdraw, the cell keys are those counted afresh."""
    events = log(1200, seed=6)
    rng, at = random.Random(6), 0
    with_plan, without = releases(), releases()  # a process has one plan: answers are kept by release only
    while at < len(events):
        step = rng.choice([3, 40, 200])
        for rel, plan in ((with_plan, PLAN), (without, None)):
            rel.take(events[at : at + step], events[min(at + step, len(events)) - 1][0])
            assert rel.released(None, plan).keys == cell_keys(rel.release().members, plan, UTC)
        at += step

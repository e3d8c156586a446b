"""When the queue says a place will be free (the Retry-After of a 429)."""

from __future__ import annotations

import pytest

from wbc_ray.serve._queue import DEFAULT_JOB_S, finish_times


def test_running_jobs_end_a_typical_job_after_they_started() -> None:
    # Jobs take 10 s; one started 4 s ago, one 9 s ago: 6 s and 1 s left.
    assert finish_times([96.0, 91.0], 0, 2, [10.0, 10.0, 30.0], now=100.0) == [6.0, 1.0]


def test_queued_jobs_take_the_first_free_slot_in_order() -> None:
    # One slot, a job with 6 s left, two waiting: they end at 16 and 26 s.
    assert finish_times([96.0], 2, 1, [10.0], now=100.0) == [6.0, 16.0, 26.0]
    # Two slots, one idle: the first waiting job starts at once, the second when 6 s have passed.
    assert finish_times([96.0], 2, 2, [10.0], now=100.0) == [6.0, 10.0, 16.0]


def test_an_overdue_job_is_still_due_and_no_history_falls_back() -> None:
    assert finish_times([0.0], 0, 1, [10.0], now=100.0) == [1.0]  # overdue: soon, not in the past
    assert finish_times([], 1, 1, [], now=0.0) == [DEFAULT_JOB_S]


def test_more_running_than_slots_frees_a_slot_only_as_the_surplus_ends() -> None:
    # The setting went from 3 to 1 with three running (2, 5, 8 s left): the next starts at 8 s.
    ends = finish_times([92.0, 95.0, 98.0], 1, 1, [10.0], now=100.0)
    assert ends == pytest.approx([2.0, 5.0, 8.0, 18.0])

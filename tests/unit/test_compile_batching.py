"""The batching choice: the most throughput whose predicted p99 stays in the budget."""

from __future__ import annotations

import pytest

from visionfleet_compile.batching import ProfilePoint, choose_batching, predicted_p99_ms

# A CPU-like profile: bigger batches amortise overhead, latency grows with the batch.
PROFILE = [
    ProfilePoint(1, 2.0, 2.5, 400),
    ProfilePoint(2, 3.0, 3.6, 650),
    ProfilePoint(4, 5.0, 5.8, 800),
    ProfilePoint(8, 9.0, 10.5, 880),
    ProfilePoint(16, 18.0, 21.0, 890),
]


@pytest.mark.parametrize(
    ("budget", "batch", "delay_us"),
    [
        pytest.param(50, 16, 2000, id="generous: biggest batch, queue delay at most batch 1's p50"),
        pytest.param(25, 8, 2000, id="batch 16 would need 42 ms"),
        pytest.param(12, 4, 200, id="tight"),
        pytest.param(5, 1, 0, id="only batch 1 fits: no queue delay"),
    ],
)
def test_best_throughput_within_budget(budget, batch, delay_us):
    c = choose_batching(PROFILE, budget)
    assert c.within_budget and c.max_batch_size == batch and c.preferred_batch_sizes == (batch,)
    assert c.max_queue_delay_microseconds == delay_us
    assert c.predicted_p99_ms <= budget


def test_nothing_fits_serves_the_fastest_and_says_so():
    c = choose_batching(PROFILE, 3)
    assert not c.within_budget and c.max_batch_size == 1 and c.max_queue_delay_microseconds == 0
    assert "no measured setting fits 3 ms" in c.reason


def test_multi_instance_points_can_win():
    profile = PROFILE + [ProfilePoint(4, 6.0, 7.0, 1400, instances=2)]
    c = choose_batching(profile, 20)
    assert (c.max_batch_size, c.instance_count) == (4, 2)


def test_queue_delay_is_capped():
    c = choose_batching([ProfilePoint(1, 500, 500, 2), ProfilePoint(2, 600, 600, 3.3)], 10_000)
    assert c.max_queue_delay_microseconds == 100_000


def test_queue_delay_never_exceeds_running_alone():
    c = choose_batching(PROFILE, 1000)
    assert c.max_batch_size == 16 and c.max_queue_delay_microseconds == 2000  # batch 1's p50, not 479 ms


@pytest.mark.parametrize(("profile", "budget", "message"), [([], 10, "empty latency profile"),
                                                             (PROFILE, 0, "must be positive")])
def test_bad_inputs(profile, budget, message):
    with pytest.raises(ValueError, match=message):
        choose_batching(profile, budget)


def test_prediction_counts_the_batch_in_flight_and_the_queue():
    assert predicted_p99_ms(ProfilePoint(8, 9.0, 10.5, 880), 2.0) == 23.0

"""The executor advice: a warning where an executor will not pay for itself on one node, none where it will."""

from __future__ import annotations

import pytest

from clip_ingest.connectors.ingest.executor_advice import (COSTS, ExecutorCost, crossover_files, executor_warning,
                                                            stream_warning)


def test_processes_on_a_thousand_photos_and_two_cpus_are_warned_about() -> None:
    warning = executor_warning("processes", 1000, 2)
    assert warning is not None
    assert "--executor processes" in warning and "1,000 files to read" in warning and "2 CPUs" in warning


@pytest.mark.parametrize("files", [1, 1000, 10_000_000])
def test_local_is_never_warned_about(files: int) -> None:
    assert executor_warning("local", files, 2) is None
    assert crossover_files("local", 2) == 0.0


def test_ray_is_warned_about_below_its_crossover_and_not_beyond_it() -> None:
    point = crossover_files("ray", 2)
    assert point is not None and point > 1000
    assert executor_warning("ray", 1000, 2) is not None
    assert executor_warning("ray", int(point) - 1, 2) is not None
    assert executor_warning("ray", int(point) + 1, 2) is None
    assert executor_warning("ray", 10 * int(point), 2) is None


def test_the_crossover_grows_with_the_cpus() -> None:
    """Both executors' rates scale with the CPUs, so the start-up takes more files to make up."""
    two, eight = crossover_files("ray", 2), crossover_files("ray", 8)
    assert two is not None and eight is not None and eight == pytest.approx(4 * two)
    assert executor_warning("ray", int(two) + 1, 8) is not None


def test_an_executor_that_streams_no_faster_is_warned_about_at_every_size() -> None:
    costs = {"processes": ExecutorCost(extra_start_s=2.0, speedup=1.0)}
    assert crossover_files("processes", 2, costs) is None
    for files in (1000, 10_000_000, None):  # None: not counted
        assert "no faster" in (executor_warning("processes", files, 2, costs=costs) or "")


def test_no_advice_for_a_ray_cluster_nothing_to_embed_or_an_unknown_executor() -> None:
    assert executor_warning("ray", 1000, 2, cluster=True) is None
    assert executor_warning("ray", 0, 2) is None
    assert executor_warning("threads-on-mars", 1000, 2) is None


def test_without_a_file_count_an_executor_that_may_pay_is_not_warned_about() -> None:
    assert all(cost.speedup > 1.0 for cost in COSTS.values())  # both pay from some size on
    assert executor_warning("ray", None, 2) is None and executor_warning("processes", None, 2) is None


def test_a_streamed_listing_is_counted_up_to_the_crossover_and_passed_on_whole() -> None:
    point = crossover_files("processes", 2)
    assert point is not None
    few, rest = stream_warning("processes", iter(range(1000)), 2)
    assert few is not None and "1,000 files to read" in few and list(rest) == list(range(1000))
    many = int(point) + 10
    none, rest = stream_warning("processes", iter(range(many)), 2)
    assert none is None and sum(1 for _ in rest) == many
    empty, rest = stream_warning("processes", iter([]), 2)
    assert empty is None and list(rest) == []

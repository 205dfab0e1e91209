"""The suite's shards (tests/conftest.py, tests/parallel.py): every module in exactly one shard, the
longest first onto the least loaded, and the closing counts read back from pytest's output."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from ..conftest import DURATIONS, assign_shards, parse_shard

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("parallel", ROOT / "tests" / "parallel.py")
parallel = importlib.util.module_from_spec(spec)
spec.loader.exec_module(parallel)


def test_every_module_lands_in_one_shard_and_the_load_is_balanced():
    seconds = {"a": 300, "b": 250, "c": 200, "d": 100, "e": 50, "f": 50}
    shard = assign_shards(list(seconds), seconds, 2)
    assert set(shard) == set(seconds) and set(shard.values()) == {0, 1}
    load = [sum(s for m, s in seconds.items() if shard[m] == i) for i in (0, 1)]
    assert load == [450, 500] or load == [500, 450]
    # the same modules in another order give the same assignment (two processes must agree)
    assert assign_shards(list(reversed(seconds)), seconds, 2) == shard


def test_an_unknown_module_counts_the_default_and_still_lands_somewhere():
    shard = assign_shards(["known", "new1", "new2"], {"known": 1000}, 2)
    assert shard["known"] == 0 and shard["new1"] == 1 and shard["new2"] == 1


@pytest.mark.parametrize("bad", ["", "2", "0/2", "3/2", "a/b"])
def test_a_bad_shard_is_refused_with_the_expected_form(bad):
    with pytest.raises(pytest.UsageError, match="expected i/n"):
        parse_shard(bad)


def test_the_durations_table_names_only_modules_that_exist():
    modules = json.loads(Path(DURATIONS).read_text())["modules"]
    missing = [m for m in modules if not (ROOT / m).exists()]
    assert not missing, f"tests/durations.json names modules that are gone: {missing}"
    here = {str(p.relative_to(ROOT)) for d in ("integration", "e2e") for p in (ROOT / "tests" / d).glob("test_*.py")}
    assert here <= set(modules), f"tests/durations.json lacks {sorted(here - set(modules))}"


def test_closing_counts_and_summary_read_pytest_output():
    log = ("....F.s\n=========== short test summary info ===========\nFAILED tests/x.py::t - boom\n"
           "==== 1 failed, 500 passed, 2 skipped, 3 deselected, 1 error in 80.10s (0:01:20) ====\n")
    assert parallel.closing_counts(log) == {"failed": 1, "passed": 500, "skipped": 2, "deselected": 3, "errors": 1}
    assert parallel.summary(log).startswith("=========== short test summary info")
    assert parallel.closing_counts("no summary here") == {}
    assert parallel.closing_counts("12 passed, 1 skipped in 0.88s\n") == {"passed": 12, "skipped": 1}
    assert parallel.done_tests("....F.s  [ 10%]\n..\nnot progress\ntests/unit/test_x.py ..s [ 20%]\n") == 12

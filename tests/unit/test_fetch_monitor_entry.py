"""The monitor's own model entry, <model>__monitor: its config.pbtxt (``monitor_config``) and its layout in
a local repository (``fetch.write_monitor_entry``)."""

from __future__ import annotations

import pytest

from visionfleet_compile.fetch import FetchError, write_monitor_entry
from visionfleet_contract import CONFIG_FILE, MONITOR_MODEL_SUFFIX, monitor_config, monitor_model_name, triton_config

# A model whose input is named like the model: only the top-level name may change.
MODEL = {"name": "det", "inputs": [{"name": "det", "dataType": "FP32", "dims": [3, 64, 64]}],
         "outputs": [{"name": "boxes", "dataType": "FP32", "dims": [10, 4]}]}
BATCHING = {"maxBatchSize": 8, "preferredBatchSizes": [4, 8], "maxQueueDelayMicroseconds": 500, "instanceCount": 3}


def test_the_monitor_config_is_the_served_one_but_for_the_name_and_one_instance():
    served = triton_config.render(MODEL, "tensorrt", BATCHING, {"intra_op_thread_count": "2"})
    mon = monitor_config(served, "det")
    assert monitor_model_name("det") == "det" + MONITOR_MODEL_SUFFIX == "det__monitor"
    diff = [(a, b) for a, b in zip(served.splitlines(), mon.splitlines()) if a != b]
    assert diff == [('name: "det"', 'name: "det__monitor"'), ("    count: 3", "    count: 1")]
    assert len(served.splitlines()) == len(mon.splitlines()) and mon.endswith("\n")
    assert '    name: "det"' in mon  # the input keeps its name
    # Unbatched, one instance already: only the name changes.
    plain = triton_config.render(MODEL, "onnxruntime", None)
    assert monitor_config(plain, "det") == plain.replace('name: "det"\n', 'name: "det__monitor"\n', 1)
    with pytest.raises(ValueError, match="expected exactly one"):
        monitor_config(plain, "other")


def test_write_monitor_entry_links_the_served_version_and_writes_its_config(tmp_path):
    served = tmp_path / "det"
    (served / "1").mkdir(parents=True)
    (served / "1" / "model.plan").write_bytes(b"engine")
    (served / CONFIG_FILE).write_text(triton_config.render(MODEL, "tensorrt", BATCHING))
    dest = write_monitor_entry(tmp_path, "det")
    assert dest == tmp_path / "det__monitor"
    assert (dest / "1").is_symlink() and (dest / "1").readlink().as_posix() == "../det/1"
    assert (dest / "1" / "model.plan").read_bytes() == b"engine"  # the same file, not a copy
    assert (dest / CONFIG_FILE).read_text() == monitor_config((served / CONFIG_FILE).read_text(), "det")
    assert sorted(p.name for p in dest.iterdir()) == ["1", CONFIG_FILE]  # no partial file left
    assert write_monitor_entry(tmp_path, "det") == dest  # again: the same result
    with pytest.raises(FetchError, match="no config.pbtxt"):
        write_monitor_entry(tmp_path, "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / CONFIG_FILE).write_text('name: "empty"\n')
    with pytest.raises(FetchError, match="no version directory"):
        write_monitor_entry(tmp_path, "empty")

"""Real SuperGLUE / GLUE files (../shared/data) through the tasks' own readers: official counts."""

from __future__ import annotations

import pytest

from ptv2.tasks.base import build_task


@pytest.mark.parametrize(
    ("task", "train", "dev"), [("rte", 2490, 277), ("cb", 250, 56), ("wic", 5428, 638), ("sst2", 67349, 872)]
)
def test_real_files_have_official_counts(tiny_cfg, shared_data, task, train, dev):
    cfg = tiny_cfg(f"task={task}", f"data.root={shared_data}")
    reader = build_task(cfg.task, cfg.data.root, tokenizer=None)
    train_records, dev_records = reader.read("train"), reader.read("dev")
    assert (len(train_records), len(dev_records)) == (train, dev)
    assert {r["label"] for r in dev_records} == set(range(reader.num_labels))

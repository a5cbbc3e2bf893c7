# pyfusion — every step of the project, from a fresh clone.
#   make demo     the venv and the C kernels (no Caffe build), then fuse an embedded example (writes demo/)
#   make test     set everything up (venv, C kernels, Caffe), run the test suite
#   make dataset train export    reproduce the shipped model (CPU schedule; SCHEDULE=paper for the paper's)
#   make dataset train export NET=wavelet_high    the same for another registered net (pyfusion/models.py)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
GPU ?=
# CUDA=1: the Caffe build with CUDA (build/caffe-cuda; CUDA_ARCH="80 90", CUDA_DIR); implied by GPU=N
CUDA ?= $(if $(GPU),1,0)
SHARED ?= ../shared/data
BSDS := $(SHARED)/train/bsds500
IMAGES ?= $(BSDS)/train $(BSDS)/test
VAL_IMAGES ?= $(BSDS)/val
NET ?= cnn
TRAIN_EXAMPLES ?= $(shell $(PY) -c "from pyfusion import models; print(models.get('$(NET)').examples)" 2>/dev/null)
VAL_EXAMPLES ?= 10000
SCHEDULE ?= cpu
# the run folder: runs/cpu for the shipped cnn, runs/NET for the others; SCHEDULE=paper runs go to runs/paper[-NET]
RUN ?= $(if $(filter paper,$(SCHEDULE)),runs/paper$(if $(filter cnn,$(NET)),,-$(NET)),$(if $(filter cnn,$(NET)),runs/cpu,runs/$(NET)))
# cpu: what fits ~1.5 h on 2 cores (the shipped model: lr 1e-3, 10x the paper, as the budget is ~4% of the
# paper's examples; one x0.1 drop at the plateau); paper: ~10 epochs of 2M pairs at batch 128, lr 1e-4 (a GPU job)
ifeq ($(SCHEDULE),paper)
TRAIN_ARGS ?= --max-iter 160000 --val-interval 2000 --drop-patience 3 --seed 1
else
TRAIN_ARGS ?= --base-lr 1e-3 --max-iter 12000 --val-interval 500 --drop-patience 2 --max-hours 1.4 --seed 1
endif
GPU_ARG := $(if $(GPU),--gpu $(GPU),)

.PHONY: setup venv caffe demo dataset train export evaluate test test-fast bench reproduce ablations clean

setup: venv caffe

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt pyproject.toml setup.py lab/pyproject.toml pyfusion/backends/_winograd.c
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { echo "make: could not create $(VENV) with $(PYTHON)" >&2; exit 1; }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e . -e lab
	@touch $@

caffe: venv
	bash scripts/build_caffe.sh $(PY) $(CUDA)

demo: venv
	$(PY) tools/demo.py --out demo

dataset: venv
	$(PY) tools/make_dataset.py --net $(NET) --split val --images $(VAL_IMAGES) --examples $(VAL_EXAMPLES) --seed 2 --skip-existing
	$(PY) tools/make_dataset.py --net $(NET) --split train --images $(IMAGES) --examples $(TRAIN_EXAMPLES) --seed 1 --skip-existing

train: setup dataset
	$(PY) tools/train.py --net $(NET) --run $(RUN) $(if $(wildcard $(RUN)/run.json),--resume,$(TRAIN_ARGS) $(GPU_ARG))

export: setup
	$(PY) tools/export.py --net $(NET) --run $(RUN) --onnx --val $$($(PY) -c "from fusionlab.train import TrainConfig, data_lists; print(data_lists(TrainConfig(net='$(NET)'))[1])")

evaluate: setup
	$(PY) tools/train.py --net $(NET) --evaluate $$($(PY) -c "from pyfusion import models; print(models.get('$(NET)').caffemodel)")

test: setup
	$(PY) -m pytest -q

# the daily suite: no Caffe, no training, no GPU, no slow tests (tests marked caffe, slow or gpu are left out)
test-fast: venv
	$(PY) -m pytest -q -m "not caffe and not slow and not gpu"

bench: setup
	$(PY) tools/benchmark.py --out docs/benchmarks.md

# every published number from the shipped models (no training, no Caffe): the survey's metric tables, ours vs the
# authors' images, figures -> docs/results_survey.md, docs/reproduction.md, docs/figures/ (fused images: runs/reproduce)
reproduce: venv
	$(PY) tools/reproduce.py --data $(SHARED)/mfif --out runs/reproduce --survey docs/results_survey.md \
		--doc docs/reproduction.md --figures docs/figures

# the paper's design experiments (docs/ablations.md): each variant is a registered net (pyfusion/models.py) trained
# with the same schedule and seeds (the first 1,000 iterations of the shipped CPU schedule) into runs/ablation/NAME
# and exported to models/ablation/NAME.*; the baseline `cnn` is retrained under the same schedule
ABLATIONS ?= cnn cnn_blur3 cnn_patch8 cnn_pseudo cnn_2ch
ABLATION_ARGS ?= --base-lr 1e-3 --max-iter 1000 --val-interval 250 --drop-patience 2 --seed 1
VAL_LIST = $$($(PY) -c "from fusionlab.train import TrainConfig, data_lists; print(data_lists(TrainConfig(net='$*'))[1])")

ablation-%: setup
	$(MAKE) dataset NET=$*
	$(PY) tools/train.py --net $* --run runs/ablation/$* $(if $(wildcard runs/ablation/$*/run.json),--resume,$(ABLATION_ARGS))
	$(PY) tools/export.py --net $* --run runs/ablation/$* --onnx --out models/ablation/$*.caffemodel --val $(VAL_LIST)

ablations: $(addprefix ablation-,$(ABLATIONS))
	$(PY) tools/ablations.py --doc docs/ablations.md

clean:
	rm -rf build $(VENV) demo

# dpn-mxnet: every target sets itself up (a .venv with pinned packages) on a fresh machine with Python 3.11.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(abspath $(VENV))/bin/python
# mxnet-cu112 where nvidia-smi sees a GPU, the CPU build otherwise; override with `make setup MXNET=mxnet`.
MXNET  ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo mxnet-cu112 || echo mxnet)
STAMP  := $(VENV)/.installed-$(MXNET)

.PHONY: setup lint test mutation demo cluster-demo rec train bench bench-timm
setup: $(STAMP)

$(STAMP): requirements.txt requirements-cuda11.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.txt -r requirements.txt $(MXNET)==1.9.1 \
	    $(if $(findstring cu,$(MXNET)),-r requirements-cuda11.txt) -e .
	$(if $(findstring cu,$(MXNET)),echo 'import dpn_mxnet.cuda_preload' > $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/dpn_cuda11.pth)
	$(PY) -c 'import mxnet, numpy; print("mxnet", mxnet.__version__, "numpy", numpy.__version__)'
	rm -f $(VENV)/.installed-*; touch $@

# The main job: digits -> .rec -> 2-worker dist_sync training -> scoring -> curves -> ONNX (see tools/demo.py).
demo: setup
	$(PY) tools/demo.py

# The demo's training across NODES simulated hosts (network namespaces with their own sshd, tools/dev/sim_cluster.py;
#   root): one worker and one server per host (one thread each), the global batch kept at 64.
#   make cluster-demo NODES=10
cluster-demo: setup
	OMP_NUM_THREADS=1 $(PY) tools/dev/sim_cluster.py run -n $(NODES) -- '$(PY) tools/demo.py --hostfile "$$CLUSTER_HOSTS" \
	    --out work/cluster-demo --batch-size $$((64 / $(NODES)))'

# The import contracts of pyproject.toml (entry points -> dpn_mxnet -> symbols, no cycles), then the test suite.
lint: setup
	$(abspath $(VENV))/bin/lint-imports

# In TEST_PROCESSES pytest processes, one test file each at a time and one OpenMP thread each (much of the suite
#   waits on stall timeouts, ssh and simulated hosts); TEST_PROCESSES=0 runs it in this process alone.
TEST_PROCESSES ?= 3
test: lint
	$(if $(filter-out 0,$(TEST_PROCESSES)),OMP_NUM_THREADS=1) $(PY) -m pytest -q --durations=15 \
	    $(if $(filter-out 0,$(TEST_PROCESSES)),-n $(TEST_PROCESSES) --dist loadfile) tests

# Defects planted one at a time in a temporary copy, each against its own tests (tools/dev/mutation_check.py --list);
#   exit 1 if a defect goes unnoticed. MUTATION_ARGS="--only NAME ... --baseline" (see -h).
MUTATION_ARGS ?=
mutation: setup
	OMP_NUM_THREADS=1 $(PY) tools/dev/mutation_check.py $(MUTATION_ARGS)

# Folder of class folders -> train/val .lst/.rec/.idx: make rec DATA=my_photos OUT=data/my_rec REC_ARGS="--val-fraction 0.2"
# ImageNet-style: make rec DATA=/data/imagenet OUT=/data/rec
#   REC_ARGS="--val-labels /data/imagenet/val.txt --val-resize 320 --num-thread 16"   (see tools/make_rec.py -h)
rec: setup
	@test -n "$(DATA)" -a -n "$(OUT)" || { echo "usage: make rec DATA=/path/to/class/folders OUT=/path/to/rec [REC_ARGS=...]"; exit 2; }
	$(PY) tools/make_rec.py $(DATA) $(OUT) $(REC_ARGS)

# Training: NODES=1 trains on this machine; NODES>1 launches NODES workers + NODES servers over ssh (hostfile HOSTS:
# `host` or `host:port` per line) with kvstore dist_sync. HOST_IP: the address the scheduler binds (default: auto);
# RESTARTS=N relaunches a failed job with --resume auto up to N times; MIN_NODES=M lets a relaunch leave out hosts
# that no longer answer ssh while M remain (the global batch and learning rate shrink with the world); STALL=S stops
# a job in which no worker made progress for S seconds (default 600, see docs/failures.md).
#   make train MODEL=dpn92 NODES=10 HOSTS=hosts ARGS="--gpus 0,1,2,3 --data-train /data/rec/train.rec ..."
MODEL ?= dpn92
NODES ?= 1
HOSTS ?= hosts
train: setup
ifeq ($(NODES),1)
	$(PY) train/train_imagenet.py --network '$(MODEL)' $(ARGS)
else
	$(PY) tools/launch.py -n $(NODES) -H $(HOSTS) --launcher ssh $(if $(HOST_IP),--host-ip $(HOST_IP)) \
	    $(if $(RESTARTS),--max-restarts $(RESTARTS)) $(if $(MIN_NODES),--min-nodes $(MIN_NODES)) \
	    $(if $(STALL),--stall-timeout $(STALL)) \
	    python $(abspath train/train_imagenet.py) --network '$(MODEL)' --kv-store dist_sync $(ARGS)
endif

# Speed on synthetic data (CPU: 2 threads). bench: one MXNet measurement, one JSON line (tools/dev/benchmark.py -h):
#   make bench BENCH_ARGS="--network dpn68 --mode infer --batch-size 32"
# bench-timm: the side-by-side table with timm, which runs in its own .venv-timm (about 20 minutes on 2 cores;
#   SIDE_ARGS="--rounds 5 --repeats 5" for steadier figures, see tools/dev/bench_side_by_side.py -h).
THREADS    ?= 2
BENCH_ARGS ?= --network dpn92 --mode train --batch-size 16
SIDE_ARGS  ?=
TIMM_VENV  := .venv-timm
TIMM_STAMP := $(TIMM_VENV)/.installed-timm-1.0.31
bench: setup
	OMP_NUM_THREADS=$(THREADS) $(PY) tools/dev/benchmark.py $(BENCH_ARGS)

$(TIMM_STAMP):
	test -x $(TIMM_VENV)/bin/python || $(PYTHON) -m venv $(TIMM_VENV)
	$(TIMM_VENV)/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1 timm==1.0.31
	rm -f $(TIMM_VENV)/.installed-*; touch $@

# timm-venv: .venv-timm alone; where it exists, `make test` also checks converted weights against timm's logits
# (tests/test_convert_weights.py), and .ci/run always builds it.
.PHONY: timm-venv
timm-venv: $(TIMM_STAMP)

bench-timm: setup $(TIMM_STAMP)
	$(PY) tools/dev/bench_side_by_side.py --threads $(THREADS) $(SIDE_ARGS)

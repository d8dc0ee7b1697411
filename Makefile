# SIEVE — every workflow a user runs.  `make setup` once, then any target; all offline.
VENV    ?= .venv
PY      := $(VENV)/bin/python
SIEVE   := $(VENV)/bin/sieve
STAMP   := $(VENV)/.sieve-setup
MODEL   ?=
VARIANT ?= accurate
DATA    ?=
WEIGHTS ?=
JOBS    ?= 2

.PHONY: setup test test-all search rtl sim synth verify-exhaustive export cascade multidsnn prune mmnet bench clean help

help:
	@echo "make setup      fresh machine -> everything (venv, torch CPU, Debian packages)"
	@echo "make test       the test suite (unit, property, integration, cocotb)"
	@echo "make search     per-layer format search (MODEL=lenet5 by default; MODEL=, FAMILY=, VAL=, TEST=, OUT=, THREADS=)"
	@echo "make export     compressed ONNX of a searched model (MODEL=, VARIANT=accurate)"
	@echo "make rtl|sim|synth   Verilog, cocotb simulation, Yosys/nextpnr reports"
	@echo "make cascade    speculative big/little inference on the default pool"
	@echo "make multidsnn  selector + data-specialised nets vs each monolith (MODEL=all by default)"
	@echo "make prune      SNIP / local random / double-shot pruning vs dense, + lenet5 pruned and searched -> build/prune"
	@echo "make mmnet      M&MNet: Minion pairs (trained here, ~10 min) + Master on device/cloud -> build/runtime/mmnet-*"
	@echo "make bench      benchmarks -> build/bench/*.json"

setup: $(STAMP)

$(STAMP): pyproject.toml requirements-lock.txt scripts/setup-system.sh
	bash scripts/setup-system.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "pip>=23" "setuptools>=64" wheel
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-lock.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation -e '.[test,multidsnn,ray]'
	$(PY) -m synth.warm
	touch $@

test: setup
	$(PY) -m pytest -q -n $(JOBS) -m "not slow"

test-all: setup
	$(PY) -m pytest -q -n $(JOBS)

search: setup
	$(SIEVE) search --model $(or $(MODEL),lenet5) $(if $(DATA),--data $(DATA)) $(if $(WEIGHTS),--weights $(WEIGHTS)) \
	  $(if $(STRATEGY),--strategy $(STRATEGY)) $(if $(FAMILY),--family $(FAMILY)) $(if $(VAL),--val $(VAL)) \
	  $(if $(TEST),--test $(TEST)) $(if $(OUT),--out $(OUT)) $(if $(THREADS),--threads $(THREADS))

export: setup
	$(SIEVE) export --model $(or $(MODEL),lenet5) \
	  --variant $(VARIANT) --out build/export/$(notdir $(or $(MODEL),lenet5))-$(VARIANT).onnx \
	  $(if $(DATA),--data $(DATA)) $(if $(WEIGHTS),--weights $(WEIGHTS)) $(EXPORT_FLAGS)
	$(SIEVE) inspect build/export/$(notdir $(or $(MODEL),lenet5))-$(VARIANT).onnx

rtl: setup
	$(PY) -m sieve_hw.generate --out build/rtl

sim: setup
	$(PY) -m pytest -q -n $(JOBS) -m "not slow" sim

synth: setup
	$(PY) -m synth.run --out build/synth

verify-exhaustive: setup
	$(PY) -m sim.exhaustive --out build/verify $(if $(FORMAT),--format $(FORMAT)) $(if $(FRACTION),--fraction $(FRACTION)) $(if $(JOBS),--jobs $(JOBS)) $(if $(CONTRACT),--contract $(CONTRACT))

cascade: setup
	$(SIEVE) cascade --pool "$${POOL:-lenet5,convnet,minivgg}" --target 1.0

multidsnn: setup
	$(SIEVE) multidsnn --model $(or $(MODEL),all) --target $(or $(TARGET),1.0)

# trains the default Minion grid once (16 Minions, 1 epoch each, cached); NETWORK=lte|wifi|3g
mmnet: setup
	$(SIEVE) mmnet --pool "$${POOL:-lenet5,convnet,minivgg}" --network $(or $(NETWORK),lte) --target $(or $(TARGET),1.0)

# LeNets on all 55,000 training images, the two CNNs on the first 20,000; 1 epoch per training,
# 3 seeds; then lenet5 at 90 % pruned + searched: about 40 min on 2 idle cores (every training is
# cached, a second run only evaluates)
prune: setup
	$(SIEVE) prune --model lenet300,lenet5 --method all --seeds 3 --epochs 1 --compose lenet5 --out build/prune/lenets
	$(SIEVE) prune --model alexnet_s,vgg_s --method all --seeds 3 --epochs 1 --train-images 20000 --out build/prune/cnns
	$(SIEVE) prune --model lenet5 --sparsity 0.9 --method doubleshot --seeds 1 --epochs 1 --compose lenet5 --out build/prune/lenet5-90

bench: setup
	$(PY) -m tests.bench.run --out build/bench

clean:
	rm -rf build .pytest_cache sim_build

# Portunus: forwarder + benchmark harness.
# `make sweep` and `make test` work as the first commands on a fresh Debian 12
# machine: both run `make setup` first when it has not run yet.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-stamp
RUN    ?= $(shell date +%Y-%m-%d)-$(shell hostname -s)
RESULTS ?= results/$(RUN)
PYTEST_ARGS ?=

.PHONY: setup test lint headline sweep peers netns report notebook ui-screenshots gate bench baseline gate-proof gate-aa bench-control clean cleanup

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup-system.sh
	./scripts/setup-system.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The suite, then the performance gate (below) with the 50% threshold: CI runs exactly this.
test: setup
	$(BIN)/pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory gate MAX_REGRESSION_PCT=50

# ---- Regression gate: harness/gate/, microbenchmarks in benchmarks/microbench/ ----
# make bench       microbenchmarks (~3 min): each operation through portunus-standalone and directly
#                  (its twin), interleaved round by round, and forwarder CPU over fixed amounts of work
#                  (cost); writes $(BENCH_OUT), prints a summary.
# make gate        bench + the quick end-to-end run (configs/quick.yaml), both gated: per-round ratios
#                  (timing: proxy/direct; cost: forwarder/client CPU for fixed work) vs $(BASELINE)
#                  (exit 1 = median beyond the baseline's threshold for that benchmark AND a one-sided
#                  Mann-Whitney U test at p < 0.01), standalone vs iptables against the floor in $(FLOORS).
# make baseline    refresh $(BASELINE) on purpose: BASELINE_RUNS runs pooled, thresholds from their
#                  spread (harness/gate/thresholds.py); review and commit it.
# make gate-proof  the gate against injected regressions, each alone: splice forced off, a 4 KiB-buffer
#                  copy forwarder, +100 us CPU per accepted connection (benchmarks/microbench/
#                  slow_forwarder.py), and the unchanged build (A/A); prints each verdict, fails if a
#                  regression is missed or the unchanged build is flagged (benchmarks/microbench/gate_proof.py).
# make gate-aa     false alarms: GATE_AA_RUNS consecutive `make gate` on unchanged code, verdicts verbatim,
#                  exit 1 unless all pass (scripts/gate-aa.sh; ~2-4 min per run here). Tee it into results/gate/.
BASELINE ?= results/baselines/microbench.json
FLOORS ?= results/baselines/quick-floors.json
MAX_REGRESSION_PCT ?= 50
BASELINE_RUNS ?= 5
GATE_AA_RUNS ?= 10
BENCH_OUT ?= /tmp/portunus-microbench.json
BENCH_PYTEST = $(BIN)/pytest -q -p no:cacheprovider benchmarks/microbench/test_microbench.py \
	--benchmark-columns=min,median,max,rounds --benchmark-sort=name
GATE_ARGS = --baseline $(BASELINE) --max-regression-pct $(MAX_REGRESSION_PCT)

bench: setup
	PORTUNUS_BENCH_OUT=$(BENCH_OUT) $(BENCH_PYTEST)
	$(BIN)/portunus-bench gate --current $(BENCH_OUT)

# Benchmark failure = no data: stop. Otherwise gate both; files are kept when something failed.
gate: setup
	@d=$$(mktemp -d /tmp/portunus-gate-XXXXXX); \
	PORTUNUS_BENCH_OUT=$$d/microbench.json $(BENCH_PYTEST) > $$d/bench.log 2>&1 \
	  || { cat $$d/bench.log; echo "gate: microbenchmarks failed; files in $$d"; exit 2; }; \
	$(BIN)/portunus-bench run configs/quick.yaml --out $$d/quick > $$d/quick.log 2>&1; q=$$?; \
	[ $$q -eq 0 ] || { cat $$d/quick.log; echo "gate: quick run exited $$q"; }; \
	$(BIN)/portunus-bench gate $(GATE_ARGS) --current $$d/microbench.json \
	  --floors $(FLOORS) --results $$d/quick/quick.jsonl; g=$$?; \
	rc=$$g; [ $$rc -ne 0 ] || rc=$$q; \
	if [ $$rc -eq 0 ]; then rm -rf $$d; else echo "gate: exit $$rc; files kept in $$d"; fi; exit $$rc

baseline: setup
	@d=$$(mktemp -d /tmp/portunus-baseline-XXXXXX); runs=; \
	for i in $$(seq $(BASELINE_RUNS)); do \
	  echo "baseline: run $$i of $(BASELINE_RUNS)"; \
	  PORTUNUS_BENCH_OUT=$$d/run$$i.json $(BENCH_PYTEST) > $$d/run$$i.log 2>&1 \
	    || { cat $$d/run$$i.log; exit 2; }; runs="$$runs $$d/run$$i.json"; \
	done; \
	$(BIN)/portunus-bench baseline --out $(BASELINE) $$runs && rm -rf $$d

gate-proof: setup
	$(BIN)/python -m benchmarks.microbench.gate_proof --baseline $(BASELINE)

gate-aa: setup
	scripts/gate-aa.sh $(GATE_AA_RUNS)

# make bench-control  the control plane (benchmarks/control_push.py): rule push -> listener accepting
#                     (p50/p99) and applying 1,000 rules, through a real portunus-server and portunus-client.
CONTROL_BENCH_ARGS ?=

bench-control: setup
	$(BIN)/python -m benchmarks.control_push $(CONTROL_BENCH_ARGS)

# make ui-screenshots  docs/ui/*.png: the web UI's pages from a real server, client and traffic (headless Chromium).
ui-screenshots: setup
	$(BIN)/python -m tests.portunus.control.webui_screenshots docs/ui

lint: setup
	$(BIN)/ruff check portunus harness tests benchmarks notebooks
	$(BIN)/mypy

headline: setup
	$(BIN)/portunus-bench run configs/headline.yaml --out $(RESULTS)
	$(BIN)/portunus-bench report $(RESULTS)

# `make sweep`: every experiment below into $(RESULTS), then report.md and plots/ from the saved
# files. Re-running with the same RUN/RESULTS continues an interrupted run (--resume measures only
# what is missing); choose a new RUN=name for a fresh one. A failed measurement (exit 1) is recorded
# and the next experiment still runs; a usage/preflight error or Ctrl-C stops here.
SWEEP_CONFIGS ?= configs/headline.yaml configs/ab.yaml configs/capped.yaml configs/sweep.yaml

sweep: setup
	@rc=0; for c in $(SWEEP_CONFIGS); do \
	  $(BIN)/portunus-bench run $$c --out $(RESULTS) --resume; s=$$?; \
	  if [ $$s -eq 1 ]; then rc=1; elif [ $$s -ne 0 ]; then exit $$s; fi; \
	done; \
	$(BIN)/portunus-bench report $(RESULTS) && exit $$rc

# `make netns`: the headline and the sweep on the network-namespace topology (client -> edge ->
# target over veth pairs; configs/netns-*.yaml) into the same $(RESULTS) as `make sweep`, so the
# report shows loopback and netns side by side. Paths this kernel cannot run (nft_flowtable without
# nf_flow_table) are skipped and the result file says why. Needs root (namespaces). ~50 min.
NETNS_CONFIGS ?= configs/netns-headline.yaml configs/netns-sweep.yaml

netns: setup
	@rc=0; for c in $(NETNS_CONFIGS); do \
	  $(BIN)/portunus-bench run $$c --out $(RESULTS) --resume --skip-unavailable; s=$$?; \
	  if [ $$s -eq 1 ]; then rc=1; elif [ $$s -ne 0 ]; then exit $$s; fi; \
	done; \
	$(BIN)/portunus-bench report $(RESULTS) && exit $$rc

# `make peers`: the comparable forwarders (throughput), latency, connection rate, UDP at packet rate
# and HTTP (wrk against nginx) into $(RESULTS) (~55 min), then report.md and plots/. Resumable and
# failure-tolerant like `make sweep`.
PEERS_CONFIGS ?= configs/peers.yaml configs/latency.yaml configs/connrate.yaml configs/udp.yaml configs/http.yaml

peers: setup
	@rc=0; for c in $(PEERS_CONFIGS); do \
	  $(BIN)/portunus-bench run $$c --out $(RESULTS) --resume; s=$$?; \
	  if [ $$s -eq 1 ]; then rc=1; elif [ $$s -ne 0 ]; then exit $$s; fi; \
	done; \
	$(BIN)/portunus-bench report $(RESULTS) && exit $$rc

# `make fleet`: the control plane at fleet scale (benchmarks/fleet): one real portunus-server; sequential
# pushes to one real client up to 10,000 rules, 100 real portunus-client processes through 3 s and 60 s
# server outages, 1,000, 2,000 and 4,000 simulated clients (real TLS control streams, many per process).
# Writes results/fleet/$(FLEET_RUN).json, its PNG plots and $(FLEET_RUN).md. ~35 min here.
.PHONY: fleet
FLEET_RUN ?= $(RUN)
FLEET_ARGS ?=

fleet: setup
	$(BIN)/python -m benchmarks.fleet --out results/fleet --run $(FLEET_RUN) $(FLEET_ARGS)

# Re-render report.md and plots/ of a saved run (measures nothing): make report RESULTS=results/<run>
report: setup
	$(BIN)/portunus-bench report $(RESULTS)

# `make notebook`: JupyterLab (installed by `make setup`, the `notebook` extra) on notebooks/analysis.ipynb,
# bound to 127.0.0.1; it prints its URL with the token, Ctrl-C stops it. The notebook reads
# PORTUNUS_RESULTS = RESULTS when given (make notebook RESULTS=results/<run>), else the newest committed run
# directory under results/ (notebooks/analysis_support.py chooses and checks it). NOTEBOOK_PORT: where to
# listen (JupyterLab takes the next free port if it is taken, and prints that one). As root (this project's
# machines run the harness as root for iptables and namespaces) JupyterLab needs --allow-root to start.
# answer_yes: one Ctrl-C stops it (and its kernels); without it JupyterLab asks "Shut down (y/[n])?" and,
# unanswered for 5 s, keeps running.
NOTEBOOK_PORT ?= 8888
NOTEBOOK_RESULTS = $(if $(filter-out file,$(origin RESULTS)),$(RESULTS))

notebook: setup
	@dir=$$($(BIN)/python notebooks/analysis_support.py resolve $(NOTEBOOK_RESULTS)) || exit 2; \
	echo "notebook: JupyterLab on notebooks/analysis.ipynb with PORTUNUS_RESULTS=$$dir; its URL with the token follows"; \
	root=; [ "$$(id -u)" -ne 0 ] || root=--allow-root; \
	PORTUNUS_RESULTS=$$dir exec $(BIN)/jupyter lab --no-browser $$root --ServerApp.ip=127.0.0.1 \
	  --ServerApp.port=$(NOTEBOOK_PORT) --ServerApp.root_dir=$(CURDIR) \
	  --ServerApp.answer_yes=True --LabApp.default_url=/lab/tree/notebooks/analysis.ipynb

cleanup: setup
	$(BIN)/portunus-bench cleanup

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache

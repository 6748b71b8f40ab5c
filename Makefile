# camesh: benchmark entry points (see docs/BENCHMARKS.md).
#
#   make bench        criterion benches of the hot paths, then the full loopback harness
#   make bench-quick  the loopback harness only, short windows (< 5 min on 2 cores)
#
# The harness prints a table and writes target/bench/results.json (override with
# BENCH_JSON=path). Extra harness flags go in BENCH_ARGS, e.g. BENCH_ARGS="--only ttff".

CARGO ?= cargo
BENCH_JSON ?= target/bench/results.json
BENCH_ARGS ?=

.PHONY: bench bench-quick bench-criterion bench-harness

bench: bench-criterion bench-harness

bench-criterion:
	$(CARGO) bench -p camesh-bench

# The harness starts camesh-node and mesh as children (replication section): build them too.
bench-harness:
	$(CARGO) build --release --workspace --bins
	$(CARGO) run --release -p camesh-bench -- --json $(BENCH_JSON) $(BENCH_ARGS)

bench-quick:
	$(CARGO) build --release --workspace --bins
	$(CARGO) run --release -p camesh-bench -- --quick --json $(BENCH_JSON) $(BENCH_ARGS)

# pipeline_ingest: `make test` (CI runs exactly this via .ci/run), `make demo`, `make stop`.
# All targets are idempotent and work on a fresh Debian 12 machine (setup installs what is missing).
# PostgreSQL versions (scripts/env.sh): PG_VERSIONS="15 18" (default) is what setup installs, build
# builds and test tests; PG_VERSION=15 (default) or 18 is the cluster that services, regress, e2e,
# demo and bench use (given alone, it is PG_VERSIONS too). E.g. `PG_VERSIONS=18 make test`,
# `PG_VERSION=18 make demo`.
SHELL := /bin/bash
.DEFAULT_GOAL := test

.PHONY: setup build services test unit regress e2e demo stop status bench bench-kinesis

setup:
	bash scripts/setup.sh

build: setup
	bash scripts/build.sh

services:
	bash scripts/services.sh start all

test: build
	bash scripts/test.sh

# Single tiers against already-running services (make services first).
unit:
	source scripts/env.sh && cargo test -p ingest-core -p ingest-kinesis --lib
regress:
	bash scripts/regress.sh
e2e:
	source scripts/env.sh && PI_SERVICES_MANAGED=1 "$$PI_VENV/bin/pytest" -v tests/e2e

demo: build
	bash scripts/services.sh start all
	bash scripts/demo.sh

# Stops every version's cluster (see PG_VERSIONS in scripts/env.sh), Kafka and kinesalite, and
# scripts/connect.sh's Kafka Connect worker and source cluster (tests/e2e/test_debezium_real.py).
stop:
	for v in 15 18; do PG_VERSION=$$v bash scripts/services.sh stop pg; done
	bash scripts/services.sh stop all
	bash scripts/connect.sh stop

status:
	bash scripts/services.sh status all

# Every ingestion and producing path against raw COPY FROM a file of the same rows, in one process
# (bench/run.py; BENCHMARKS.md "Method"); its table goes into BENCHMARKS.md. BENCH_ARGS e.g.
# "--only csv,json --scale 0.1 --repeat 1" (bench/run.py --help). The figures come from the build
# PI_BUILD_PROFILE names: release (default) or debug (what `make build` installs); the bench
# targets install it and restart PostgreSQL so that the server runs it.
PI_BUILD_PROFILE ?= release
bench_build = $(if $(filter-out release debug,$(PI_BUILD_PROFILE)),$(error PI_BUILD_PROFILE must be release or debug)) \
	bash scripts/build.sh $(if $(filter release,$(PI_BUILD_PROFILE)),--release) && \
	bash scripts/services.sh start all && bash scripts/services.sh restart pg
bench: setup
	$(bench_build)
	source scripts/env.sh && "$$PI_VENV/bin/python" bench/run.py $(BENCH_ARGS)

# Kinesis ingestion (kinesalite) alone, with more knobs; BENCH_ARGS e.g. "--rows 200000 --batchsize 10000".
bench-kinesis: setup
	$(bench_build)
	source scripts/env.sh && "$$PI_VENV/bin/python" bench/kinesis_vs_copy.py $(BENCH_ARGS)

# The seed scenarios (demos/seeds.py; README "Seed scenarios"), each against the running services.
.PHONY: demo-memgraph demo-moviefriends demo-kstreams demo-pathway
demo-memgraph demo-moviefriends demo-kstreams demo-pathway: build
	bash scripts/services.sh start all
	source scripts/env.sh && "$$PI_VENV/bin/python" demos/seeds.py $(@:demo-%=%) $(DEMO_ARGS)

# Developer entry points. `make` (or `make help`) lists them.
# Every target needs nothing but a Debian box with Rust installed: the database
# is found or created by scripts/ensure-db.sh, and external tools (nginx, wrk,
# k6, promtool, schemathesis, …) are installed when missing by `cargo xtask
# install`, the one place that installs them (xtask/src/tools.rs).

.DEFAULT_GOAL := help
SHELL := /bin/bash

# Tests on a database from scripts/ensure-db.sh and a Redis from scripts/ensure-redis.sh.
# Separate steps, so a failing script stops here instead of running the tests with an empty
# DATABASE_URL or REDIS_URL.
CARGO_TEST = url="$$(scripts/ensure-db.sh)" && redis="$$(scripts/ensure-redis.sh)" && \
	DATABASE_URL="$$url" REDIS_URL="$$redis" cargo test

.PHONY: help run test fmt lint ci db db-stop bench bench-fleet charts nginx-check dashboards load fuzz

## help: list the targets
help:
	@grep -E '^## ' $(MAKEFILE_LIST) | \
		awk '{ i = index($$0, ": "); printf "  make %-12s %s\n", substr($$0, 4, i - 4), substr($$0, i + 2) }'

## run: build the gateway, migrate, create the Demo org, serve on $LISTEN (default 127.0.0.1:8080)
run:
	scripts/run.sh

## test: every test (unit, integration with nginx and promtool, xtask's) against a database from scripts/ensure-db.sh and a Redis from scripts/ensure-redis.sh
test:
	cargo xtask install nginx promtool redis-server
	$(CARGO_TEST) --workspace --all-targets

## fmt: check formatting (cargo fmt --all --check)
fmt:
	cargo fmt --all --check

## lint: run clippy on all targets, warnings are errors
lint:
	cargo clippy --workspace --all-targets -- -D warnings

## ci: what CI runs: tests (nginx and dashboards checks included), load smoke, fuzz, formatting, clippy
ci:
	bash .ci/run

## dashboards: promtool checks of dashboards/ (rules, rule tests, every PromQL) + metric names vs a live scrape
dashboards:
	cargo xtask install promtool
	$(CARGO_TEST) --test api dashboards::

## load: k6 smoke of load-tests/*.js (under 1 min of load, after a release build) against a fresh database
load:
	cargo xtask load

## bench: release build, fresh database, load tests + in-process benches + gateway forwarding cost; table in target/bench-summary.md
bench:
	cargo xtask bench

## bench-fleet: 2, 10 and 20 release gateways on one fresh database: DELETE p50/p99 and instances still accepting after it (target/bench/fleet.json), then the charts
bench-fleet:
	cargo xtask fleet

## charts: redraw the charts of make bench from target/bench/*.json into docs/bench/
charts:
	cargo xtask charts

## nginx-check: real nginx (installed if missing) with auth_request against the gateway
nginx-check:
	cargo xtask install nginx
	$(CARGO_TEST) --test api nginx::

## fuzz: schemathesis (~2 min) on a debug gateway, fresh database, master + project keys vs /openapi.json
fuzz:
	cargo xtask fuzz

## db: print the URL of the database `make run` uses (recorded by it; before the first run, the one it would pick)
db:
	@scripts/ensure-db.sh --recorded

## db-stop: stop the private Postgres cluster in .data (if running)
db-stop:
	@scripts/stop-private-db.sh

# Developer entry points. `make` (or `make help`) lists them.
# Every target needs nothing but a Debian box with Rust installed: the database
# is found or created by scripts/ensure-db.sh.

.DEFAULT_GOAL := help
SHELL := /bin/bash

.PHONY: help run test fmt lint ci db db-stop bench nginx-check dashboards load fuzz

## help: list the targets
help:
	@grep -E '^## ' $(MAKEFILE_LIST) | \
		awk '{ i = index($$0, ": "); printf "  make %-11s %s\n", substr($$0, 4, i - 4), substr($$0, i + 2) }'

## run: build the gateway, migrate, create the Demo org, serve on $LISTEN (default 127.0.0.1:8080)
run:
	scripts/run.sh

## test: run all tests against a database from scripts/ensure-db.sh
# Two steps so a failing ensure-db.sh stops here instead of running the tests
# with an empty DATABASE_URL.
test:
	url="$$(scripts/ensure-db.sh)" && DATABASE_URL="$$url" cargo test --all-targets

## fmt: check formatting (cargo fmt --check)
fmt:
	cargo fmt --check

## lint: run clippy on all targets, warnings are errors
lint:
	cargo clippy --all-targets -- -D warnings

## ci: what CI runs: tests, dashboards check, load smoke, fuzz, nginx check, formatting, clippy
ci:
	bash .ci/run

## dashboards: promtool checks of dashboards/ (rules, rule tests, every PromQL) + metric names vs a live scrape
dashboards:
	scripts/check-dashboards.sh

## load: k6 smoke of load-tests/*.js (under 1 min of load, after a release build) against a fresh database
load:
	scripts/load.sh

## bench: release build, fresh database, load tests + in-process benches + gateway forwarding cost; table in target/bench-summary.md
bench:
	scripts/bench.sh
	scripts/bench-gateway.sh

## nginx-check: real nginx (installed if missing) with auth_request against the gateway on 127.0.0.1
nginx-check:
	scripts/nginx-auth-check.sh

## fuzz: schemathesis (~2 min) on a debug gateway, fresh database, master + project keys vs /openapi.json
fuzz:
	scripts/fuzz.sh

## db: make sure the database exists and print its URL
db:
	@scripts/ensure-db.sh

## db-stop: stop the private Postgres cluster in .data (if running)
db-stop:
	@scripts/stop-private-db.sh

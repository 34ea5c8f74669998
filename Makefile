# Shortcuts for the CPM platform. `make` (or `make help`) lists them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.PHONY: help demo test fmt lint buf serve

help: ## List the targets
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z_-]+:.*## / { printf "  make %-6s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

demo: ## Build, serve and walk a referral through all five services (deploy/quickstart.sh)
	bash deploy/quickstart.sh

test: ## Run every test against real PostgreSQL and RabbitMQ, then buf lint (deploy/test.sh)
	bash deploy/test.sh

fmt: ## Format the Rust code
	cargo fmt --all

lint: ## Check formatting and run clippy with warnings as errors
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

buf: ## Lint the protobuf contracts with buf (fetched through npx)
	npx --yes @bufbuild/buf lint proto

serve: ## Run all services in one process on 127.0.0.1:50051 until Ctrl-C
	source deploy/services.sh && cpm_ensure_postgres && cpm_ensure_rabbitmq && \
	cargo build -p cpm && \
	export CPM__GRPC__LISTEN="$${CPM__GRPC__LISTEN:-127.0.0.1:50051}" && \
	"$${CARGO_TARGET_DIR:-target}/debug/cpm" migrate && \
	exec "$${CARGO_TARGET_DIR:-target}/debug/cpm" serve --target all

# Wrenn — build, run and test. `make help` lists the targets.

SHELL := /usr/bin/env bash
GO ?= go
BUILDS := builds
TOOLS := $(CURDIR)/bin
GOLANGCI_LINT_VERSION := v2.15.0
BUF_VERSION := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_CONNECT_GO_VERSION := v1.19.1
# gVisor's runsc, from the module's `go` branch (scripts/install-runsc.sh).
RUNSC_VERSION := v0.0.0-20260905035102-160fafc42237
# Templates `make images` builds (minimal, base) into IMAGES_DIR; each is
# kept when its inputs are unchanged.
TEMPLATES ?= minimal base
IMAGES_DIR ?= $(or $(WRENN_DIR),/var/lib/wrenn)/images
KERNELS_DIR ?= $(or $(WRENN_DIR),/var/lib/wrenn)/kernels
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/wrenn-dev/wrenn/internal/version.Version=$(VERSION)

# Settings from .env (copy .env.example) reach every target.
-include .env
export

.PHONY: help build dashboard wrenn-cp wrenn-agent envd wrenn runsc images kernel proto migrate-up migrate-down migrate-status \
	dev dev-agent fmt vet lint test check bench clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: wrenn-cp wrenn-agent envd wrenn ## build the binaries into builds/

# The dashboard (frontend/, Svelte + Vite) builds into internal/web/dist,
# which wrenn-cp embeds. npm ci reruns only when package-lock.json is newer
# than the install it made (npm writes node_modules/.package-lock.json).
FRONTEND := frontend
DASHBOARD_DIST := internal/web/dist
NPM_STAMP := $(FRONTEND)/node_modules/.package-lock.json

dashboard: ## build the web dashboard (frontend/) into internal/web/dist (skipped without frontend/package.json)
	@if [ ! -f $(FRONTEND)/package.json ]; then \
		echo "dashboard: no $(FRONTEND)/package.json; skipping (wrenn-cp will serve a 'dashboard not built' page)"; \
		exit 0; \
	fi; \
	command -v npm >/dev/null || { echo "dashboard: npm not found; install Node.js 20+ and npm" >&2; exit 1; }; \
	if [ ! -f $(NPM_STAMP) ] || [ $(FRONTEND)/package-lock.json -nt $(NPM_STAMP) ]; then \
		(cd $(FRONTEND) && npm ci --no-audit --no-fund) || exit 1; \
	fi; \
	(cd $(FRONTEND) && npm run build) || exit 1; \
	touch $(DASHBOARD_DIST)/.gitkeep

wrenn-cp: dashboard ## build the control plane (with the dashboard)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BUILDS)/wrenn-cp ./cmd/wrenn-cp

wrenn-agent: ## build the host agent
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BUILDS)/wrenn-agent ./cmd/wrenn-agent

envd: ## build the guest agent (static)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BUILDS)/envd ./cmd/envd

wrenn: ## build the command-line client
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BUILDS)/wrenn ./cmd/wrenn

runsc: ## build gVisor's runsc (pinned) into /usr/local/bin/runsc if missing or outdated
	scripts/install-runsc.sh $(RUNSC_VERSION)

images: envd ## build the capsule templates in TEMPLATES (default minimal base) into IMAGES_DIR, each with its microVM disk <name>.ext4
	for t in $(TEMPLATES); do scripts/build-image.sh "$$t" "$(IMAGES_DIR)" || exit 1; done
	for t in $(TEMPLATES); do scripts/build-ext4.sh "$$t" "$(IMAGES_DIR)" || exit 1; done

kernel: ## build the Firecracker guest kernel (Debian's linux-source-6.1, tinyconfig + scripts/kernel/microvm.config) into KERNELS_DIR; cached by its inputs
	scripts/build-kernel.sh "$(KERNELS_DIR)"

proto: ## regenerate Go code from proto/ (committed)
	GOBIN=$(TOOLS) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS) $(GO) install connectrpc.com/connect/cmd/protoc-gen-connect-go@$(PROTOC_GEN_CONNECT_GO_VERSION)
	PATH=$(TOOLS):$$PATH $(TOOLS)/buf generate

migrate-up: wrenn-cp ## apply database migrations (DATABASE_URL)
	$(BUILDS)/wrenn-cp migrate up

migrate-down: wrenn-cp ## roll back the last migration (DATABASE_URL)
	$(BUILDS)/wrenn-cp migrate down

migrate-status: wrenn-cp ## show applied migrations (DATABASE_URL)
	$(BUILDS)/wrenn-cp migrate status

dev: ## run everything on this machine (PostgreSQL, control plane); Ctrl-C stops
	scripts/dev.sh

dev-agent: ## register and start a local agent against `make dev`
	scripts/dev-agent.sh

fmt: ## format Go code
	gofmt -l -w $$(git ls-files '*.go')

vet: ## go vet
	$(GO) vet ./...

$(TOOLS)/golangci-lint:
	GOBIN=$(TOOLS) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

lint: $(TOOLS)/golangci-lint ## golangci-lint (pinned, installed into bin/)
	$(TOOLS)/golangci-lint run ./...

test: ## the whole suite against a throw-away PostgreSQL
	scripts/test.sh

check: ## fmt check + vet + lint + test
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(MAKE) vet lint test

bench: ## benchmarks (medians and ratios against baselines)
	scripts/test.sh -run '^$$' -bench . -benchtime 1x ./...

clean: ## remove build output
	rm -rf $(BUILDS)

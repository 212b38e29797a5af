# certfleet. The two commands users need: `make run` and `make test`.
SHELL   := bash
GO      ?= go
VENV    := .venv
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/certfleet/certfleet/shared/app.Version=$(VERSION)
# Lambda binaries: linux/arm64, static, no RPC shim (provided.al2023).
LAMBDA_ENV   := GOOS=linux GOARCH=arm64 CGO_ENABLED=0
LAMBDA_FLAGS := -tags lambda.norpc -trimpath -ldflags "$(LDFLAGS)"
FUNCTIONS    := $(notdir $(wildcard functions/*))
BENCHTIME    ?= 1s

.PHONY: run test bench build lint tools sam-build clean

## run: start the local all-in-one server on :8080 (PORT), state in ./data (CERTFLEET_DATA)
run:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/certfleet ./cmd/certfleet
	$(GO) build -trimpath -o bin/certfleet-agent ./cmd/certfleet-agent
	exec bin/certfleet serve

## tools: the test tools: moto (AWS endpoints), aiosmtpd and cfn-lint in .venv; Pebble from go.mod
tools: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@echo "building the Go tools pinned in go.mod (pebble, pebble-challtestsrv)"
	$(GO) tool -n pebble >/dev/null
	$(GO) tool -n pebble-challtestsrv >/dev/null
	touch $@

## test: every test (bbolt and moto-backed suites, Lambda event replays, template checks)
test: tools lint
	MOTO_SERVER=$(CURDIR)/$(VENV)/bin/moto_server $(GO) test -race -count=1 ./...
	$(VENV)/bin/cfn-lint template.yaml
	@echo "make test: all passed"

## lint: gofmt and go vet
lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.venv/*')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted"; exit 1; fi
	$(GO) vet ./...

## bench: every benchmark: store (bolt, dynamo-on-moto), queue, keys, authentication, login, tokens
bench: tools
	MOTO_SERVER=$(CURDIR)/$(VENV)/bin/moto_server $(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) -benchmem ./shared/...

## build: the Lambda bootstraps into bin/<function>/bootstrap, the local server into bin/certfleet and the agent into bin/certfleet-agent
build:
	@for f in $(FUNCTIONS); do \
		echo "build functions/$$f -> bin/$$f/bootstrap"; \
		$(LAMBDA_ENV) $(GO) build $(LAMBDA_FLAGS) -o bin/$$f/bootstrap ./functions/$$f || exit 1; \
	done
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/certfleet ./cmd/certfleet
	$(GO) build -trimpath -o bin/certfleet-agent ./cmd/certfleet-agent

## sam-build: `sam build` (it calls the build-<Name>Function targets below)
sam-build:
	sam build

# SAM's makefile builder runs `make build-HealthFunction` etc. with
# ARTIFACTS_DIR set; the function's folder is the lower-cased stem.
build-%Function:
	$(LAMBDA_ENV) $(GO) build $(LAMBDA_FLAGS) -o $(ARTIFACTS_DIR)/bootstrap ./functions/$(shell echo '$*' | tr '[:upper:]' '[:lower:]')

clean:
	rm -rf bin .aws-sam

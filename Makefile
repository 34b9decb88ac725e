# kdnative: build, test and measure. Everything builds with CGO_ENABLED=0.
export CGO_ENABLED := 0
GO ?= go

.PHONY: build test vet fmt-check bench bench-matmul fuzz fixtures ci

build:
	$(GO) build -o kdnative ./cmd/kdnative

# The test command CI runs (see .ci/run).
test:
	$(GO) test ./...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# One training step of GPT-2 124M (B=4, T=64) and of a Llama-shaped model,
# then the matrix products at the shapes those steps use. See docs/performance.md.
bench:
	$(GO) test -run '^$$' -bench 'TrainStep' -benchtime 3x ./model/
	$(GO) test -run '^$$' -bench 'MatMul' -benchtime 10x ./model/

# A short fuzz run of the safetensors header parser.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParseHeader -fuzztime 30s ./model/safetensors/

# Regenerate the PyTorch fixtures (needs Python with torch and transformers).
fixtures:
	pip install -r scripts/fixtures/requirements.txt
	python3 scripts/fixtures/make_model_fixtures.py

ci: fmt-check vet test

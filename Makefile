# Front door. `make run` and `make test` are the two commands a fresh Debian
# machine needs; both install what is missing first.
JOBS  ?= $(shell nproc)
BUILD ?= build
ASAN  ?= build-asan
FUZZ  ?= build-fuzz
ARGS  ?=
FUZZ_SECONDS ?= 20

.PHONY: all deps build asan fuzz-build run serve test fuzz bench clean

all: build

deps:
	@scripts/install-deps

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

$(ASAN)/build.ninja:
	cmake -S . -B $(ASAN) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DDS4_SANITIZE=ON -DDS4_BENCH=OFF -DDS4_CUDA=OFF

asan: deps $(ASAN)/build.ninja
	cmake --build $(ASAN) -j $(JOBS)

$(FUZZ)/build.ninja:
	CXX=clang++ CC=clang cmake -S . -B $(FUZZ) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDS4_FUZZ=ON -DDS4_BENCH=OFF -DDS4_CUDA=OFF

fuzz-build: deps $(FUZZ)/build.ninja
	cmake --build $(FUZZ) --target fuzzers -j $(JOBS)

fuzz: fuzz-build
	scripts/run-fuzz $(FUZZ) $(FUZZ_SECONDS)

# Builds only the ds4 binary; without -m in ARGS it runs the built-in demo model
# (scripts/demo-model: random weights, real tokenizer, cached after the first run).
run: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) --target ds4 -j $(JOBS)
	scripts/demo-model $(BUILD)/src/cli/ds4 $(ARGS)

# `ds4 serve` on the demo model unless ARGS has -m (http://127.0.0.1:8000).
serve: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) --target ds4 -j $(JOBS)
	scripts/demo-model $(BUILD)/src/cli/ds4 serve $(ARGS)

test: build asan fuzz-build
	scripts/run-tests $(BUILD) $(ASAN) $(FUZZ) $(FUZZ_SECONDS)

bench: build
	@for b in $(BUILD)/bench/bench_*; do [ -x "$$b" ] && "$$b"; done

clean:
	rm -rf $(BUILD) $(ASAN) $(FUZZ)

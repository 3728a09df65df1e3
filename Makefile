# Entry points: `make demo` (the main job) and `make test`. Each installs and builds what it needs.
BUILD ?= build
JOBS ?= $(shell nproc)
TESSERA := $(BUILD)/tessera
DEMO_RUN ?= runs/demo

.PHONY: deps build test demo bench clean

deps:
	@bash scripts/install-deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

data/mnist/t10k-labels-idx1-ubyte:
	bash scripts/get-mnist.sh data/mnist

demo: build data/mnist/t10k-labels-idx1-ubyte
	$(TESSERA) train --config configs/demo.yaml --run.dir $(DEMO_RUN)
	$(TESSERA) export-data --config configs/demo.yaml --count 4 --out $(DEMO_RUN)/examples
	$(TESSERA) predict --run $(DEMO_RUN) --image $(DEMO_RUN)/examples/test_00000.png --out $(DEMO_RUN)/predict
	@echo "selection picture: $(DEMO_RUN)/predict/selection.png"

bench: build
	$(TESSERA) bench ips --threads 2 --json $(BUILD)/bench-ips.json

clean:
	rm -rf $(BUILD)

# Entry points: `make demo` (the main job) and `make test`. Each installs and builds what it needs.
BUILD ?= build
JOBS ?= $(shell nproc)
TESSERA := $(BUILD)/tessera
DEMO_RUN ?= runs/demo

SLIDES ?= data/slides
SLIDES_RUN ?= runs/slides-demo

.PHONY: deps build test test-asan test-tsan demo slides-demo vit-demo patchgd-demo bench check-libtorch2 fuzz clean

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

# The whole-slide workflow on generated slides: make slides (each positive slide has 3 digit "tumours"
# covering at most 10 % of its tissue patches), preprocess, train IPS, measure where the attention goes
# against the generator's ground truth, predict a positive test slide with heatmaps.
$(SLIDES)/manifest.csv: | data/mnist/t10k-labels-idx1-ubyte
	$(TESSERA) make-slides --out $(SLIDES) --count 64 --test-count 16 --width 4096 --height 4096 --digits 3 --digit-scale 5 --tissue-size 0.45 --compression jpeg

slides-demo: build data/mnist/t10k-labels-idx1-ubyte $(SLIDES)/manifest.csv
	$(TESSERA) slide-info $(SLIDES)/slide_001.tif
	$(TESSERA) preprocess --manifest $(SLIDES)/manifest.csv --out $(SLIDES)/cache --patch 256
	$(TESSERA) train --config configs/slides-demo.yaml --run.dir $(SLIDES_RUN)
	$(TESSERA) localization --run $(SLIDES_RUN) --out $(SLIDES_RUN)/localization.json
	$(TESSERA) predict --run $(SLIDES_RUN) --slide $(SLIDES)/slide_065.tif --tiff --out $(SLIDES_RUN)/predict
	@echo "heatmap: $(SLIDES_RUN)/predict/heatmap.png (tissue thumbnails: $(SLIDES)/cache/thumbnails/)"

# A small ViT fine-tuned end to end with IPS on the same slides under a memory budget the unchunked
# gradient pass exceeds (refused first, then trained in chunks), beside the frozen-feature route.
vit-demo: build data/mnist/t10k-labels-idx1-ubyte $(SLIDES)/manifest.csv
	TESSERA=$(TESSERA) SLIDES=$(SLIDES) bash scripts/vit-demo.sh

# PatchGD at full resolution vs GD downscaled to fit, same memory budget, same training time.
patchgd-demo: build data/mnist/t10k-labels-idx1-ubyte
	TESSERA=$(TESSERA) bash scripts/patchgd-demo.sh

bench: build
	$(TESSERA) bench ips --threads 2 --json $(BUILD)/bench-ips.json

# Every source compiled (syntax only) against LibTorch 2.x, plain and as a CUDA/NCCL build: the GPU
# machines run PyTorch 2.x, this machine LibTorch 1.13.
check-libtorch2: deps
	bash scripts/check-libtorch2.sh

# The fuzz campaign: every file parser's libFuzzer harness (tests/fuzz/), built with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer in $(FUZZ_BUILD), each for FUZZ_SECONDS or 1,000,000 executions.
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 600
fuzz:
	@bash scripts/install-deps.sh fuzz
	CC=clang-14 CXX=clang++-14 cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTESSERA_FUZZ=ON \
	  -DTESSERA_SANITIZE=address,undefined -DTESSERA_BUILD_TESTS=OFF -DTESSERA_WITH_PYTHON=OFF
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzzers
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/fuzz.sh $(FUZZ_BUILD)

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer ($(ASAN_BUILD)), and the tests that use
# threads under ThreadSanitizer ($(TSAN_BUILD)). Suppressions (third-party libraries only, each with its reason)
# are in tests/sanitizers/.
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
SANITIZERS := $(CURDIR)/tests/sanitizers
TSAN_TESTS ?= ThreadPool|Loader|EpochShard|DataParallel|SlideReader|Preprocess|ShardedSlides|SlideWorkflow|FeatureBags|TissueTiles|Selection
test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Release -DTESSERA_SANITIZE=address,undefined
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1 \
	  LSAN_OPTIONS=suppressions=$(SANITIZERS)/lsan.supp:print_suppressions=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:suppressions=$(SANITIZERS)/ubsan.supp \
	  ctest --output-on-failure -j $(JOBS) -LE cuda

test-tsan: deps
	cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=Release -DTESSERA_SANITIZE=thread -DTESSERA_WITH_PYTHON=OFF
	cmake --build $(TSAN_BUILD) -j $(JOBS) --target tessera_tests
	cd $(TSAN_BUILD) && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(SANITIZERS)/tsan.supp \
	  ctest --output-on-failure -j $(JOBS) -R '^($(TSAN_TESTS))\.'

clean:
	rm -rf $(BUILD)

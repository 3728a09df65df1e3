# Entry points: `make demo` (the main job) and `make test`. Each installs and builds what it needs.
BUILD ?= build
JOBS ?= $(shell nproc)
TESSERA := $(BUILD)/tessera
DEMO_RUN ?= runs/demo

SLIDES ?= data/slides
SLIDES_RUN ?= runs/slides-demo

.PHONY: deps build test asan-build test-asan test-tsan demo slides-demo vit-demo patchgd-demo bench check-libtorch2 fuzz fuzz-smoke clean

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

# Sanitizer builds, with clang at -O1 (a third of GCC's build time with the same checks):
# - $(ASAN_BUILD): AddressSanitizer + UndefinedBehaviorSanitizer, every target plus the libFuzzer harnesses of
#   every file parser (tests/fuzz/). `make test-asan` runs the whole suite in it; `make fuzz` runs the
#   campaign (each harness for FUZZ_SECONDS or 1,000,000 executions); `make fuzz-smoke` runs each harness
#   for 20 s on its corpus (CI).
# - $(TSAN_BUILD): ThreadSanitizer over the tests that use threads (`make test-tsan`).
# Suppressions (third-party libraries only, each with its reason) are in tests/sanitizers/.
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
FUZZ_SECONDS ?= 600
SANITIZERS := $(CURDIR)/tests/sanitizers
SANITIZER_CMAKE := -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG"
TSAN_TESTS ?= ThreadPool|Loader|EpochShard|DataParallel|SlideReader|Preprocess|ShardedSlides|SlideWorkflow|FeatureBags|TissueTiles|Selection

asan-build:
	@bash scripts/install-deps.sh fuzz
	cmake -S . -B $(ASAN_BUILD) $(SANITIZER_CMAKE) -DTESSERA_SANITIZE=address,undefined -DTESSERA_FUZZ=ON
	cmake --build $(ASAN_BUILD) -j $(JOBS)

test-asan: asan-build
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1 \
	  LSAN_OPTIONS=suppressions=$(SANITIZERS)/lsan.supp:print_suppressions=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:suppressions=$(SANITIZERS)/ubsan.supp \
	  ctest --output-on-failure -j $(JOBS) -LE cuda

fuzz: asan-build
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/fuzz.sh $(ASAN_BUILD)

fuzz-smoke: asan-build
	FUZZ_SECONDS=20 FUZZ_OUT=$(ASAN_BUILD)/fuzz-smoke bash scripts/fuzz.sh $(ASAN_BUILD)

test-tsan:
	@bash scripts/install-deps.sh fuzz
	cmake -S . -B $(TSAN_BUILD) $(SANITIZER_CMAKE) -DTESSERA_SANITIZE=thread -DTESSERA_WITH_PYTHON=OFF
	cmake --build $(TSAN_BUILD) -j $(JOBS) --target tessera_tests dist_worker tessera_cli
	cd $(TSAN_BUILD) && G_SLICE=always-malloc TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(SANITIZERS)/tsan.supp \
	  ctest --output-on-failure -j $(JOBS) -R '^($(TSAN_TESTS))\.'

clean:
	rm -rf $(BUILD)

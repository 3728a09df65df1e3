// The prefetching loader: batches come back complete and in order whatever the worker timing, a
// worker's error reaches the caller, and epoch orders are reproducible permutations.
#include <chrono>
#include <random>
#include <thread>

#include "helpers.h"
#include "tessera/data/loader.h"

namespace tessera {
namespace {

class CountingDataset final : public data::Dataset {
 public:
  explicit CountingDataset(int64_t n, int64_t fail_at = -1) : n_(n), fail_at_(fail_at) {}
  int64_t size() const override { return n_; }
  data::Sample get(int64_t index) const override {
    TESSERA_CHECK(index != fail_at_, "sample ", index, " is corrupt");
    // Uneven work so workers finish out of order.
    std::this_thread::sleep_for(std::chrono::microseconds((index * 7919) % 3000));
    data::Sample s;
    s.image = torch::full({1, 2, 2}, static_cast<float>(index));
    s.labels["a"] = torch::tensor(index);
    return s;
  }
  std::vector<Task> tasks() const override { return {{"a", "softmax", 1}}; }

 private:
  int64_t n_, fail_at_;
};

TEST(Loader, DeliversEveryBatchInOrderWithManyWorkers) {
  auto dataset = std::make_shared<CountingDataset>(103);
  const auto order = data::epoch_order(103, 5, 1, true);
  data::Loader loader(dataset, order, 8, /*workers=*/3, /*prefetch=*/2);
  EXPECT_EQ(loader.num_batches(), 13);
  size_t seen = 0;
  while (auto batch = loader.next()) {
    for (int64_t k = 0; k < batch->size(); ++k, ++seen) {
      EXPECT_EQ(batch->indices[k], order[seen]);
      EXPECT_EQ(batch->labels.at("a")[k].item<int64_t>(), order[seen]);
      EXPECT_EQ(batch->images[k][0][0][0].item<float>(), static_cast<float>(order[seen]));
    }
  }
  EXPECT_EQ(seen, order.size());
}

TEST(Loader, WorkerErrorReachesTheCaller) {
  auto dataset = std::make_shared<CountingDataset>(40, /*fail_at=*/17);
  data::Loader loader(dataset, data::epoch_order(40, 0, 0, false), 4, 2, 2);
  try {
    while (loader.next()) {
    }
    FAIL() << "the corrupt sample went unnoticed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sample 17 is corrupt"), std::string::npos) << e.what();
  }
}

TEST(Loader, EpochOrdersAreReproduciblePermutations) {
  const auto a = data::epoch_order(50, 3, 2, true), b = data::epoch_order(50, 3, 2, true);
  const auto c = data::epoch_order(50, 3, 3, true);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 50; ++i) EXPECT_EQ(sorted[i], i);
}

}  // namespace
}  // namespace tessera

// The README's library example: your own images in a CSV, an IPS run trained on them, then a
// prediction through the run spec alone. Built and run by ctest (LibraryExample.TrainsAndPredicts).
// Usage: library_example WORK_DIR
#include <torch/torch.h>

#include <iostream>

#include "tessera/app/predict.h"
#include "tessera/app/train.h"
#include "tessera/core/run_dir.h"
#include "tessera/data/image_io.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: library_example WORK_DIR\n";
    return 2;
  }
  const std::string work = argv[1];
  // A toy data set of 96x96 grey images: class 1 has a bright square in the top-left quarter.
  tessera::RunDir images(work + "/images");
  std::string csv = "path,label\n";
  torch::manual_seed(0);
  for (int i = 0; i < 24; ++i) {
    auto image = torch::rand({1, 96, 96}) * 0.3;
    const int label = i % 2;
    const int64_t r = label ? 8 : 56, c = label ? 8 : 56;
    image.slice(1, r, r + 24).slice(2, c, c + 24).fill_(1.0);
    const std::string name = "img_" + std::to_string(i) + ".png";
    tessera::data::write_png(images.file(name), image);
    csv += name + "," + std::to_string(label) + "\n";
  }
  images.write_text("all.csv", csv);

  tessera::Config config;
  config.data.dataset = "csv";
  config.data.train_csv = images.file("all.csv");
  config.data.test_csv = images.file("all.csv");
  config.data.height = config.data.width = 96;
  config.data.patch = config.data.stride = 16;
  config.data.mean = "0.2";
  config.data.std = "0.25";
  config.model.width = 8;
  config.model.heads = 2;
  config.model.d_k = 8;
  config.model.d_inner = 32;
  config.ips.M = 4;
  config.ips.I = 8;
  config.train.epochs = 2;
  config.train.batch_size = 4;
  config.train.warmup_epochs = 0;
  config.run_dir = work + "/run";
  const auto last = tessera::app::train(config, /*resume=*/false);  // any method: config.train.method
  std::cout << tessera::app::format_summary(last["test"]);

  tessera::app::PredictOptions predict;
  predict.run = config.run_dir;  // the network, tasks and normalisation come from the run spec
  predict.image = images.file("img_1.png");
  const auto prediction = tessera::app::predict(predict);
  std::cout << prediction.result["predicted"].dump() << "\n";
  return prediction.result["outputs"].contains("label") ? 0 : 1;
}

// Every input the fuzz campaign found (tests/fuzz/corpus/<harness>/regression-*) replayed through the
// same reader in the normal build: each must now end in one clear tessera::Error, never a crash or
// another exception. (The sanitizer builds replay them too: scripts/fuzz.sh starts from the corpus.)
#include <sys/wait.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "fuzz/readers.h"
#include "helpers.h"
#include "tessera/core/config.h"
#include "tessera/core/npy.h"
#include "tessera/data/image_io.h"
#include "tessera/train/checkpoint.h"
#ifdef TESSERA_WITH_SLIDES
#include "clam_layout.h"
#endif

namespace tessera {
namespace {
namespace fs = std::filesystem;

TEST(FuzzRegressions, EveryKeptFindingIsAClearError) {
  const fs::path corpus = fs::path(TESSERA_TESTS_DIR) / "fuzz" / "corpus";
  int replayed = 0;
  for (const auto& harness : fs::directory_iterator(corpus)) {
    for (const auto& input : fs::directory_iterator(harness.path())) {
      if (input.path().filename().string().rfind("regression-", 0) != 0) continue;
#ifndef TESSERA_WITH_SLIDES
      if (harness.path().filename() == "geojson" || harness.path().filename() == "h5") continue;
#endif
      testing::TempDir dir;
      const auto copy = dir.file("input");  // readers may write beside it (the config harness does)
      fs::copy_file(input.path(), copy);
      try {
        fuzz::read_as(harness.path().filename().string(), copy);
        ADD_FAILURE() << input.path() << " was accepted; it was kept because it is invalid";
      } catch (const Error& e) {
        EXPECT_FALSE(std::string(e.what()).empty());
      } catch (const std::exception& e) {
        ADD_FAILURE() << input.path() << ": " << e.what() << " (not a tessera::Error)";
      }
      ++replayed;
    }
  }
  EXPECT_GE(replayed, 4);  // the campaign's first findings: config, h5, pickle, run
}

// The hand-made hostile set of issue 23, made here byte by byte.
void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string le32(uint32_t v) { return {char(v), char(v >> 8), char(v >> 16), char(v >> 24)}; }
std::string be32(uint32_t v) { return {char(v >> 24), char(v >> 16), char(v >> 8), char(v)}; }

uint32_t crc32(const std::string& bytes) {
  uint32_t c = 0xffffffffu;
  for (const unsigned char b : bytes) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
  }
  return ~c;
}

std::string png_chunk(const std::string& type, const std::string& data) {
  return be32(static_cast<uint32_t>(data.size())) + type + data + be32(crc32(type + data));
}

// Every file and directory under dir with its bytes.
std::map<std::string, std::string> snapshot(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    files[e.path().string()] = e.is_regular_file() ? fuzz::read_bytes(e.path().string()) : "<dir>";
  }
  return files;
}

struct Hostile {
  std::string name;     // the file, in the temporary directory
  std::string harness;  // the reader the commands use (tests/fuzz/readers.h)
  std::string error;    // a phrase of the one error expected
  std::string command;  // a tessera command that reads it ({} = the file), or "" when no command reads the format
};

TEST(FuzzRegressions, HostileFilesAreOneClearErrorAndExitStatusOneWithRunsUntouched) {
  testing::TempDir dir;
  // An existing run that no command below may change.
  const auto run = dir.file("existing-run");
  fs::create_directories(run);
  {
    torch::nn::Linear model(3, 2);
    train::save_checkpoint(run + "/checkpoint.pt", *model, nullptr, {2, 10, 0}, "a: 1\n", "{}");
    write_bytes(run + "/metrics.jsonl", "{\"epoch\": 1}\n");
  }
  const auto before = snapshot(run);
  const auto image = dir.file("tiny.png");  // a valid image for the commands that need one
  data::write_png(image, torch::rand({3, 16, 16}));

  // A truncated zip checkpoint.
  fs::create_directories(dir.file("truncated-run"));
  fs::copy_file(run + "/checkpoint.pt", dir.file("truncated-run/checkpoint.pt"));
  fs::resize_file(dir.file("truncated-run/checkpoint.pt"), fs::file_size(run + "/checkpoint.pt") / 2);
  // A pickle whose tensor declares 10^12 elements over a 16-byte storage.
  {
    auto t = torch::zeros({4});
    const std::vector<int64_t> huge{1000000000000}, unit{1};
    t.unsafeGetTensorImpl()->set_sizes_and_strides(huge, unit);
    c10::Dict<std::string, torch::Tensor> dict;
    dict.insert("conv1.weight", t);
    const auto bytes = torch::pickle_save(dict);
    write_bytes(dir.file("huge-storage.pt"), std::string(bytes.begin(), bytes.end()));
  }
  // A safetensors header whose offsets point past the end of the file.
  {
    const std::string header = R"({"conv1.weight": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}})";
    write_bytes(dir.file("past-end.safetensors"), le32(static_cast<uint32_t>(header.size())) + std::string(4, '\0') +
                                                      header + std::string(8, '\0'));
  }
  // An NPY with a negative shape.
  {
    std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 3), }";
    header += std::string(63 - header.size() % 64, ' ') + "\n";
    write_bytes(dir.file("negative.npy"), std::string("\x93NUMPY\x01\x00", 8) + std::string{char(header.size()), 0} +
                                              header + std::string(12, '\0'));
  }
  // A YAML config nested 100,000 deep.
  write_bytes(dir.file("deep.yaml"), "train:\n  epochs: " + std::string(100000, '[') + std::string(100000, ']') + "\n");
  // A PNG header of 10^6 x 10^6 pixels (and nothing else).
  {
    const std::string ihdr = be32(1000000) + be32(1000000) + std::string{8, 2, 0, 0, 0};
    const std::string empty_zlib("\x78\x9c\x03\x00\x00\x00\x00\x01", 8);  // a header reader stops at the first IDAT
    write_bytes(dir.file("huge.png"), std::string("\x89PNG\r\n\x1a\n", 8) + png_chunk("IHDR", ihdr) +
                                          png_chunk("IDAT", empty_zlib) + png_chunk("IEND", ""));
  }
  std::vector<Hostile> set = {
      {"truncated-run/checkpoint.pt", "run", "corrupt or truncated", "eval --run " + dir.file("truncated-run")},
      {"huge-storage.pt", "pickle", "needs more bytes than its storage's 16",
       "embed --encoder resnet18 --weights {} --images " + image + " --out " + run + "/features.npy"},
      {"past-end.safetensors", "safetensors", "outside the 8 data bytes",
       "embed --encoder resnet18 --weights {} --images " + image + " --out " + run + "/features.npy"},
      {"negative.npy", "npy", "is not a tuple of non-negative integers", ""},
      {"deep.yaml", "config", "deep.yaml", "train --config {} --run.dir " + run},
      {"huge.png", "image", "more than the 1073741824 pixels", "embed --encoder resnet18 --images {} --out " + run + "/f.npy"},
  };
#ifdef TESSERA_WITH_SLIDES
  // An HDF5 feature bag whose coords and features disagree in length.
  testing::write_clam_layout(dir.file("mismatch.h5"), torch::randn({10, 4}), torch::zeros({7, 2}, torch::kLong));
  set.push_back({"mismatch.h5", "h5", "has 10 feature rows but 'coords' of shape [7, 2]", ""});
#endif
  for (const auto& h : set) {
    const auto path = dir.file(h.name);
    std::string message;
    try {
      if (h.harness == "config") {
        Config().load_yaml(path);
      } else if (h.harness == "npy") {
        read_npy(path);
      } else {
        fuzz::read_as(h.harness, path);
      }
      ADD_FAILURE() << h.name << " was accepted";
    } catch (const Error& e) {
      message = e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << h.name << ": " << e.what() << " (not a tessera::Error)";
    }
    EXPECT_NE(message.find(h.error), std::string::npos) << h.name << ": " << message;
    EXPECT_NE(message.find(fs::path(h.name).filename().string()), std::string::npos) << "the error names no file: " << message;
    if (h.command.empty()) continue;
    std::string command = h.command;
    if (const auto at = command.find("{}"); at != std::string::npos) command.replace(at, 2, path);
    const auto log = dir.file("log.txt");
    const int status = testing::run_cli(command, log);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << command << " -> " << status << "\n" << testing::read_text(log);
    const auto text = testing::read_text(log);
    EXPECT_NE(text.find(fs::path(h.name).filename().string()), std::string::npos) << command << ":\n" << text;
    EXPECT_EQ(text.find("terminate called"), std::string::npos) << text;
  }
  EXPECT_EQ(snapshot(run), before) << "a command changed the existing run";
}

}  // namespace
}  // namespace tessera

#pragma once
// Shared by the engine tests (batch, steering, checkpoint, prefix cache): a tiny synthetic model
// (sliding, CSA and HCA layers) on the CPU backend, token sequences, and a
// scratch directory removed at the end.
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "engine/session.h"
#include "model/synth.h"
#include "util/log.h"

namespace ds4::engine::test {

namespace fs = std::filesystem;

inline std::shared_ptr<model::Model> tiny_model(const std::string& recipe = "f32", uint64_t seed = 1) {
  const fs::path path = fs::temp_directory_path() /
                        ("ds4_cache_test_" + recipe + "_" + std::to_string(seed) + "_" + std::to_string(::getpid()) + ".gguf");
  log::set_level(log::Level::warn);  // synth lists every tensor at info
  model::SynthOptions so;
  so.shape = "tiny";
  so.recipe = recipe;
  so.seed = seed;
  so.output = path.string();
  model::synth(so);
  auto m = model::Model::load(path.string());
  fs::remove(path);  // the mapping stays valid
  return m;
}

// Tokens of a prompt family: sequences with equal `salt` share their prefixes.
inline std::vector<int32_t> toks(int n, int salt = 0, int from = 0) {
  std::vector<int32_t> t;
  for (int i = from; i < from + n; ++i) t.push_back((i * 37 + salt * 101 + 5) % 500);
  return t;
}

inline std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() / ("ds4_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path)) out.push_back(e.path().filename().string());
    return out;
  }
};

}  // namespace ds4::engine::test

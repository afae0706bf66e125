#include "util/default_model.h"

#include <cstdlib>
#include <fstream>

#include "util/error.h"

namespace ds4 {

namespace fs = std::filesystem;

fs::path default_model_record() {
  if (const char* x = std::getenv("XDG_CONFIG_HOME"); x && *x) return fs::path(x) / "ds4" / "default-model";
  if (const char* h = std::getenv("HOME"); h && *h) return fs::path(h) / ".config" / "ds4" / "default-model";
  fail("cannot place the default-model record: neither XDG_CONFIG_HOME nor HOME is set");
}

std::optional<std::string> read_default_model() {
  const fs::path rec = default_model_record();
  std::ifstream f(rec);
  if (!f) return std::nullopt;
  std::string line;
  std::getline(f, line);
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  if (line.empty()) return std::nullopt;
  return line;
}

void write_default_model(const std::string& model_path) {
  const fs::path rec = default_model_record();
  std::error_code ec;
  fs::create_directories(rec.parent_path(), ec);
  if (ec) fail("{}: cannot create the directory: {}", rec.parent_path().string(), ec.message());
  const fs::path tmp = rec.string() + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << model_path << "\n";
    if (!f.flush()) fail("{}: cannot write", tmp.string());
  }
  fs::rename(tmp, rec, ec);
  if (ec) fail("{}: cannot replace: {}", rec.string(), ec.message());
}

std::string resolve_model_path(const std::string& given) {
  if (!given.empty()) return given;
  const auto rec = read_default_model();
  if (!rec)
    fail("no model given: pass -m FILE.gguf, or fetch one with `ds4 pull q2-imatrix` (it becomes the default model)");
  std::error_code ec;
  if (!fs::exists(*rec, ec))
    fail("the default model {} (recorded in {}) is gone: pass -m FILE.gguf or pull it again", *rec,
         default_model_record().string());
  return *rec;
}

}  // namespace ds4

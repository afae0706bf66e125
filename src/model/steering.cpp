#include "model/steering.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "util/error.h"

namespace ds4::model {

std::string steering_metadata_path(const std::string& f32_path) {
  const std::string ext = ".f32";
  if (f32_path.size() > ext.size() && f32_path.compare(f32_path.size() - ext.size(), ext.size(), ext) == 0)
    return f32_path.substr(0, f32_path.size() - ext.size()) + ".json";
  return f32_path + ".json";
}

SteeringVectors SteeringVectors::load(const std::string& path, const ModelConfig& c) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) fail("steering file {}: cannot open for reading", path);
  const auto bytes = static_cast<uint64_t>(f.tellg());
  const uint64_t want = uint64_t{c.n_layer} * c.n_embd * sizeof(float);
  if (bytes != want)
    fail("steering file {}: {} bytes, but this model needs exactly {} ({} layers x {} floats of f32)", path, bytes,
         want, c.n_layer, c.n_embd);
  SteeringVectors v;
  v.path = path;
  v.n_layer = c.n_layer;
  v.n_embd = c.n_embd;
  v.dirs.resize(static_cast<size_t>(want / sizeof(float)));
  f.seekg(0);
  if (!f.read(reinterpret_cast<char*>(v.dirs.data()), static_cast<std::streamsize>(want)))
    fail("steering file {}: read failed", path);
  for (size_t i = 0; i < v.dirs.size(); ++i)
    if (!std::isfinite(v.dirs[i]))
      fail("steering file {}: value {} at layer {}, index {} (byte offset {}) is not finite", path, v.dirs[i],
           i / c.n_embd, i % c.n_embd, i * sizeof(float));

  const std::string meta = steering_metadata_path(path);
  std::ifstream m(meta);
  if (m) {
    std::stringstream ss;
    ss << m.rdbuf();
    try {
      v.metadata = nlohmann::json::parse(ss.str());
    } catch (const nlohmann::json::exception& e) {
      fail("steering metadata {}: not valid JSON ({})", meta, e.what());
    }
    if (v.metadata.contains("shape")) {
      const auto& s = v.metadata["shape"];
      if (!s.is_array() || s.size() != 2 || !s[0].is_number_integer() || !s[1].is_number_integer() ||
          s[0].get<int64_t>() != c.n_layer || s[1].get<int64_t>() != c.n_embd)
        fail("steering metadata {}: \"shape\" is {}, this model needs [{}, {}]", meta, s.dump(), c.n_layer, c.n_embd);
    }
    if (v.metadata.contains("recommended_scales")) {
      const auto& r = v.metadata["recommended_scales"];
      bool ok = r.is_object() && !r.empty();
      for (auto it = r.begin(); ok && it != r.end(); ++it)
        ok = (it.key() == "ffn" || it.key() == "attn") && it->is_number() && std::isfinite(it->get<double>()) &&
             std::fabs(it->get<double>()) <= 100;
      if (!ok)
        fail("steering metadata {}: \"recommended_scales\" is {}; expected {{\"ffn\": S, \"attn\": S}} with S in "
             "[-100, 100]",
             meta, r.dump());
    }
  }
  return v;
}

std::optional<SteeringVectors::Scales> SteeringVectors::recommended_scales() const {
  if (!metadata.is_object() || !metadata.contains("recommended_scales")) return std::nullopt;
  const auto& r = metadata["recommended_scales"];
  Scales s;
  if (r.contains("ffn")) s.ffn = r["ffn"].get<float>();
  if (r.contains("attn")) s.attn = r["attn"].get<float>();
  return s;
}

void SteeringVectors::save(const std::string& f32_path) const {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(f32_path.c_str(), "wb"), &std::fclose);
  if (!f) fail("{}: cannot open for writing", f32_path);
  if (std::fwrite(dirs.data(), sizeof(float), dirs.size(), f.get()) != dirs.size() || std::fclose(f.release()) != 0)
    fail("{}: write failed (disk full?)", f32_path);
  if (!metadata.is_null()) {
    const std::string meta = steering_metadata_path(f32_path);
    std::ofstream m(meta);
    m << metadata.dump(2) << "\n";
    if (!m.flush()) fail("{}: write failed (disk full?)", meta);
  }
}

void steer_row(std::span<const float> d, float s, std::span<float> y) {
  double dot = 0;
  for (size_t i = 0; i < d.size(); ++i) dot += static_cast<double>(d[i]) * y[i];
  const auto k = static_cast<float>(static_cast<double>(s) * dot);
  for (size_t i = 0; i < d.size(); ++i) y[i] -= k * d[i];
}

}  // namespace ds4::model

// `ds4 info FILE.gguf [--json]`: metadata, tensor table and per-type totals.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>

#include <cstdio>
#include <map>

#include "cli/commands.h"
#include "gguf/gguf.h"

namespace ds4::cli {
namespace {

constexpr size_t kArrayPreview = 8;

nlohmann::ordered_json value_json(const gguf::Value& v) {
  using gguf::ValueType;
  switch (v.type) {
    case ValueType::BOOL: return v.u != 0;
    case ValueType::STRING: return v.s;
    case ValueType::FLOAT32:
    case ValueType::FLOAT64: return v.f;
    case ValueType::ARRAY: {
      nlohmann::ordered_json a = nlohmann::ordered_json::array();
      for (size_t k = 0; k < v.items.size() && k < kArrayPreview; ++k) a.push_back(value_json(v.items[k]));
      return a;
    }
    default:
      if (v.is_integer() && (v.type == ValueType::INT8 || v.type == ValueType::INT16 || v.type == ValueType::INT32 ||
                             v.type == ValueType::INT64))
        return v.i;
      return v.u;
  }
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} B", b) : fmt::format("{:.2f} {}", b, units[u]);
}

void run_info(const std::string& path, bool as_json) {
  gguf::File f = gguf::File::open(path);
  struct Total {
    size_t count = 0;
    uint64_t bytes = 0;
    int64_t elements = 0;
  };
  std::map<std::string, Total> totals;
  uint64_t all_bytes = 0;
  for (const auto& t : f.tensors()) {
    auto& tot = totals[std::string(ggml_type_name(t.type))];
    ++tot.count;
    tot.bytes += t.nbytes;
    tot.elements += t.n_elements();
    all_bytes += t.nbytes;
  }

  if (as_json) {
    nlohmann::ordered_json j;
    j["path"] = path;
    j["version"] = f.version();
    j["alignment"] = f.alignment();
    j["data_offset"] = f.data_offset();
    j["file_size"] = f.file_size();
    nlohmann::ordered_json md = nlohmann::ordered_json::object();
    for (const auto& [k, v] : f.metadata()) {
      nlohmann::ordered_json e;
      e["type"] = gguf::value_type_name(v.type);
      if (v.type == gguf::ValueType::ARRAY) {
        e["element_type"] = gguf::value_type_name(v.elem_type);
        e["count"] = v.items.size();
        e["truncated"] = v.items.size() > kArrayPreview;
      }
      e["value"] = value_json(v);
      md[k] = e;
    }
    j["metadata"] = md;
    nlohmann::ordered_json ts = nlohmann::ordered_json::array();
    for (const auto& t : f.tensors())
      ts.push_back({{"name", t.name},
                    {"type", ggml_type_name(t.type)},
                    {"shape", t.ne},
                    {"bytes", t.nbytes},
                    {"offset", f.data_offset() + t.offset}});
    j["tensors"] = ts;
    nlohmann::ordered_json tot = nlohmann::ordered_json::object();
    for (const auto& [name, t] : totals) tot[name] = {{"count", t.count}, {"bytes", t.bytes}, {"elements", t.elements}};
    j["totals"] = tot;
    j["total_tensor_bytes"] = all_bytes;
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }

  fmt::print("file: {}\n", path);
  fmt::print("GGUF v{}, {} bytes ({}), alignment {}, data section at byte {}\n", f.version(), f.file_size(),
             human_bytes(static_cast<double>(f.file_size())), f.alignment(), f.data_offset());
  fmt::print("\nmetadata ({} keys):\n", f.metadata().size());
  size_t w = 0;
  for (const auto& [k, v] : f.metadata()) w = std::max(w, k.size());
  for (const auto& [k, v] : f.metadata()) {
    std::string type(gguf::value_type_name(v.type));
    if (v.type == gguf::ValueType::ARRAY) type = fmt::format("{}[{}]", gguf::value_type_name(v.elem_type), v.items.size());
    fmt::print("  {:<{}}  {:<14} {}\n", k, w, type, v.to_string(kArrayPreview));
  }
  fmt::print("\ntensors ({}):\n", f.tensors().size());
  size_t nw = 4;
  for (const auto& t : f.tensors()) nw = std::max(nw, t.name.size());
  fmt::print("  {:<{}}  {:<8} {:<24} {:>14} {:>14}\n", "name", nw, "type", "shape", "bytes", "offset");
  for (const auto& t : f.tensors())
    fmt::print("  {:<{}}  {:<8} {:<24} {:>14} {:>14}\n", t.name, nw, ggml_type_name(t.type), t.shape_string(), t.nbytes,
               f.data_offset() + t.offset);
  fmt::print("\ntotals by type:\n");
  for (const auto& [name, t] : totals)
    fmt::print("  {:<8} {:>6} tensors {:>16} bytes ({}, {:.1f}%)\n", name, t.count, t.bytes,
               human_bytes(static_cast<double>(t.bytes)),
               all_bytes ? 100.0 * static_cast<double>(t.bytes) / static_cast<double>(all_bytes) : 0.0);
  fmt::print("  {:<8} {:>6} tensors {:>16} bytes ({})\n", "all", f.tensors().size(), all_bytes,
             human_bytes(static_cast<double>(all_bytes)));
}

}  // namespace

const Registration kRegistration{"info", 100, [](CLI::App& app) {
  auto* sub = app.add_subcommand("info", "Show a GGUF file's metadata, tensor table and per-type totals");
  static std::string path;
  static bool as_json = false;
  sub->add_option("file", path, "GGUF file")->required();
  sub->add_flag("--json", as_json, "Print JSON instead of text");
  sub->callback([] { run_info(path, as_json); });
}};

}  // namespace ds4::cli

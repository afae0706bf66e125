#include "gguf/safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <cmath>
#include <limits>
#include <set>

#include "util/error.h"
#include "util/float16.h"

namespace ds4::safetensors {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct DTypeName {
  DType d;
  std::string_view name;
  size_t bits;
};
constexpr DTypeName kDTypes[] = {
    {DType::F64, "F64", 64},          {DType::F32, "F32", 32},          {DType::F16, "F16", 16},
    {DType::BF16, "BF16", 16},        {DType::F8_E4M3, "F8_E4M3", 8},   {DType::F8_E5M2, "F8_E5M2", 8},
    {DType::I64, "I64", 64},          {DType::I32, "I32", 32},          {DType::I16, "I16", 16},
    {DType::I8, "I8", 8},             {DType::U8, "U8", 8},             {DType::BOOL, "BOOL", 8},
    {DType::U16, "U16", 16},          {DType::U32, "U32", 32},          {DType::U64, "U64", 64},
    {DType::F8_E8M0, "F8_E8M0", 8},   {DType::F4, "F4", 4},
};

float e4m3_to_f32(uint8_t v) {
  const int sign = v >> 7, exp = (v >> 3) & 0xf, mant = v & 7;
  float r;
  if (exp == 0xf && mant == 7) return std::numeric_limits<float>::quiet_NaN();
  if (exp == 0)
    r = std::ldexp(static_cast<float>(mant), -9);
  else
    r = std::ldexp(1.0f + static_cast<float>(mant) / 8.0f, exp - 7);
  return sign ? -r : r;
}

float e5m2_to_f32(uint8_t v) { return f16_to_f32(static_cast<uint16_t>(v << 8)); }

}  // namespace

std::string_view dtype_name(DType d) {
  for (const auto& x : kDTypes)
    if (x.d == d) return x.name;
  return "?";
}

size_t dtype_bits(DType d) {
  for (const auto& x : kDTypes)
    if (x.d == d) return x.bits;
  return 0;
}

int64_t Tensor::n_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string Tensor::shape_string() const {
  std::string s = "[";
  for (size_t k = 0; k < shape.size(); ++k) s += (k ? ", " : "") + std::to_string(shape[k]);
  return s + "]";
}

std::vector<float> Tensor::to_f32() const {
  const size_t n = static_cast<size_t>(n_elements());
  std::vector<float> out(n);
  auto load = [&](auto tag, auto conv) {
    using T = decltype(tag);
    for (size_t k = 0; k < n; ++k) {
      T v;
      std::memcpy(&v, data + k * sizeof(T), sizeof(T));
      out[k] = conv(v);
    }
  };
  switch (dtype) {
    case DType::F32: load(float{}, [](float v) { return v; }); break;
    case DType::F64: load(double{}, [](double v) { return static_cast<float>(v); }); break;
    case DType::F16: load(uint16_t{}, f16_to_f32); break;
    case DType::BF16: load(uint16_t{}, bf16_to_f32); break;
    case DType::F8_E4M3: load(uint8_t{}, e4m3_to_f32); break;
    case DType::F8_E5M2: load(uint8_t{}, e5m2_to_f32); break;
    case DType::F8_E8M0:
      load(uint8_t{}, [](uint8_t v) {
        return v == 0xff ? std::numeric_limits<float>::quiet_NaN() : std::ldexp(1.0f, int(v) - 127);
      });
      break;
    case DType::I64: load(int64_t{}, [](int64_t v) { return static_cast<float>(v); }); break;
    case DType::I32: load(int32_t{}, [](int32_t v) { return static_cast<float>(v); }); break;
    case DType::I16: load(int16_t{}, [](int16_t v) { return static_cast<float>(v); }); break;
    case DType::I8: load(int8_t{}, [](int8_t v) { return static_cast<float>(v); }); break;
    case DType::U8:
    case DType::BOOL: load(uint8_t{}, [](uint8_t v) { return static_cast<float>(v); }); break;
    case DType::U16: load(uint16_t{}, [](uint16_t v) { return static_cast<float>(v); }); break;
    case DType::U32: load(uint32_t{}, [](uint32_t v) { return static_cast<float>(v); }); break;
    case DType::U64: load(uint64_t{}, [](uint64_t v) { return static_cast<float>(v); }); break;
    case DType::F4: {
      // e2m1, two values per byte, low nibble first.
      static const float grid[8] = {0.f, .5f, 1.f, 1.5f, 2.f, 3.f, 4.f, 6.f};
      for (size_t k = 0; k < n; ++k) {
        uint8_t b = data[k / 2];
        uint8_t q = (k & 1) ? (b >> 4) : (b & 0xf);
        out[k] = (q & 8) ? -grid[q & 7] : grid[q & 7];
      }
      break;
    }
  }
  return out;
}

void Checkpoint::add_file(const std::string& path, bool first) {
  auto map = std::make_shared<MappedFile>(path);
  const uint8_t* p = map->data();
  const size_t size = map->size();
  if (size < 8) fail("{}: not a safetensors file: only {} bytes", path, size);
  uint64_t hlen;
  std::memcpy(&hlen, p, 8);
  if (hlen > size - 8) fail("{}: header length {} at byte 0 exceeds the file size {}", path, hlen, size);
  json header;
  try {
    header = json::parse(p + 8, p + 8 + hlen);
  } catch (const json::exception& e) {
    fail("{}: header is not valid JSON: {}", path, e.what());
  }
  if (!header.is_object()) fail("{}: header is not a JSON object", path);
  const size_t data_start = 8 + static_cast<size_t>(hlen);
  const size_t data_size = size - data_start;
  for (auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (first && entry.is_object())
        for (auto& [k, v] : entry.items())
          if (v.is_string()) metadata_[k] = v.get<std::string>();
      continue;
    }
    try {
      Tensor t;
      t.name = name;
      t.file = path;
      std::string dt = entry.at("dtype").get<std::string>();
      bool found = false;
      for (const auto& x : kDTypes)
        if (x.name == dt) {
          t.dtype = x.d;
          found = true;
        }
      if (!found) fail("unsupported dtype '{}'", dt);
      for (const auto& d : entry.at("shape")) {
        int64_t v = d.get<int64_t>();
        if (v < 0) fail("negative dimension {}", v);
        t.shape.push_back(v);
      }
      const auto& off = entry.at("data_offsets");
      if (!off.is_array() || off.size() != 2) fail("data_offsets must be [begin, end]");
      uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
      if (b > e || e > data_size) fail("data_offsets [{}, {}] outside the data section of {} bytes", b, e, data_size);
      uint64_t bits = dtype_bits(t.dtype);
      for (int64_t d : t.shape)
        if (__builtin_mul_overflow(bits, static_cast<uint64_t>(d), &bits)) fail("shape {} too large", t.shape_string());
      if ((bits + 7) / 8 != e - b)
        fail("{} {} needs {} bytes but data_offsets span {}", dtype_name(t.dtype), t.shape_string(), (bits + 7) / 8,
             e - b);
      t.data = p + data_start + b;
      t.nbytes = static_cast<size_t>(e - b);
      if (tensors_.count(name)) fail("tensor appears in more than one shard (also in {})", tensors_.at(name).file);
      tensors_.emplace(name, std::move(t));
    } catch (const json::exception& e) {
      fail("{}: tensor '{}': malformed header entry: {}", path, name, e.what());
    } catch (const Error& e) {
      fail("{}: tensor '{}': {}", path, name, e.what());
    }
  }
  maps_.push_back(std::move(map));
}

Checkpoint Checkpoint::open(const std::string& path_in) {
  fs::path path(path_in);
  if (fs::is_directory(path)) {
    if (fs::exists(path / "model.safetensors.index.json"))
      path /= "model.safetensors.index.json";
    else if (fs::exists(path / "model.safetensors"))
      path /= "model.safetensors";
    else
      fail("{}: no model.safetensors.index.json or model.safetensors in this folder", path_in);
  }
  Checkpoint c;
  const std::string s = path.string();
  if (s.size() >= 5 && s.substr(s.size() - 5) == ".json") {
    std::ifstream in(path);
    if (!in) fail("{}: cannot open", s);
    json index;
    try {
      index = json::parse(in);
    } catch (const json::exception& e) {
      fail("{}: not valid JSON: {}", s, e.what());
    }
    if (!index.contains("weight_map") || !index["weight_map"].is_object())
      fail("{}: missing object field 'weight_map'", s);
    std::set<std::string> shards;
    for (auto& [name, file] : index["weight_map"].items()) {
      if (!file.is_string()) fail("{}: weight_map['{}'] is not a string", s, name);
      shards.insert(file.get<std::string>());
    }
    bool first = true;
    for (const auto& shard : shards) {
      c.add_file((path.parent_path() / shard).string(), first);
      first = false;
    }
    for (auto& [name, file] : index["weight_map"].items()) {
      auto it = c.tensors_.find(name);
      if (it == c.tensors_.end())
        fail("{}: tensor '{}' is listed in weight_map but missing from {}", s, name, file.get<std::string>());
    }
  } else {
    c.add_file(s, true);
  }
  for (const auto& [name, t] : c.tensors_) c.names_.push_back(name);
  return c;
}

const Tensor* Checkpoint::find(std::string_view name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const Tensor& Checkpoint::get(std::string_view name) const {
  const Tensor* t = find(name);
  if (!t) fail("checkpoint: missing tensor '{}'", name);
  return *t;
}

}  // namespace ds4::safetensors

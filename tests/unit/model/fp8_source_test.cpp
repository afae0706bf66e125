// Reading the official release's block-scaled formats: FP8 e4m3 weights with
// 128x128 scales (UE8M0 or float) and FP4 e2m1 experts packed two per byte with
// 1x32 UE8M0 scales. Expected values are worked out from the format definitions.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/convert.h"
#include "util/error.h"

namespace ds4::model {
namespace {

namespace fs = std::filesystem;

struct Entry {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

std::string write_safetensors(const std::string& file, const std::vector<Entry>& es) {
  nlohmann::json h = nlohmann::json::object();
  size_t off = 0;
  for (const auto& e : es) {
    h[e.name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {off, off + e.bytes.size()}}};
    off += e.bytes.size();
  }
  std::string hs = h.dump();
  while (hs.size() % 8) hs += ' ';
  const fs::path p = fs::temp_directory_path() / (file + std::to_string(::getpid()) + ".safetensors");
  std::ofstream o(p, std::ios::binary);
  const uint64_t n = hs.size();
  o.write(reinterpret_cast<const char*>(&n), 8);
  o << hs;
  for (const auto& e : es) o.write(reinterpret_cast<const char*>(e.bytes.data()), static_cast<std::streamsize>(e.bytes.size()));
  return p.string();
}

// e4m3 code for sign s, exponent field e, mantissa m.
uint8_t e4m3(int s, int e, int m) { return static_cast<uint8_t>((s << 7) | (e << 3) | m); }

TEST(Fp8Source, BlockScales128WithUe8m0) {
  // weight [130, 4]: two row blocks (rows 0..127, 128..129), one column block
  const int64_t R = 130, C = 4;
  std::vector<uint8_t> w(static_cast<size_t>(R * C), e4m3(0, 7, 0));  // 1.0
  w[1] = e4m3(1, 8, 4);                                               // -(1 + 4/8) * 2 = -3
  w[static_cast<size_t>(129 * C + 3)] = e4m3(0, 0, 1);                // subnormal 2^-9
  std::vector<uint8_t> s = {127 - 2, 127 + 3};                       // UE8M0: 2^-2 and 2^3
  const auto path = write_safetensors("fp8", {{"x.weight", "F8_E4M3", {R, C}, w}, {"x.scale", "F8_E8M0", {2, 1}, s}});
  auto ck = safetensors::Checkpoint::open(path);
  std::vector<int64_t> shape;
  const auto v = load_source_f32(ck, "x.weight", &shape);
  EXPECT_EQ(shape, (std::vector<int64_t>{R, C}));
  EXPECT_EQ(v[0], 0.25f);
  EXPECT_EQ(v[1], -0.75f);
  EXPECT_EQ(v[static_cast<size_t>(127 * C)], 0.25f);
  EXPECT_EQ(v[static_cast<size_t>(128 * C)], 8.0f);
  EXPECT_EQ(v[static_cast<size_t>(129 * C + 3)], std::ldexp(1.0f, -9) * 8.0f);
  fs::remove(path);
}

TEST(Fp8Source, FloatScalesAlsoWork) {
  std::vector<uint8_t> w(4, e4m3(0, 7, 2));  // 1.25
  std::vector<uint8_t> s(4);
  const float sc = 0.5f;
  std::memcpy(s.data(), &sc, 4);
  const auto path = write_safetensors("fp8f", {{"y.weight", "F8_E4M3", {2, 2}, w}, {"y.weight_scale_inv", "F32", {1, 1}, s}});
  auto ck = safetensors::Checkpoint::open(path);
  const auto v = load_source_f32(ck, "y.weight", nullptr);
  for (float x : v) EXPECT_EQ(x, 0.625f);
  fs::remove(path);
}

TEST(Fp4Source, PackedE2m1With32WideScales) {
  // logical weight [2, 64]; packed I8 [2, 32]; scales [2, 2]
  std::vector<uint8_t> w(64, 0);
  w[0] = 0x2 | (0xF << 4);  // elements 0 = +1.0 (code 2), 1 = -6 (code 0xF)
  w[16] = 0x7;              // element 32 = +6 (second column block)
  w[32] = 0x5;              // row 1, element 0 = +3
  std::vector<uint8_t> s = {127, 127 + 1, 127 - 1, 127};  // row 0: 1, 2; row 1: 0.5, 1
  const auto path = write_safetensors("fp4", {{"e.weight", "I8", {2, 32}, w}, {"e.scale", "F8_E8M0", {2, 2}, s}});
  auto ck = safetensors::Checkpoint::open(path);
  std::vector<int64_t> shape;
  const auto v = load_source_f32(ck, "e.weight", &shape);
  EXPECT_EQ(shape, (std::vector<int64_t>{2, 64}));
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[1], -6.0f);
  EXPECT_EQ(v[2], 0.0f);
  EXPECT_EQ(v[32], 12.0f);
  EXPECT_EQ(v[64], 1.5f);
  fs::remove(path);
}

TEST(Fp8Source, ScaleGridMismatchIsAnError) {
  std::vector<uint8_t> w(16, e4m3(0, 7, 0));
  std::vector<uint8_t> s = {127, 127, 127};
  const auto path = write_safetensors("fp8bad", {{"z.weight", "F8_E4M3", {4, 4}, w}, {"z.scale", "F8_E8M0", {3, 1}, s}});
  auto ck = safetensors::Checkpoint::open(path);
  try {
    load_source_f32(ck, "z.weight", nullptr);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("z.scale"), std::string::npos) << e.what();
  }
  fs::remove(path);
}

}  // namespace
}  // namespace ds4::model

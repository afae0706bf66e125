// Writer -> reader round trips. The cross-implementation checks (gguf-py reads
// our files, we read gguf-py's) are in tests/py/test_gguf_interop.py.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "gguf/gguf.h"
#include "util/error.h"

namespace ds4::gguf {
namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("ds4_test_" + std::to_string(::getpid()) + "_" + name)).string();
}

std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = static_cast<uint8_t>(rng());
  return v;
}

// Every metadata value type, including nested arrays and an empty array.
void add_all_metadata(Writer& w) {
  w.set("general.architecture", Value::str("deepseek4"));
  w.set("t.u8", Value::u8(200));
  w.set("t.i8", Value::i8(-100));
  w.set("t.u16", Value::u16(60000));
  w.set("t.i16", Value::i16(-30000));
  w.set("t.u32", Value::u32(4000000000u));
  w.set("t.i32", Value::i32(-2000000000));
  w.set("t.u64", Value::u64(18000000000000000000ull));
  w.set("t.i64", Value::i64(-9000000000000000000ll));
  w.set("t.f32", Value::f32(1.5e-6f));
  w.set("t.f64", Value::f64(3.141592653589793));
  w.set("t.bool", Value::boolean(true));
  w.set("t.str", Value::str("h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c"));
  w.set("t.empty_str", Value::str(""));
  w.set("t.arr_f32", Value::f32_array({1.0f, -2.5f, 10.0f}));
  w.set("t.arr_i32", Value::i32_array({0, 4, 128, -1}));
  w.set("t.arr_str", Value::string_array({"a", "", "<\xef\xbd\x9c" "User\xef\xbd\x9c>"}));
  w.set("t.arr_empty", Value::array(ValueType::UINT32, {}));
  w.set("t.arr_nested", Value::array(ValueType::ARRAY, {Value::u32_array({1, 2}), Value::u32_array({3})}));
}

struct TensorSpec {
  std::string name;
  GgmlType type;
  std::vector<int64_t> ne;
};

const std::vector<TensorSpec> kTensors = {
    {"token_embd.weight", GgmlType::F16, {64, 10}},
    {"blk.0.attn_q_a.weight", GgmlType::Q8_0, {64, 3}},
    {"blk.0.ffn_down_exps.weight", GgmlType::Q2_K, {256, 2, 3}},
    {"blk.0.ffn_gate_exps.weight", GgmlType::IQ2_XXS, {256, 1, 2}},
    {"output_hc_scale.weight", GgmlType::F32, {1}},
    {"blk.0.ffn_gate_tid2eid.weight", GgmlType::I32, {6, 7}},
};

class RoundTrip : public ::testing::TestWithParam<uint32_t> {};

TEST_P(RoundTrip, MetadataAndTensorsSurvive) {
  const uint32_t alignment = GetParam();
  Writer w(alignment);
  add_all_metadata(w);
  std::vector<std::vector<uint8_t>> datas;
  uint32_t seed = 1;
  for (const auto& t : kTensors) {
    datas.push_back(random_bytes(tensor_nbytes(t.type, t.ne), seed++));
    w.add_tensor(t.name, t.type, t.ne, datas.back());
  }
  const std::string path = temp_path("rt_" + std::to_string(alignment) + ".gguf");
  w.write(path);

  File f = File::open(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), alignment);
  EXPECT_EQ(f.data_offset() % alignment, 0u);

  // The writer adds general.alignment itself when it is not the default.
  if (alignment != 32) {
    EXPECT_EQ(f.get("general.alignment").u, alignment);
  }
  ASSERT_EQ(f.metadata().size(), (alignment != 32 ? 1u : 0u) + 19u);
  EXPECT_EQ(f.get("t.u64").u, 18000000000000000000ull);
  EXPECT_EQ(f.get("t.i64").i, -9000000000000000000ll);
  EXPECT_EQ(f.get("t.i8").i, -100);
  EXPECT_FLOAT_EQ(static_cast<float>(f.get("t.f32").f), 1.5e-6f);
  EXPECT_EQ(f.get("t.f32").type, ValueType::FLOAT32);
  EXPECT_DOUBLE_EQ(f.get("t.f64").f, 3.141592653589793);
  EXPECT_TRUE(f.get("t.bool").as_bool());
  EXPECT_EQ(f.get("t.str").as_string(), "h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c");
  EXPECT_EQ(f.get("t.arr_str").as_string_array(),
            (std::vector<std::string>{"a", "", "<\xef\xbd\x9c" "User\xef\xbd\x9c>"}));
  EXPECT_EQ(f.get("t.arr_empty").items.size(), 0u);
  EXPECT_EQ(f.get("t.arr_empty").elem_type, ValueType::UINT32);
  const Value& nested = f.get("t.arr_nested");
  ASSERT_EQ(nested.items.size(), 2u);
  EXPECT_EQ(nested.items[0].items[1].u, 2u);
  EXPECT_EQ(nested.items[1].items[0].u, 3u);

  ASSERT_EQ(f.tensors().size(), kTensors.size());
  for (size_t k = 0; k < kTensors.size(); ++k) {
    const TensorInfo& t = f.tensor(kTensors[k].name);
    EXPECT_EQ(t.type, kTensors[k].type);
    EXPECT_EQ(t.ne, kTensors[k].ne);
    EXPECT_EQ(t.offset % alignment, 0u) << t.name;
    ASSERT_EQ(t.nbytes, datas[k].size());
    EXPECT_EQ(0, std::memcmp(t.data, datas[k].data(), t.nbytes)) << t.name;
  }
  std::remove(path.c_str());
}

INSTANTIATE_TEST_SUITE_P(Alignments, RoundTrip, ::testing::Values(32u, 1u, 64u, 4096u));

TEST(Writer, StreamingEqualsInMemory) {
  std::vector<std::vector<uint8_t>> datas;
  Writer a, b;
  add_all_metadata(a);
  add_all_metadata(b);
  uint32_t seed = 7;
  for (const auto& t : kTensors) {
    datas.push_back(random_bytes(tensor_nbytes(t.type, t.ne), seed++));
    a.add_tensor(t.name, t.type, t.ne, datas.back());
    b.add_tensor_info(t.name, t.type, t.ne);
  }
  const std::string pa = temp_path("mem.gguf"), pb = temp_path("stream.gguf");
  a.write(pa);
  b.begin(pb);
  for (size_t k = 0; k < kTensors.size(); ++k) b.write_tensor_data(kTensors[k].name, datas[k]);
  b.finish();
  EXPECT_EQ(read_all(pa), read_all(pb));
  std::remove(pa.c_str());
  std::remove(pb.c_str());
}

TEST(Writer, RejectsMisuse) {
  Writer w;
  w.add_tensor_info("x", GgmlType::F32, {4});
  EXPECT_THROW(w.add_tensor_info("x", GgmlType::F32, {4}), Error);           // duplicate
  EXPECT_THROW(w.add_tensor_info("q", GgmlType::Q8_0, {33}), Error);         // not a block multiple
  EXPECT_THROW(w.add_tensor_info("d", GgmlType::F32, {1, 1, 1, 1, 1}), Error);  // too many dims
  EXPECT_THROW(w.add_tensor("b", GgmlType::F32, {4}, std::vector<uint8_t>(15)), Error);  // wrong size
  const std::string p = temp_path("misuse.gguf");
  w.begin(p);
  EXPECT_THROW(w.write_tensor_data("y", std::vector<uint8_t>(16)), Error);   // wrong order
  EXPECT_THROW(w.finish(), Error);                                           // missing data
}

TEST(Writer, FailedWriteLeavesNoFile) {
  const std::string p = temp_path("unfinished.gguf");
  {
    Writer w;
    w.add_tensor_info("x", GgmlType::F32, {4});
    w.begin(p);
    // Destroyed without finish(): neither the target nor the temp file remain.
  }
  EXPECT_FALSE(std::filesystem::exists(p));
  EXPECT_FALSE(std::filesystem::exists(p + ".tmp"));
}

TEST(Writer, DiskFullIsAClearError) {
  if (!std::filesystem::exists("/dev/full")) GTEST_FAIL() << "/dev/full missing";
  // Writing through a symlink named *.tmp to /dev/full simulates a full disk.
  const std::string p = temp_path("full.gguf");
  std::filesystem::remove(p + ".tmp");
  std::filesystem::create_symlink("/dev/full", p + ".tmp");
  Writer w;
  w.add_tensor("x", GgmlType::F32, {1 << 16}, std::vector<uint8_t>(4 << 16));
  try {
    w.write(p);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("write failed"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(p));
  std::filesystem::remove(p + ".tmp");
}

TEST(TensorBytes, MatchesBlockGeometry) {
  EXPECT_EQ(tensor_nbytes(GgmlType::Q8_0, std::vector<int64_t>{4096, 1024}), 4096u / 32 * 34 * 1024);
  EXPECT_EQ(tensor_nbytes(GgmlType::Q2_K, std::vector<int64_t>{4096, 2048, 256}), 4096u / 256 * 84 * 2048 * 256);
  EXPECT_EQ(tensor_nbytes(GgmlType::IQ2_XXS, std::vector<int64_t>{4096, 2048}), 4096u / 256 * 66 * 2048);
  EXPECT_THROW(tensor_nbytes(GgmlType::Q4_K, std::vector<int64_t>{100, 2}), Error);
  EXPECT_THROW(tensor_nbytes(GgmlType::F32, std::vector<int64_t>{1ll << 40, 1ll << 40}), Error);
}

}  // namespace
}  // namespace ds4::gguf

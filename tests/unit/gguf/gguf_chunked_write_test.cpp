// Writer::write_tensor_chunk: a tensor written as any split into chunks gives
// the same file as one write_tensor_data per tensor, and misuse is an error.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "gguf/gguf.h"
#include "util/error.h"

namespace ds4::gguf {
namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("ds4_chunk_test_" + std::to_string(::getpid()) + "_" + name)).string();
}

std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct T {
  std::string name;
  GgmlType type;
  std::vector<int64_t> ne;
};
// Odd sizes so that padding between tensors is exercised.
const std::vector<T> kTensors = {
    {"a", GgmlType::F32, {7}},
    {"b", GgmlType::Q8_0, {64, 5}},
    {"c", GgmlType::F16, {3, 3}},
    {"d", GgmlType::Q2_K, {256, 3}},
};

void declare(Writer& w) {
  w.set("general.architecture", Value::str("test"));
  for (const auto& t : kTensors) w.add_tensor_info(t.name, t.type, t.ne);
}

std::vector<std::vector<uint8_t>> datas() {
  std::mt19937 rng(3);
  std::vector<std::vector<uint8_t>> d;
  for (const auto& t : kTensors) {
    d.emplace_back(tensor_nbytes(t.type, t.ne));
    for (auto& x : d.back()) x = static_cast<uint8_t>(rng());
  }
  return d;
}

TEST(WriterChunks, AnySplitEqualsWholeWrites) {
  const auto d = datas();
  Writer whole;
  declare(whole);
  const std::string pw = temp_path("whole.gguf");
  whole.begin(pw);
  for (size_t k = 0; k < kTensors.size(); ++k) whole.write_tensor_data(kTensors[k].name, d[k]);
  whole.finish();
  const auto expect = read_all(pw);
  std::remove(pw.c_str());

  // Chunk sizes 1, 3, 17, whole; also empty chunks, which must be harmless.
  for (size_t step : {size_t{1}, size_t{3}, size_t{17}, size_t{1} << 20}) {
    Writer w;
    declare(w);
    const std::string p = temp_path("chunks.gguf");
    w.begin(p);
    for (size_t k = 0; k < kTensors.size(); ++k) {
      w.write_tensor_chunk(kTensors[k].name, std::span<const uint8_t>());
      for (size_t at = 0; at < d[k].size(); at += step)
        w.write_tensor_chunk(kTensors[k].name, std::span(d[k]).subspan(at, std::min(step, d[k].size() - at)));
    }
    w.finish();
    EXPECT_EQ(read_all(p), expect) << "chunk size " << step;
    std::remove(p.c_str());
  }
}

TEST(WriterChunks, MixesWithWholeWrites) {
  const auto d = datas();
  Writer w;
  declare(w);
  const std::string p = temp_path("mixed.gguf");
  w.begin(p);
  w.write_tensor_data("a", d[0]);
  w.write_tensor_chunk("b", std::span(d[1]).first(10));
  w.write_tensor_chunk("b", std::span(d[1]).subspan(10));
  w.write_tensor_data("c", d[2]);
  w.write_tensor_chunk("d", d[3]);
  w.finish();
  const File f = File::open(p);
  for (size_t k = 0; k < kTensors.size(); ++k) {
    const TensorInfo& ti = f.tensor(kTensors[k].name);
    ASSERT_EQ(ti.nbytes, d[k].size());
    EXPECT_TRUE(std::equal(d[k].begin(), d[k].end(), ti.data)) << kTensors[k].name;
  }
  std::remove(p.c_str());
}

TEST(WriterChunks, RejectsMisuse) {
  const auto d = datas();
  Writer w;
  declare(w);
  EXPECT_THROW(w.write_tensor_chunk("a", d[0]), Error);  // before begin()
  const std::string p = temp_path("misuse.gguf");
  w.begin(p);
  EXPECT_THROW(w.write_tensor_chunk("b", d[1]), Error);  // out of order
  w.write_tensor_chunk("a", std::span(d[0]).first(4));
  // Overrun: 4 written, 28 needed, 28 more offered.
  try {
    w.write_tensor_chunk("a", d[0]);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs 28 bytes, got 32"), std::string::npos) << e.what();
  }
  // A whole write while a tensor is half done.
  EXPECT_THROW(w.write_tensor_data("a", d[0]), Error);
  // finish() with a partial tensor names it and the bytes written.
  try {
    w.finish();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'a', 4 of 28 bytes"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ds4::gguf

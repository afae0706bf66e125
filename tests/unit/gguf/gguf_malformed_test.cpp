// The reader's answer to every kind of broken file: one ds4::Error whose message
// names the problem (and the byte offset where one applies), never a crash.
#include <gtest/gtest.h>

#include "gguf/gguf.h"
#include "gguf_builder.h"
#include "util/error.h"

namespace ds4::gguf {
namespace {

using ds4::testing::RawGguf;

// Parses `bytes`, expecting an Error whose text contains every `needle`.
void expect_error(const std::vector<uint8_t>& bytes, std::initializer_list<std::string> needles) {
  try {
    parse(bytes, "bad.gguf");
    FAIL() << "parse succeeded; expected an error mentioning " << *needles.begin();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("bad.gguf"), std::string::npos) << msg;
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "missing '" << n << "' in: " << msg;
  }
}

std::vector<uint8_t> valid_file() {
  Writer w;
  w.set("general.architecture", Value::str("deepseek4"));
  w.set("a.list", Value::string_array({"x", "yy", "zzz"}));
  w.add_tensor("t0", GgmlType::F32, {8}, std::vector<uint8_t>(32, 1));
  w.add_tensor("t1", GgmlType::Q8_0, {32, 2}, std::vector<uint8_t>(68, 2));
  auto h = w.header_bytes();
  // header + t0 (32 bytes, aligned) + t1 (68 bytes)
  h.resize(h.size() + 32, 1);
  h.resize(h.size() + 68, 2);
  return h;
}

TEST(Malformed, ValidFileParses) {
  auto b = valid_file();
  File f = parse(b, "ok.gguf");
  EXPECT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.tensor("t1").data[0], 2);
}

TEST(Malformed, EveryTruncationIsAnError) {
  auto b = valid_file();
  for (size_t n = 0; n < b.size(); ++n) {
    std::vector<uint8_t> cut(b.begin(), b.begin() + static_cast<long>(n));
    EXPECT_THROW(parse(cut, "cut.gguf"), Error) << "prefix of " << n << " bytes";
  }
}

TEST(Malformed, TruncationMessageNamesOffset) {
  auto b = valid_file();
  b.resize(100);  // inside the metadata
  expect_error(b, {"truncated at byte"});
  b.resize(30);  // the counts alone no longer fit
  expect_error(b, {"tensor count 2 at byte 8", "truncated"});
}

TEST(Malformed, WrongMagic) {
  auto b = valid_file();
  b[0] = 'X';
  expect_error(b, {"bad magic", "byte 0"});
}

TEST(Malformed, Versions) {
  expect_error(RawGguf().header(1, 0, 0).b, {"version 1", "byte 4"});
  expect_error(RawGguf().header(4, 0, 0).b, {"unsupported GGUF version 4", "byte 4"});
  expect_error(RawGguf().header(0x03000000, 0, 0).b, {"big-endian"});
  EXPECT_NO_THROW(parse(RawGguf().header(2, 0, 0).b, "v2.gguf"));
  EXPECT_NO_THROW(parse(RawGguf().header(3, 0, 0).b, "v3.gguf"));
}

TEST(Malformed, AbsurdCounts) {
  expect_error(RawGguf().header(3, 1ull << 60, 0).b, {"tensor count", "byte 8"});
  expect_error(RawGguf().header(3, 0, 1ull << 60).b, {"metadata count", "byte 16"});
}

TEST(Malformed, AbsurdStringLength) {
  RawGguf r;
  r.header(3, 0, 1).put<uint64_t>(1ull << 62).zeros(64);
  expect_error(r.b, {"length", "byte 24"});
  RawGguf v;
  v.header(3, 0, 1).str("k").put<uint32_t>(8).put<uint64_t>(1000).zeros(10);
  expect_error(v.b, {"metadata 'k'", "claims 1000 bytes"});
}

TEST(Malformed, AbsurdArrayCount) {
  RawGguf r;
  r.header(3, 0, 1).str("arr").put<uint32_t>(9).put<uint32_t>(4).put<uint64_t>(1ull << 40).zeros(8);
  expect_error(r.b, {"metadata 'arr'", "cannot fit"});
}

TEST(Malformed, DeepArrayNesting) {
  RawGguf r;
  r.header(3, 0, 1).str("deep").put<uint32_t>(9);
  for (int k = 0; k < 20; ++k) r.put<uint32_t>(9).put<uint64_t>(1);
  r.put<uint32_t>(4).put<uint64_t>(0);
  expect_error(r.b, {"nests arrays deeper"});
}

TEST(Malformed, UnknownValueType) {
  RawGguf r;
  r.header(3, 0, 1).str("k").put<uint32_t>(99).zeros(8);
  expect_error(r.b, {"unknown value type 99", "byte 33"});
}

TEST(Malformed, BadBool) {
  RawGguf r;
  r.header(3, 0, 1).str("flag").put<uint32_t>(7).put<uint8_t>(5);
  expect_error(r.b, {"bool has value 5"});
}

TEST(Malformed, DuplicateKey) {
  RawGguf r;
  r.header(3, 0, 2).kv_u32("same", 1).kv_u32("same", 2);
  expect_error(r.b, {"duplicate metadata key 'same'"});
}

TEST(Malformed, BadAlignment) {
  RawGguf r;
  r.header(3, 0, 1).kv_u32("general.alignment", 24);
  expect_error(r.b, {"not a power of two"});
}

TEST(Malformed, DuplicateTensorName) {
  RawGguf r;
  r.header(3, 2, 0).tensor("w", {8}, 0, 0).tensor("w", {8}, 0, 32).pad(32).zeros(64);
  expect_error(r.b, {"duplicate tensor name 'w'"});
}

TEST(Malformed, TooManyDims) {
  RawGguf r;
  r.header(3, 1, 0).tensor("w", {1, 1, 1, 1, 1}, 0, 0).pad(32).zeros(32);
  expect_error(r.b, {"tensor 'w'", "5 dimensions"});
}

TEST(Malformed, UnknownTensorType) {
  RawGguf r;
  r.header(3, 1, 0).tensor("w", {8}, 77, 0).pad(32).zeros(32);
  expect_error(r.b, {"tensor 'w'", "unknown type id 77"});
}

TEST(Malformed, RowNotBlockMultiple) {
  RawGguf r;
  r.header(3, 1, 0).tensor("w", {33}, 8, 0).pad(32).zeros(64);
  expect_error(r.b, {"tensor 'w'", "Q8_0", "not a multiple"});
}

TEST(Malformed, SizeOverflow) {
  RawGguf r;
  r.header(3, 1, 0).tensor("w", {1ull << 40, 1ull << 40, 1ull << 40}, 0, 0).pad(32);
  expect_error(r.b, {"tensor 'w'", "overflows"});
}

TEST(Malformed, MisalignedOffset) {
  RawGguf r;
  r.header(3, 1, 0).tensor("w", {8}, 0, 4).pad(32).zeros(64);
  expect_error(r.b, {"tensor 'w'", "offset 4", "alignment 32"});
}

TEST(Malformed, DataPastEnd) {
  RawGguf r;
  r.header(3, 1, 0).tensor("w", {1024}, 0, 0).pad(32).zeros(100);
  expect_error(r.b, {"tensor 'w'", "past the end", "truncated"});
  RawGguf far;
  far.header(3, 1, 0).tensor("w", {8}, 0, 1ull << 62).pad(32).zeros(32);
  expect_error(far.b, {"tensor 'w'", "past the end"});
}

TEST(Malformed, OpenMissingFile) {
  try {
    File::open("/nonexistent/dir/model.gguf");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/model.gguf"), std::string::npos);
  }
}

}  // namespace
}  // namespace ds4::gguf

// BPE engine invariants on the real V4 merges: the scan and heap merges agree,
// long runs stay linear-ish, arbitrary bytes round-trip, GGUF round trip.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>

#include "tok_fixture.h"
#include "tokenizer/byte_level.h"

namespace ds4::tokenizer {
namespace {

using test::v4;
using test::v4_metadata;

MergeTable v4_merges() {
  MergeTable m;
  const gguf::Value* merges = nullptr;
  for (const auto& [k, v] : v4_metadata())
    if (k == "tokenizer.ggml.merges") merges = &v;
  int32_t rank = 0;
  for (const auto& item : merges->items) {
    const size_t sp = item.s.find(' ');
    m.insert(*v4().find_token(item.s.substr(0, sp)), *v4().find_token(item.s.substr(sp + 1)), rank++,
             *v4().find_token(item.s.substr(0, sp) + item.s.substr(sp + 1)));
  }
  return m;
}

TEST(Bpe, ScanAndHeapMergesAgree) {
  const MergeTable merges = v4_merges();
  std::mt19937 rng(7);
  const std::string alphabet = "aaabbeeinnorsttt  __00112233..\xc3\xa9";
  for (int trial = 0; trial < 1000; ++trial) {
    std::string s;
    const int n = 1 + static_cast<int>(rng() % 120);
    for (int k = 0; k < n; ++k) s += alphabet[rng() % alphabet.size()];
    std::vector<TokenId> a, b;
    for (char c : s) a.push_back(*v4().find_token(byte_to_symbol(static_cast<uint8_t>(c))));
    b = a;
    bpe_merge_scan(merges, a);
    bpe_merge_heap(merges, b);
    ASSERT_EQ(a, b) << "input: " << s;
  }
}

TEST(Bpe, LongRunsRoundTrip) {
  // Megabyte-long single pieces (a run of spaces, of letters, of digits) must
  // not hit quadratic behaviour; the benchmark reports the speed.
  for (const std::string& s : {std::string(1 << 18, ' '), std::string(1 << 17, 'a'), std::string(1 << 17, '7'),
                               std::string(1 << 16, '\n')}) {
    const auto ids = v4().encode(s);
    EXPECT_EQ(v4().decode(ids), s);
  }
}

TEST(Bpe, ArbitraryBytesRoundTrip) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 200; ++trial) {
    std::string s(1 + rng() % 200, '\0');
    for (char& c : s) c = static_cast<char>(rng() & 0xff);
    EXPECT_EQ(v4().decode(v4().encode(s)), s);
    EXPECT_EQ(v4().decode(v4().encode(s, true)), s);
  }
}

TEST(Bpe, GgufRoundTrip) {
  const auto path = std::filesystem::temp_directory_path() / "ds4_tok_roundtrip.gguf";
  {
    gguf::Writer w;
    for (const auto& [k, v] : v4_metadata()) w.set(k, v);
    w.write(path.string());
  }
  const Tokenizer t = Tokenizer::from_gguf(gguf::File::open(path.string()));
  std::filesystem::remove(path);
  const std::string text = "Hello, world! 12345 \xe4\xbd\xa0\xe5\xa5\xbd   int x;\n\n\tfoo";
  EXPECT_EQ(t.encode(text), v4().encode(text));
  EXPECT_EQ(t.vocab_size(), v4().vocab_size());
  // known ids from Hugging Face for this exact string
  EXPECT_EQ(t.encode("Hello, world! 12345"), (std::vector<TokenId>{19923, 14, 2058, 3, 223, 6895, 1883}));
}

}  // namespace
}  // namespace ds4::tokenizer

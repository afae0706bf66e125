// The streaming detokenizer only ever emits complete, valid UTF-8.
#include <gtest/gtest.h>

#include "tok_fixture.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/utf8.h"

namespace ds4::tokenizer {
namespace {

using test::v4;

// One byte token per byte of `s`: the worst case for a streaming decoder, as
// when a model spells an emoji byte by byte.
std::vector<TokenId> byte_tokens(std::string_view s) {
  std::vector<TokenId> ids;
  for (char c : s) ids.push_back(*v4().find_token(byte_to_symbol(static_cast<uint8_t>(c))));
  return ids;
}

TEST(StreamDecoder, EmojiSplitOverByteTokensIsHeldBackUntilComplete) {
  const std::string text = "a\xf0\x9f\x98\x80 caf\xc3\xa9 \xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9 \xe4\xb8\xad";
  StreamDecoder dec(v4());
  std::string all;
  std::vector<std::string> chunks;
  for (TokenId id : byte_tokens(text)) {
    chunks.push_back(dec.push(id));
    EXPECT_TRUE(utf8_valid(chunks.back())) << "chunk " << chunks.size();
    all += chunks.back();
  }
  all += dec.flush();
  EXPECT_EQ(all, text);
  // "a" comes out at once; the first three bytes of U+1F600 produce nothing,
  // the fourth produces the whole character.
  ASSERT_GE(chunks.size(), 5u);
  EXPECT_EQ(chunks[0], "a");
  EXPECT_EQ(chunks[1], "");
  EXPECT_EQ(chunks[2], "");
  EXPECT_EQ(chunks[3], "");
  EXPECT_EQ(chunks[4], "\xf0\x9f\x98\x80");
}

TEST(StreamDecoder, EveryTokenOfRealEncodingsGivesValidChunks) {
  const std::string text =
      "Perch\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd\xef\xbc\x81 \xf0\x9f\x87\xae\xf0\x9f\x87\xb9 e\xcc\x81 "
      "\xd9\x85\xd8\xb1\xd8\xad\xd8\xa8\xd8\xa7 \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd\n  int x;";
  StreamDecoder dec(v4());
  std::string all;
  for (TokenId id : v4().encode(text)) {
    const std::string c = dec.push(id);
    EXPECT_TRUE(utf8_valid(c));
    all += c;
  }
  all += dec.flush();
  EXPECT_EQ(all, text);
  EXPECT_EQ(dec.pending_bytes(), 0u);
}

TEST(StreamDecoder, InvalidBytesBecomeReplacementCharacters) {
  StreamDecoder dec(v4());
  std::string out;
  for (TokenId id : byte_tokens("x\xff" "y\xc3")) out += dec.push(id);
  EXPECT_EQ(dec.pending_bytes(), 1u);  // 0xC3 could still start "é"
  out += dec.flush();
  EXPECT_EQ(out, "x\xef\xbf\xbdy\xef\xbf\xbd");
  // a lead byte followed by a non-continuation byte is replaced, the ASCII kept
  StreamDecoder dec2(v4());
  std::string out2;
  for (TokenId id : byte_tokens("\xe4\xb8" "A")) out2 += dec2.push(id);
  EXPECT_EQ(out2, "\xef\xbf\xbd" "A");
}

TEST(StreamDecoder, SpecialTokensDecodeToTheirSpelling) {
  StreamDecoder dec(v4());
  EXPECT_EQ(dec.push(v4().special_id("<think>")), "<think>");
  EXPECT_EQ(dec.push(v4().special_id("\xef\xbd\x9c" "DSML\xef\xbd\x9c")), "\xef\xbd\x9c" "DSML\xef\xbd\x9c");
}

}  // namespace
}  // namespace ds4::tokenizer

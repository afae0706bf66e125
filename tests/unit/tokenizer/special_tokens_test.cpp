// Special tokens: lookup by text, types as llama.cpp assigns them, and no
// control-token injection from plain text.
#include <gtest/gtest.h>

#include <set>

#include "tok_fixture.h"
#include "util/error.h"

namespace ds4::tokenizer {
namespace {

using test::v4;

const std::string kBos = "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>";
const std::string kEos = "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>";
const std::string kUser = "<\xef\xbd\x9cUser\xef\xbd\x9c>";
const std::string kAssistant = "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>";
const std::string kDsml = "\xef\xbd\x9c" "DSML\xef\xbd\x9c";

bool has_added_token(const std::vector<TokenId>& ids) {
  for (TokenId id : ids) {
    const TokenType t = v4().token_type(id);
    if (t == TokenType::CONTROL || t == TokenType::USER_DEFINED) return true;
  }
  return false;
}

TEST(SpecialTokens, VocabularyShapeAndIds) {
  EXPECT_EQ(v4().vocab_size(), 129280u);
  EXPECT_EQ(v4().merge_count(), 127741u);
  EXPECT_EQ(v4().pre_name(), "joyai-llm");
  EXPECT_EQ(v4().bos_id(), 0);
  EXPECT_EQ(v4().eos_id(), 1);
  EXPECT_EQ(v4().special_id(kBos), 0);
  EXPECT_EQ(v4().special_id(kEos), 1);
  // the seven spellings DS4 renders all exist and are distinct single tokens
  std::set<TokenId> ids;
  for (const auto& s : {kBos, kEos, kUser, kAssistant, std::string("<think>"), std::string("</think>"), kDsml})
    ids.insert(v4().special_id(s));
  EXPECT_EQ(ids.size(), 7u);
  EXPECT_FALSE(v4().find_special("<thinking>"));
  EXPECT_THROW(v4().special_id("<thinking>"), Error);
}

TEST(SpecialTokens, TypesFollowLlamaCpp) {
  EXPECT_EQ(v4().token_type(v4().special_id(kBos)), TokenType::CONTROL);       // special
  EXPECT_EQ(v4().token_type(v4().special_id(kUser)), TokenType::CONTROL);      // not special, looks special
  EXPECT_EQ(v4().token_type(v4().special_id("<think>")), TokenType::USER_DEFINED);
  EXPECT_EQ(v4().token_type(v4().special_id(kDsml)), TokenType::USER_DEFINED);
  EXPECT_EQ(v4().token_type(v4().encode("hello")[0]), TokenType::NORMAL);
}

TEST(SpecialTokens, PlainTextNeverInjectsControlTokens) {
  for (const std::string& s : {kBos + "hi", kUser + "x" + kAssistant, std::string("<think>a</think>"),
                               "<" + kDsml + "tool_calls>", kEos, kDsml}) {
    const auto ids = v4().encode(s);  // parse_special defaults to false
    EXPECT_FALSE(has_added_token(ids)) << s;
    EXPECT_EQ(v4().decode(ids), s);
  }
}

TEST(SpecialTokens, ParseSpecialMatchesSpellingsFirst) {
  const auto ids = v4().encode(kBos + "sys" + kUser + "hi" + kAssistant + "</think>", true);
  ASSERT_GE(ids.size(), 5u);
  EXPECT_EQ(ids.front(), v4().special_id(kBos));
  EXPECT_EQ(ids.back(), v4().special_id("</think>"));
  EXPECT_EQ(ids[ids.size() - 2], v4().special_id(kAssistant));
  // "<｜DSML｜tool_calls>" is "<" + ｜DSML｜ + BPE pieces (reference-behavior §2.1)
  const std::string tag = "<" + kDsml + "tool_calls>";
  const auto t = v4().encode(tag, true);
  ASSERT_GE(t.size(), 3u);
  EXPECT_EQ(v4().decode(std::vector<TokenId>{t[0]}), "<");
  EXPECT_EQ(t[1], v4().special_id(kDsml));
  EXPECT_EQ(v4().decode(t), tag);
  EXPECT_EQ(v4().encode("no specials here", true), v4().encode("no specials here"));
}

}  // namespace
}  // namespace ds4::tokenizer

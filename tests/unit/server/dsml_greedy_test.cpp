// Which positions of a generated tool block are sampled greedily
// (reference-behavior §4.7's table), fed one byte at a time as a model would
// produce them.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "server/dsml_greedy.h"

namespace ds4::server {
namespace {

// Greedy decision after each prefix of `text` that ends right before `marker`'s
// first occurrence at or after `from`.
bool greedy_before(const std::string& text, const std::string& marker, bool thinking, size_t from = 0) {
  const size_t at = text.find(marker, from);
  EXPECT_NE(at, std::string::npos) << marker;
  DsmlGreedyTracker t(thinking);
  for (size_t i = 0; i < at; ++i) t.feed(std::string(1, text[i]));
  return t.greedy();
}

const std::string kReply =
    "I should call it. <｜DSML｜tool_calls> inside thinking is no call</think>Sure.\n\n<｜DSML｜tool_calls>\n"
    "<｜DSML｜invoke name=\"get_weather\">\n"
    "<｜DSML｜parameter name=\"city\" string=\"true\">Paris by night</｜DSML｜parameter>\n"
    "<｜DSML｜parameter name=\"opts\" string=\"false\">{\"days\": 3, \"unit\": \"c\"}</｜DSML｜parameter>\n"
    "</｜DSML｜invoke>\n</｜DSML｜tool_calls> after";

TEST(DsmlGreedy, FollowsTheTableOfSection4_7) {
  EXPECT_FALSE(greedy_before(kReply, "should", true));         // reasoning
  EXPECT_FALSE(greedy_before(kReply, " inside thinking", true));  // DSML inside <think> is not a call
  EXPECT_FALSE(greedy_before(kReply, "Sure.", true));          // visible text
  EXPECT_TRUE(greedy_before(kReply, "\n<｜DSML｜invoke", true));  // structure
  EXPECT_TRUE(greedy_before(kReply, "get_weather", true));     // attribute text
  EXPECT_TRUE(greedy_before(kReply, "\"true\"", true));        // inside the parameter tag
  EXPECT_FALSE(greedy_before(kReply, "Paris", true));          // string body
  EXPECT_FALSE(greedy_before(kReply, "by night", true));
  // A closing tag begun at the end of a value: 2+ bytes are structure.
  EXPECT_FALSE(greedy_before(kReply, "/｜DSML｜parameter>\n<｜DSML｜parameter name=\"opts\"", true));
  EXPECT_TRUE(greedy_before(kReply, "｜DSML｜parameter>\n<｜DSML｜parameter name=\"opts\"", true));
  EXPECT_TRUE(greedy_before(kReply, "{\"days\"", true));       // JSON structure
  EXPECT_FALSE(greedy_before(kReply, "days\"", true));         // inside a JSON string
  EXPECT_TRUE(greedy_before(kReply, "3, ", true));             // a JSON number
  EXPECT_FALSE(greedy_before(kReply, "c\"}", true));           // JSON string again
  EXPECT_TRUE(greedy_before(kReply, "\n</｜DSML｜invoke>", true));
  EXPECT_FALSE(greedy_before(kReply, " after", true));          // the block is over
  // Without thinking the first tool block counts at once.
  EXPECT_TRUE(greedy_before(kReply, " inside thinking", false));
}

TEST(DsmlGreedy, PlainXmlSpellingAndMissingStringAttribute) {
  const std::string r = "<tool_calls>\n<invoke name=\"f\">\n<parameter name=\"x\">a \"q\" b</parameter>\n</invoke>\n</tool_calls>";
  EXPECT_TRUE(greedy_before(r, "\n<invoke", false));
  EXPECT_FALSE(greedy_before(r, "\"q\"", false));  // a missing string attribute means a string: quotes are text
  EXPECT_FALSE(greedy_before(r, " b<", false));
  EXPECT_TRUE(greedy_before(r, "\n</invoke>", false));
}

}  // namespace
}  // namespace ds4::server

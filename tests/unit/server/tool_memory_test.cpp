// The exact-DSML replay map: lookups need every id known and one shared
// block; the oldest ids go first when the bounds are reached.
#include <gtest/gtest.h>

#include "server/tool_memory.h"

namespace ds4::server {
namespace {

TEST(ToolMemory, LooksUpOneBlockForAllIds) {
  ToolMemory m;
  m.remember({"call_a", "call_b"}, "\n\nBLOCK1");
  m.remember({"call_c"}, "\n\nBLOCK2");
  EXPECT_EQ(m.lookup({"call_a"}), "\n\nBLOCK1");
  EXPECT_EQ(m.lookup({"call_a", "call_b"}), "\n\nBLOCK1");
  EXPECT_FALSE(m.lookup({"call_a", "call_c"}).has_value());  // two blocks: canonical rendering
  EXPECT_FALSE(m.lookup({"call_a", "call_x"}).has_value());  // an unknown id
  EXPECT_FALSE(m.lookup({}).has_value());

  std::vector<chat::Message> msgs(3);
  msgs[0].role = chat::Role::User;
  msgs[1].role = chat::Role::Assistant;
  msgs[1].tool_calls = {{"call_c", "f", "{}"}};
  msgs[2].role = chat::Role::Assistant;
  msgs[2].tool_calls = {{"call_zzz", "f", "{}"}};
  m.apply(msgs);
  EXPECT_EQ(msgs[1].raw_dsml, "\n\nBLOCK2");
  EXPECT_EQ(msgs[2].raw_dsml, "");
  EXPECT_EQ(msgs[0].raw_dsml, "");
}

TEST(ToolMemory, OldestIdsAreDroppedAtTheBounds) {
  ToolMemory by_count(2);
  by_count.remember({"a"}, "A");
  by_count.remember({"b"}, "B");
  by_count.remember({"c"}, "C");
  EXPECT_FALSE(by_count.lookup({"a"}).has_value());
  EXPECT_EQ(by_count.lookup({"b"}), "B");
  EXPECT_EQ(by_count.lookup({"c"}), "C");

  ToolMemory by_bytes(100, 10);  // 10 bytes: one 4-byte block + 1-byte id fits twice, not three times
  by_bytes.remember({"a"}, "AAAA");
  by_bytes.remember({"b"}, "BBBB");
  by_bytes.remember({"c"}, "CCCC");
  EXPECT_FALSE(by_bytes.lookup({"a"}).has_value());
  EXPECT_EQ(by_bytes.lookup({"c"}), "CCCC");
}

// A tool block as the parser cuts it (chat/parse.cpp: from the "\n\n" before
// the calls marker to the end marker).
std::string block(std::string_view city, bool plain = false) {
  if (plain)
    return "\n\n<tool_calls>\n<invoke name=\"w\">\n<parameter name=\"c\" string=\"true\">" + std::string(city) +
           "</parameter>\n</invoke>\n</tool_calls>";
  return "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"w\">\n<｜DSML｜parameter name=\"c\" string=\"true\">" +
         std::string(city) + "</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
}

TEST(ToolMemory, ExportCarriesOnlyBlocksOfTheTextAndImportRestoresThem) {
  ToolMemory m;
  m.remember({"call_2", "call_1"}, block("Paris"));  // one turn, two calls
  m.remember({"call_3"}, block("Rome", true));
  m.remember({"call_4"}, block("Oslo"));
  m.remember({"call_5"}, block("Paris"));  // the same block again, another turn
  const std::string text = "user: hi</think>" + block("Paris") + "<eos>result</think>ok" + block("Rome", true) +
                           "<eos>user: more";
  const std::string bytes = m.export_for(text);
  ASSERT_FALSE(bytes.empty());
  EXPECT_EQ(m.export_for("no tool calls here"), "");
  EXPECT_EQ(m.export_for(block("Lima")), "") << "a block nobody remembers";

  ToolMemory fresh;
  ASSERT_TRUE(fresh.import(bytes));
  EXPECT_EQ(fresh.lookup({"call_1", "call_2"}), block("Paris"));
  EXPECT_EQ(fresh.lookup({"call_5"}), block("Paris"));
  EXPECT_EQ(fresh.lookup({"call_3"}), block("Rome", true));
  EXPECT_FALSE(fresh.lookup({"call_4"}).has_value()) << "a block not in the text must not travel";

  // Bytes that are not an export are refused whole.
  ToolMemory other;
  for (const char* bad : {"", "not json", "[]", "{\"v\":2,\"tool_replay\":[]}",
                          "{\"v\":1,\"tool_replay\":[{\"ids\":[\"x\"]}]}",
                          "{\"v\":1,\"tool_replay\":[{\"ids\":[\"ok\"],\"dsml\":\"B\"},{\"ids\":[1],\"dsml\":\"B\"}]}"})
    EXPECT_FALSE(other.import(bad)) << bad;
  EXPECT_FALSE(other.lookup({"ok"}).has_value()) << "a refused import must take nothing";
}

TEST(ToolMemory, ExportForgetsEvictedIds) {
  ToolMemory m(2);
  m.remember({"a"}, block("Paris"));
  m.remember({"b"}, block("Paris"));
  m.remember({"c"}, block("Rome"));  // evicts a
  ToolMemory fresh;
  ASSERT_TRUE(fresh.import(m.export_for(block("Paris") + block("Rome"))));
  EXPECT_FALSE(fresh.lookup({"a"}).has_value());
  EXPECT_EQ(fresh.lookup({"b"}), block("Paris"));
  EXPECT_EQ(fresh.lookup({"c"}), block("Rome"));
  m.remember({"d"}, block("Oslo"));  // evicts b, the last id of Paris
  EXPECT_EQ(m.export_for(block("Paris")), "");
}

}  // namespace
}  // namespace ds4::server

// ResponseStore: what was put comes back, the least recently used entry goes
// first when the count or byte bound is passed, and an entry too large for the
// byte bound is not kept.
#include "server/response_store.h"

#include <gtest/gtest.h>

#include <string>

namespace ds4::server {
namespace {

Json items(const std::string& text) { return Json::array({{{"type", "message"}, {"role", "user"}, {"content", text}}}); }

TEST(ResponseStore, KeepsAndReturnsTheItems) {
  ResponseStore s(4, 1 << 20);
  s.put("resp_a", items("hello"));
  auto got = s.get("resp_a");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, items("hello"));
  EXPECT_FALSE(s.get("resp_b").has_value());
  s.put("resp_a", items("again"));  // the same id replaces its entry
  EXPECT_EQ(*s.get("resp_a"), items("again"));
  EXPECT_EQ(s.size(), 1u);
}

TEST(ResponseStore, KeepsTheResponseObjectAndForgets) {
  ResponseStore s(4, 1 << 20);
  s.put("resp_a", items("hello"), Json{{"id", "resp_a"}, {"object", "response"}});
  s.put("resp_b", items("no object"));
  EXPECT_EQ((*s.response("resp_a"))["object"], "response");
  EXPECT_FALSE(s.response("resp_b").has_value());
  EXPECT_TRUE(s.erase("resp_a"));
  EXPECT_FALSE(s.erase("resp_a"));
  EXPECT_FALSE(s.get("resp_a").has_value());
  EXPECT_EQ(s.size(), 1u);
}

TEST(ResponseStore, EvictsLeastRecentlyUsedBeyondTheCount) {
  ResponseStore s(2, 1 << 20);
  s.put("a", items("1"));
  s.put("b", items("2"));
  ASSERT_TRUE(s.get("a"));  // a is now the most recently used
  s.put("c", items("3"));
  EXPECT_TRUE(s.get("a"));
  EXPECT_FALSE(s.get("b"));
  EXPECT_TRUE(s.get("c"));
  EXPECT_EQ(s.size(), 2u);
}

TEST(ResponseStore, KeepsWithinTheByteBound) {
  const std::string big(1000, 'x');
  const size_t one = items(big).dump().size() + 1;
  ResponseStore s(100, 3 * one);
  for (char id : std::string("abcde")) s.put(std::string(1, id), items(big));
  EXPECT_EQ(s.size(), 3u);
  EXPECT_FALSE(s.get("a"));
  EXPECT_FALSE(s.get("b"));
  EXPECT_TRUE(s.get("e"));
  // Larger than the whole bound: not kept, and nothing else is pushed out.
  s.put("huge", items(std::string(4 * one, 'y')));
  EXPECT_FALSE(s.get("huge"));
  EXPECT_EQ(s.size(), 3u);
}

}  // namespace
}  // namespace ds4::server

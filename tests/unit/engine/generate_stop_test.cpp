// StopMatcher: text is released as soon as it can no longer start a stop
// string, and nothing of the stop string is ever released.
#include <gtest/gtest.h>

#include "engine/stop_matcher.h"

namespace ds4::engine {
namespace {

std::string feed_all(StopMatcher& m, const std::vector<std::string>& pieces) {
  std::string out;
  for (const auto& p : pieces) {
    out += m.push(p);
    if (m.hit()) return out;
  }
  return out + m.flush();
}

TEST(StopMatcher, NoStopsPassesEverythingThrough) {
  StopMatcher m({});
  EXPECT_EQ(m.push("abc"), "abc");
  EXPECT_EQ(m.held(), 0u);
}

TEST(StopMatcher, CutsBeforeStopInsideOnePiece) {
  StopMatcher m({"END"});
  EXPECT_EQ(m.push("hello END world"), "hello ");
  EXPECT_TRUE(m.hit());
  EXPECT_EQ(m.push("more"), "");
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, StopSplitAcrossPiecesIsNeverShown) {
  StopMatcher m({"</stop>"});
  EXPECT_EQ(m.push("abc</"), "abc");  // "</" may begin the stop string
  EXPECT_EQ(m.held(), 2u);
  EXPECT_EQ(m.push("st"), "");
  EXPECT_EQ(m.push("op>tail"), "");
  EXPECT_TRUE(m.hit());
}

TEST(StopMatcher, FalseStartIsReleased) {
  StopMatcher m({"</stop>"});
  EXPECT_EQ(m.push("a</s"), "a");
  EXPECT_EQ(m.push("x"), "</sx");
  EXPECT_FALSE(m.hit());
  EXPECT_EQ(m.push("</"), "");
  EXPECT_EQ(m.flush(), "</");
}

TEST(StopMatcher, EarliestOfSeveralStopsWins) {
  StopMatcher m({"cd", "b"});
  EXPECT_EQ(feed_all(m, {"a", "bcd"}), "a");
  EXPECT_EQ(m.matched(), "b");  // the one that ended the text, not the first listed
  StopMatcher m2({"xyz", "yq"});
  // "xy" is held for "xyz"; then "q" completes "yq", which starts earlier than any "xyz".
  EXPECT_EQ(feed_all(m2, {"axy", "q"}), "ax");
  EXPECT_EQ(m2.matched(), "yq");
  StopMatcher m3({"zz"});
  EXPECT_EQ(feed_all(m3, {"abc"}), "abc");
  EXPECT_EQ(m3.matched(), "");  // no hit, nothing matched
}

TEST(StopMatcher, EmptyStopStringsAreIgnored) {
  StopMatcher m({"", "Z"});
  EXPECT_EQ(feed_all(m, {"ab", "cZd"}), "abc");
}

TEST(StopMatcher, MultiByteUtf8StopAcrossPieces) {
  StopMatcher m({"é!"});
  EXPECT_EQ(feed_all(m, {"caf", "é", "!", "x"}), "caf");
}

}  // namespace
}  // namespace ds4::engine

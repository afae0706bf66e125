// Final DSML parse vs. goldens from antirez/ds4's parse_generated_message_ex,
// and the streaming parser: same events for any chunking, agreement with the
// final parse, and render -> parse round trips.
#include <gtest/gtest.h>

#include <random>

#include "fixtures.h"
#include "util/error.h"

namespace ds4::chat {
namespace {

using testing::load_fixture;

IdGenerator counting_ids() {
  auto n = std::make_shared<uint8_t>(0);
  return IdGenerator(IdStyle::OpenAI, [n](uint8_t* out) {
    for (int i = 0; i < 16; ++i) out[i] = 0;
    out[15] = ++*n;
  });
}

TEST(Parse, MatchesDs4Goldens) {
  Json cases = load_fixture("parse_cases.json");
  Json golden = load_fixture("parse_goldens.json");
  ASSERT_GE(cases.size(), 20u);
  for (const auto& c : cases) {
    std::string name = c["name"].get<std::string>();
    SCOPED_TRACE(name + " (" + c["section"].get<std::string>() + ")");
    const Json& g = golden[name];
    std::string text = c["text"].get<std::string>();
    ParsedMessage p = parse_completion(text, c["thinking"].get<bool>());
    ASSERT_EQ(p.ok, g["ok"].get<bool>());
    if (!p.ok) {
      // §4.8: a malformed block comes back as the whole raw text.
      EXPECT_EQ(p.content, text);
      EXPECT_FALSE(p.reasoning.has_value());
      EXPECT_TRUE(p.calls.empty());
      continue;
    }
    EXPECT_EQ(p.content, g["content"].get<std::string>());
    EXPECT_EQ(p.reasoning.has_value(), g["reasoning"].is_string());
    if (p.reasoning) {
      EXPECT_EQ(*p.reasoning, g["reasoning"].get<std::string>());
    }
    EXPECT_EQ(p.raw_dsml, g["raw_dsml"].is_string() ? g["raw_dsml"].get<std::string>() : "");
    ASSERT_EQ(p.calls.size(), g["calls"].size());
    for (size_t i = 0; i < p.calls.size(); ++i) {
      EXPECT_EQ(p.calls[i].name, g["calls"][i]["name"].get<std::string>());
      EXPECT_EQ(p.calls[i].arguments, g["calls"][i]["arguments"].get<std::string>());
    }
  }
}

TEST(Parse, CompactArguments) {
  EXPECT_EQ(compact_arguments(R"({"a": "x\ny", "b": [1, 2]})"), R"({"a":"x\ny","b":[1,2]})");
  EXPECT_EQ(compact_arguments(R"({"n": not json})"), "{}");
  EXPECT_EQ(compact_arguments("[1]"), "{}");
}

// ---- streaming ----------------------------------------------------------------

// Adjacent deltas of the same kind (and call) merged.
std::vector<StreamEvent> merged(const std::vector<StreamEvent>& in) {
  std::vector<StreamEvent> out;
  for (const auto& e : in) {
    bool delta = e.kind == StreamEvent::Kind::Reasoning || e.kind == StreamEvent::Kind::Text ||
                 e.kind == StreamEvent::Kind::ToolArgs;
    if (delta && !out.empty() && out.back().kind == e.kind && out.back().index == e.index) {
      out.back().text += e.text;
    } else if (!delta || !e.text.empty()) {
      out.push_back(e);
    }
  }
  return out;
}

struct StreamRun {
  std::vector<StreamEvent> events;
  ParsedMessage result;
  bool unterminated = false;
};

StreamRun stream(const std::string& text, const std::vector<size_t>& cuts, StreamOptions opt) {
  StreamParser p(opt, counting_ids());
  StreamRun r;
  size_t at = 0;
  for (size_t cut : cuts) {
    for (auto& e : p.feed(std::string_view(text).substr(at, cut - at))) r.events.push_back(e);
    at = cut;
  }
  for (auto& e : p.feed(std::string_view(text).substr(at))) r.events.push_back(e);
  for (auto& e : p.finish()) r.events.push_back(e);
  r.events = merged(r.events);
  r.result = p.result();
  r.unterminated = p.unterminated();
  return r;
}

// Whole, one byte at a time, and 50 random chunkings must agree.
StreamRun stream_all_ways(const std::string& text, StreamOptions opt) {
  StreamRun whole = stream(text, {}, opt);
  std::vector<size_t> every;
  for (size_t i = 1; i < text.size(); ++i) every.push_back(i);
  StreamRun bytes = stream(text, every, opt);
  EXPECT_EQ(bytes.events, whole.events) << "one byte at a time";
  EXPECT_EQ(bytes.unterminated, whole.unterminated);
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<size_t> cuts;
    for (size_t i = 1; i < text.size(); ++i) {
      if (rng() % 5 == 0) cuts.push_back(i);
    }
    StreamRun r = stream(text, cuts, opt);
    EXPECT_EQ(r.events, whole.events) << "random chunking " << trial;
  }
  return whole;
}

std::string kind_name(StreamEvent::Kind k) {
  switch (k) {
    case StreamEvent::Kind::Reasoning: return "R";
    case StreamEvent::Kind::Text: return "T";
    case StreamEvent::Kind::ToolStart: return "S";
    case StreamEvent::Kind::ToolArgs: return "A";
    case StreamEvent::Kind::ToolEnd: return "E";
  }
  return "?";
}

// Events as a compact string for readable expectations.
std::string show(const std::vector<StreamEvent>& ev) {
  std::string s;
  for (const auto& e : ev) s += kind_name(e.kind) + "[" + e.text + "]";
  return s;
}

TEST(Stream, EveryParseCaseIsChunkingInvariant) {
  for (const auto& c : load_fixture("parse_cases.json")) {
    SCOPED_TRACE(c["name"].get<std::string>());
    StreamOptions opt{c["thinking"].get<bool>(), true};
    StreamRun r = stream_all_ways(c["text"].get<std::string>(), opt);
    // The final result is the final parse, with streamed ids on the calls.
    ParsedMessage want = parse_completion(c["text"].get<std::string>(), opt.thinking);
    EXPECT_EQ(r.result.content, want.content);
    ASSERT_EQ(r.result.calls.size(), want.calls.size());
    for (const auto& call : r.result.calls) EXPECT_EQ(call.id.size(), 37u);
  }
}

TEST(Stream, ReasoningTextAndCall) {
  std::string text =
      "<think>plan it</think>Checking.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n"
      "<｜DSML｜parameter name=\"city\" string=\"true\">Par&amp;is \"x\"</｜DSML｜parameter>\n"
      "<｜DSML｜parameter name=\"days\" string=\"false\">[1, 2]</｜DSML｜parameter>\n"
      "</｜DSML｜invoke>\n</｜DSML｜tool_calls>ignored";
  StreamRun r = stream_all_ways(text, {true, true});
  EXPECT_EQ(show(r.events),
            "R[plan it]T[Checking.]S[get_weather]A[{\"city\":\"Par&is \\\"x\\\"\",\"days\":[1, 2]}]E[]");
  EXPECT_EQ(r.events[2].id, "call_00000000000000000000000000000001");
  EXPECT_FALSE(r.unterminated);
  ASSERT_EQ(r.result.calls.size(), 1u);
  EXPECT_EQ(r.result.calls[0].id, r.events[2].id);
  // The streamed fragments and the final arguments are the same JSON.
  EXPECT_EQ(Json::parse(r.events[3].text), Json::parse(r.result.calls[0].arguments));
}

TEST(Stream, TwoCallsShortSyntaxAndStop) {
  std::string text =
      "ok\n\n<DSML｜tool_calls>\n<DSML｜invoke name=\"a\">\n<DSML｜parameter name=\"p\" "
      "string=\"true\">1</DSML｜parameter>\n</DSML｜invoke>\n<DSML｜invoke name=\"b\">\n</DSML｜invoke>\n"
      "</DSML｜tool_calls>";
  StreamRun r = stream_all_ways(text, {false, true});
  EXPECT_EQ(show(r.events), "T[ok]S[a]A[{\"p\":\"1\"}]E[]S[b]A[{}]E[]");
  EXPECT_EQ(r.events[4].index, 1);
  EXPECT_EQ(r.result.calls.size(), 2u);
  StreamParser p({false, true}, counting_ids());
  p.feed(text);
  EXPECT_TRUE(p.done());
  EXPECT_TRUE(p.feed("more").empty());
}

TEST(Stream, PartialMarkersAreHeldNotDropped) {
  // Text that looks like a marker start but is not one comes out intact.
  StreamRun r = stream_all_ways("a <｜DSML｜tool_call b\n\n <tool c </thin", {false, true});
  EXPECT_EQ(show(r.events), "T[a <｜DSML｜tool_call b\n\n <tool c </thin]");
  StreamRun t = stream_all_ways("x </thin y</think>z  ", {true, true});
  EXPECT_EQ(show(t.events), "R[x </thin y]T[z  ]");
}

TEST(Stream, UnclosedThinkingStreamsAsReasoning) {
  StreamRun r = stream_all_ways("<thi", {true, true});
  EXPECT_EQ(show(r.events), "R[<thi]");
  // §4.2 QUIRK: the final parse returns it as content.
  EXPECT_EQ(r.result.content, "<thi");
  EXPECT_FALSE(r.result.reasoning.has_value());
}

TEST(Stream, NoToolsMeansPlainText) {
  std::string text = "a\n\n<｜DSML｜tool_calls>\n</｜DSML｜tool_calls>";
  StreamRun r = stream_all_ways(text, {false, false});
  EXPECT_EQ(show(r.events), "T[" + text + "]");
}

TEST(Stream, UnterminatedBlock) {
  std::string text = "</think>\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"p\" "
                     "string=\"true\">part &am";
  StreamRun r = stream_all_ways(text, {true, true});
  EXPECT_EQ(show(r.events), "S[f]A[{\"p\":\"part ]");
  EXPECT_TRUE(r.unterminated);
  EXPECT_FALSE(r.result.ok);
}

TEST(Stream, LooseShapeStopsProjectionFinalParseDecides) {
  std::string text =
      "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"o\">\n"
      "<｜DSML｜parameter name=\"a\" string=\"true\">x</｜DSML｜parameter>\n</｜DSML｜parameter>\n"
      "</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
  StreamRun r = stream_all_ways(text, {false, true});
  EXPECT_EQ(show(r.events), "S[f]A[{]");
  EXPECT_FALSE(r.unterminated);
  ASSERT_EQ(r.result.calls.size(), 1u);
  EXPECT_EQ(r.result.calls[0].arguments, R"({"o": {"a":"x"}})");
}

TEST(Stream, MalformedBlockIsReturnedAsText) {
  std::string text = "hi\n\n<｜DSML｜tool_calls>\njunk\n</｜DSML｜tool_calls>";
  StreamRun r = stream_all_ways(text, {false, true});
  EXPECT_FALSE(r.result.ok);
  EXPECT_EQ(r.result.content, text);
}

TEST(RoundTrip, RenderedCallsParseBack) {
  std::vector<ToolCall> calls = {
      {"1", "edit", R"({"path": "/a b.txt", "old": "x </｜DSML｜parameter> && <y>", "n": 3, "flags": [true, null]})"},
      {"2", "noop", "{}"},
      {"3", "raw", "not json"},
  };
  std::string dsml = canonical_dsml(calls);
  for (bool thinking : {false, true}) {
    std::string gen = (thinking ? "why</think>" : "") + std::string("Doing it.") + dsml;
    StreamRun r = stream_all_ways(gen, {thinking, true});
    const ParsedMessage& p = r.result;
    ASSERT_TRUE(p.ok);
    EXPECT_EQ(p.content, "Doing it.");
    EXPECT_EQ(p.raw_dsml, dsml);
    ASSERT_EQ(p.calls.size(), 3u);
    EXPECT_EQ(Json::parse(p.calls[0].arguments), Json::parse(calls[0].arguments));
    EXPECT_EQ(p.calls[1].arguments, "{}");
    EXPECT_EQ(Json::parse(p.calls[2].arguments), Json({{"arguments", "not json"}}));
    for (size_t i = 0; i < 3; ++i) EXPECT_EQ(p.calls[i].name, calls[i].name);
    // Streamed argument fragments agree with the final parse.
    int seen = 0;
    for (const auto& e : r.events) {
      if (e.kind != StreamEvent::Kind::ToolArgs) continue;
      EXPECT_EQ(Json::parse(e.text), Json::parse(p.calls[static_cast<size_t>(e.index)].arguments));
      ++seen;
    }
    EXPECT_EQ(seen, 3);
  }
}

TEST(Ids, FormatUniquenessAndTakenCheck) {
  IdGenerator real(IdStyle::Anthropic);
  std::string a = real.next(), b = real.next();
  EXPECT_EQ(a.substr(0, 6), "toolu_");
  EXPECT_EQ(a.size(), 38u);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef", 6), std::string::npos);
  EXPECT_NE(a, b);
  int calls = 0;
  IdGenerator g(
      IdStyle::OpenAI, [&calls](uint8_t* out) { std::fill(out, out + 16, static_cast<uint8_t>(calls++ / 2)); },
      [](const std::string& id) { return id == "call_00000000000000000000000000000000"; });
  EXPECT_EQ(g.next(), "call_01010101010101010101010101010101");
  // A source that repeats forever is an error, not a hang.
  IdGenerator stuck(IdStyle::OpenAI, [](uint8_t* out) { std::fill(out, out + 16, 7); });
  stuck.next();
  EXPECT_THROW(stuck.next(), ds4::Error);
}

}  // namespace
}  // namespace ds4::chat

#pragma once
// Syntax-greedy sampling inside DSML (reference-behavior §4.7): while the
// model writes a tool block, its structure (tags, attribute text, whitespace
// between elements, JSON punctuation and literals of string="false" values, a
// closing tag begun at the end of a value) is sampled greedily, so a
// temperature that suits prose cannot break the call's syntax; payloads
// (string="true" bodies and JSON strings) keep the request's sampling.
#include <string>
#include <string_view>

namespace ds4::server {

class DsmlGreedyTracker {
 public:
  // thinking: the prompt ended with <think>; DSML before </think> is not a call.
  explicit DsmlGreedyTracker(bool thinking);
  // The decoded text generated so far, piece by piece.
  void feed(std::string_view text);
  // Whether the next token should be picked greedily.
  bool greedy() const;

 private:
  enum class State { Reasoning, Outside, Structural, ParamTag, StringBody, JsonValue, Done };
  bool ends_with(std::string_view s) const;
  // Length of the longest suffix of the window that is a proper prefix of s.
  size_t partial(std::string_view s) const;

  State state_;
  int style_ = 0;
  std::string window_;    // the last bytes seen (marker detection)
  std::string tag_;       // the parameter tag being read
  bool in_string_ = false, escaped_ = false;
};

}  // namespace ds4::server

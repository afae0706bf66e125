#pragma once
// Cuts streamed text at the first stop string without ever showing any part of
// it: text that could still be the beginning of a stop string is held back
// until the next piece decides. Stop strings may span token boundaries.
#include <string>
#include <string_view>
#include <vector>

namespace ds4::engine {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);

  // Adds a piece; returns the text that is now safe to show. After a hit,
  // returns the text before the stop string and hit() is true.
  std::string push(std::string_view piece);
  // End of stream (or of a channel): releases held-back text.
  std::string flush();
  bool hit() const { return hit_; }
  // After a hit: the stop string that matched (Anthropic reports it).
  const std::string& matched() const { return matched_; }
  // Bytes currently held back.
  size_t held() const { return pending_.size(); }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool hit_ = false;
  std::string matched_;
};

}  // namespace ds4::engine

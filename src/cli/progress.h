#pragma once
// Prefill progress on stderr (reference-behavior §6.3/§8.3): on a terminal an
// in-place bar with tokens/s and ETA; otherwise one plain line per update, and
// only for prompts long enough to be worth reporting.
#include <chrono>
#include <cstdint>

namespace ds4::cli {

class PrefillProgress {
 public:
  // min_tokens: prompts shorter than this print nothing.
  PrefillProgress(bool tty, int64_t min_tokens = 1024);
  void update(int64_t done, int64_t total);
  // Clears the in-place line (call before printing anything else).
  void finish();

 private:
  bool tty_;
  int64_t min_tokens_;
  bool shown_ = false;
  int64_t last_done_ = -1;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace ds4::cli

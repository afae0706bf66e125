#pragma once
// Download progress on stderr (internal to download/): on a terminal one line
// redrawn in place with a bar, bytes, rate and ETA; otherwise a plain line at
// every tenth of the file, so logs stay short.
#include <chrono>
#include <cstdint>
#include <string>

namespace ds4::download {

// "1.5 GiB", "812.0 KiB", "17 B".
std::string human_bytes(double bytes);
// "1h02m", "3m07s", "42s"; "?" for a negative or non-finite value.
std::string human_seconds(double seconds);
// The text of one progress line (no colour, no carriage return). total < 0:
// unknown size. rate in bytes per second over this run; 0: not known yet.
std::string progress_text(const std::string& name, int64_t done, int64_t total, double rate, bool with_bar);

class TransferProgress {
 public:
  TransferProgress(bool tty, std::string name);
  // start: bytes already on disk before this request (not counted in the rate).
  void begin(int64_t start);
  void update(int64_t done, int64_t total);
  // Ends the in-place line (call before printing anything else).
  void finish();

 private:
  bool tty_;
  std::string name_;
  int64_t start_ = 0;
  int last_tenth_ = -1;
  bool shown_ = false;
  std::chrono::steady_clock::time_point t0_, last_draw_;
};

}  // namespace ds4::download

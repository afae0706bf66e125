#include "cli/progress.h"

#include <cstdio>
#include <string>

namespace ds4::cli {

PrefillProgress::PrefillProgress(bool tty, int64_t min_tokens)
    : tty_(tty), min_tokens_(min_tokens), t0_(std::chrono::steady_clock::now()) {}

void PrefillProgress::update(int64_t done, int64_t total) {
  if (total < min_tokens_ || done == last_done_) return;
  if (last_done_ < 0) t0_ = std::chrono::steady_clock::now();
  last_done_ = done;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  const double tps = secs > 0 ? static_cast<double>(done) / secs : 0;
  const double pct = 100.0 * static_cast<double>(done) / static_cast<double>(total);
  if (!tty_) {
    std::fprintf(stderr, "processing %lld input tokens: %lld/%lld (%.0f%%)\n", static_cast<long long>(total),
                 static_cast<long long>(done), static_cast<long long>(total), pct);
    return;
  }
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(kWidth * done / total);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.append(static_cast<size_t>(kWidth - filled), '.');
  const double eta = tps > 0 ? static_cast<double>(total - done) / tps : 0;
  // \x1b[2K clears leftovers of a longer previous line.
  std::fprintf(stderr, "\r\x1b[2K\x1b[36mprocessing %lld input tokens: [%s] %lld/%lld (%.0f%%) %.1f t/s ETA %.0fs\x1b[0m",
               static_cast<long long>(total), bar.c_str(), static_cast<long long>(done), static_cast<long long>(total),
               pct, tps, eta);
  std::fflush(stderr);
  shown_ = true;
}

void PrefillProgress::finish() {
  if (tty_ && shown_) std::fputs("\r\x1b[2K", stderr);
  shown_ = false;
}

}  // namespace ds4::cli

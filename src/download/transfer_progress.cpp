#include "download/transfer_progress.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdio>

namespace ds4::download {

std::string human_bytes(double bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} B", bytes) : fmt::format("{:.1f} {}", bytes, kUnits[u]);
}

std::string human_seconds(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const auto t = static_cast<long long>(std::llround(s));
  if (t >= 3600) return fmt::format("{}h{:02}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

std::string progress_text(const std::string& name, int64_t done, int64_t total, double rate, bool with_bar) {
  std::string out = name;
  out += ": ";
  if (total > 0) {
    const double frac = std::min(1.0, static_cast<double>(done) / static_cast<double>(total));
    if (with_bar) {
      constexpr int kWidth = 24;
      const int filled = static_cast<int>(kWidth * frac);
      out += '[';
      out.append(static_cast<size_t>(filled), '#');
      out.append(static_cast<size_t>(kWidth - filled), '.');
      out += "] ";
    }
    out += fmt::format("{:.0f}% {} of {}", 100 * frac, human_bytes(static_cast<double>(done)),
                       human_bytes(static_cast<double>(total)));
  } else {
    out += human_bytes(static_cast<double>(done));
  }
  if (rate > 0) {
    out += fmt::format(", {}/s", human_bytes(rate));
    if (total > 0) out += fmt::format(", ETA {}", human_seconds(static_cast<double>(total - done) / rate));
  }
  return out;
}

TransferProgress::TransferProgress(bool tty, std::string name) : tty_(tty), name_(std::move(name)) {}

void TransferProgress::begin(int64_t start) {
  start_ = start;
  t0_ = last_draw_ = std::chrono::steady_clock::now();
}

void TransferProgress::update(int64_t done, int64_t total) {
  const auto now = std::chrono::steady_clock::now();
  const double secs = std::chrono::duration<double>(now - t0_).count();
  // The rate needs a moment of data before it means anything.
  const double rate = secs > 0.5 ? static_cast<double>(done - start_) / secs : 0;
  if (tty_) {
    if (shown_ && now - last_draw_ < std::chrono::milliseconds(250) && done != total) return;
    last_draw_ = now;
    std::fprintf(stderr, "\r\x1b[2K%s", progress_text(name_, done, total, rate, true).c_str());
    std::fflush(stderr);
    shown_ = true;
    return;
  }
  if (total <= 0) return;
  const int tenth = static_cast<int>(10 * done / total);
  if (tenth == last_tenth_) return;
  last_tenth_ = tenth;
  std::fprintf(stderr, "%s\n", progress_text(name_, done, total, rate, false).c_str());
}

void TransferProgress::finish() {
  if (tty_ && shown_) std::fputs("\n", stderr);
  shown_ = false;
}

}  // namespace ds4::download

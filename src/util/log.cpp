#include "util/log.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace ds4::log {
namespace {

Level initial_level() {
  const char* env = std::getenv("DS4_LOG");
  if (!env) return Level::info;
  if (!std::strcmp(env, "debug")) return Level::debug;
  if (!std::strcmp(env, "warn")) return Level::warn;
  if (!std::strcmp(env, "error")) return Level::error;
  if (!std::strcmp(env, "quiet")) return Level::quiet;
  return Level::info;
}

std::atomic<Level> g_level{initial_level()};
std::mutex g_mutex;

}  // namespace

Level level() { return g_level.load(std::memory_order_relaxed); }
void set_level(Level l) { g_level.store(l, std::memory_order_relaxed); }

void write(Level l, const std::string& msg) {
  static const char* names[] = {"debug", "info", "warn", "error"};
  std::lock_guard<std::mutex> lock(g_mutex);
  std::fprintf(stderr, "ds4: %s: %s\n", names[static_cast<int>(l)], msg.c_str());
}

}  // namespace ds4::log

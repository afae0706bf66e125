#pragma once
// Minimal leveled logging to stderr. Logs never go to stdout: stdout carries
// command output (JSON, token ids, generated text) that scripts parse.
#include <fmt/format.h>

#include <cstdio>

namespace ds4::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3, quiet = 4 };

Level level();
void set_level(Level l);
void write(Level l, const std::string& msg);

template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::info) write(Level::info, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::warn) write(Level::warn, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::debug) write(Level::debug, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace ds4::log

#pragma once
// `ds4 run --save-session F / --load-session F`: a session's state kept in a
// checkpoint file (engine/checkpoint.h, docs/prefix-cache.md) between runs.
#include <CLI/CLI.hpp>

#include <cstdint>
#include <span>
#include <string>

#include "engine/engine.h"
#include "engine/session.h"

namespace ds4::cli {

struct SessionFileFlags {
  std::string save, load;
  bool any() const { return !save.empty() || !load.empty(); }
};

void add_session_file_flags(CLI::App* sub, SessionFileFlags& f);
// Fails at once (before a long run) when --save-session's directory is missing
// or not writable.
void check_session_file_flags(const SessionFileFlags& f);

// Restores `f.load` (if set) into `session` and returns how many of `prompt`'s
// tokens it already holds, saying so on stderr. Throws ds4::Error when the
// file is bad or made for another model, or when its tokens are not a prefix
// of `prompt` that leaves at least one token to feed.
size_t load_session_file(const engine::Engine& e, const SessionFileFlags& f, std::span<const int32_t> prompt,
                         engine::Session& session);

// Writes the session to `f.save` (if set), saying so on stderr.
void save_session_file(const engine::Engine& e, const SessionFileFlags& f, const engine::Session& session);

}  // namespace ds4::cli

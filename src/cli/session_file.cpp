#include "cli/session_file.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "engine/checkpoint.h"
#include "util/error.h"

namespace ds4::cli {

void add_session_file_flags(CLI::App* sub, SessionFileFlags& f) {
  sub->add_option("--save-session", f.save, "After the run, save the session (prompt + generated tokens) to a file");
  sub->add_option("--load-session", f.load,
                  "Before the run, load a session saved by --save-session; its tokens must begin the prompt");
}

void check_session_file_flags(const SessionFileFlags& f) {
  if (f.save.empty()) return;
  const std::filesystem::path parent = std::filesystem::path(f.save).parent_path();
  const std::string dir = parent.empty() ? "." : parent.string();
  if (!std::filesystem::is_directory(dir) || ::access(dir.c_str(), W_OK) != 0)
    fail("--save-session {}: directory {} does not exist or is not writable", f.save, dir);
  if (std::filesystem::is_directory(f.save)) fail("--save-session {}: is a directory", f.save);
}

size_t load_session_file(const engine::Engine& e, const SessionFileFlags& f, std::span<const int32_t> prompt,
                         engine::Session& session) {
  if (f.load.empty()) return 0;
  const auto fp = engine::model_fingerprint(e.model(), e.numerics());
  engine::Checkpoint c = engine::read_checkpoint(f.load, fp);
  const auto& have = c.snapshot.tokens;
  if (have.size() > prompt.size() || !std::equal(have.begin(), have.end(), prompt.begin())) {
    const size_t common = static_cast<size_t>(
        std::mismatch(have.begin(), have.end(), prompt.begin(), prompt.end()).first - have.begin());
    fail("--load-session {}: its {} tokens are not a prefix of this prompt's {} tokens (they agree on the first {})",
         f.load, have.size(), prompt.size(), common);
  }
  if (have.size() == prompt.size())
    fail("--load-session {}: it holds the whole prompt ({} tokens); the prompt must add at least one token", f.load,
         prompt.size());
  try {
    session.restore(c.snapshot);
  } catch (const Error& err) {
    fail("--load-session {}: {}", f.load, err.what());
  }
  std::fprintf(stderr, "ds4: loaded %zu tokens from %s; prefilling the remaining %zu of %zu prompt tokens\n",
               have.size(), f.load.c_str(), prompt.size() - have.size(), prompt.size());
  return have.size();
}

void save_session_file(const engine::Engine& e, const SessionFileFlags& f, const engine::Session& session) {
  if (f.save.empty()) return;
  engine::Checkpoint c;
  c.snapshot = session.snapshot();
  c.reason = engine::SaveReason::cli;
  engine::write_checkpoint(f.save, engine::model_fingerprint(e.model(), e.numerics()), c);
  std::fprintf(stderr, "ds4: saved %zu tokens to %s (%.1f MiB)\n", c.snapshot.tokens.size(), f.save.c_str(),
               static_cast<double>(engine::checkpoint_file_bytes(c)) / (1 << 20));
}

}  // namespace ds4::cli

// Crash safety: two processes store checkpoints into one directory (each
// evicting the other's files under a small budget) and are killed with
// SIGKILL at random moments, 60 times. After every kill the directory is
// reopened: no file is corrupt, every entry restores to exactly the state it
// was saved from, and temporaries of the dead writers are cleaned up.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <thread>

#include "engine_test_util.h"
#include "engine/prefix_cache.h"

namespace ds4::engine {
namespace {

using namespace test;
using backend::NumericsMode;

TEST(PrefixCacheFault, KillDuringSavesNeverLeavesACorruptEntry) {
  auto m = tiny_model("f32", 1);
  auto be = backend::make_backend("cpu", m, {1});
  const NumericsMode mode = NumericsMode::faithful;
  const Fingerprint fp = model_fingerprint(*m, mode);
  const TempDir dir("pc_fault");

  // Six conversations of different lengths; their states are the reference.
  std::vector<std::unique_ptr<Session>> sessions;
  std::vector<Session::Snapshot> want;
  for (int i = 0; i < 6; ++i) {
    sessions.push_back(std::make_unique<Session>(*be, backend::SessionOptions{mode, 256}));
    sessions.back()->prefill(toks(16 + 8 * i, i));
    want.push_back(sessions.back()->snapshot());
  }
  Checkpoint probe;
  probe.snapshot = want.back();
  PrefixCacheOptions o;
  o.fingerprint = fp;
  o.block_tokens = 8;
  o.min_tokens = 8;
  o.disk_dir = dir.path.string();
  o.disk_bytes = 3 * checkpoint_file_bytes(probe);  // each store evicts an older file
  o.checkpoint_interval = 0;

  std::mt19937 rng(12345);
  int cleaned = 0, entries_seen = 0;
  constexpr int kKills = 60;
  for (int round = 0; round < kKills; ++round) {
    pid_t kids[2];
    for (int k = 0; k < 2; ++k) {
      kids[k] = ::fork();
      ASSERT_GE(kids[k], 0);
      if (kids[k] == 0) {
        try {
          auto co = o;
          co.log = [](const std::string&) {};
          PrefixCache cache(co);
          for (size_t i = static_cast<size_t>(k);; ++i) cache.store(*sessions[i % sessions.size()], SaveReason::cold);
        } catch (...) {
        }
        ::_exit(3);  // only a kill should end it
      }
    }
    std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(200, 30000)(rng)));
    for (pid_t kid : kids) ::kill(kid, SIGKILL);
    for (pid_t kid : kids) {
      int status = 0;
      ASSERT_EQ(::waitpid(kid, &status, 0), kid);
      EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "a writer ended on its own: " << status;
    }

    // Restart: nothing is discarded as corrupt, everything restores exactly.
    std::vector<std::string> log;
    auto po = o;
    po.log = [&log](const std::string& s) { log.push_back(s); };
    PrefixCache cache(po);
    for (const auto& l : log) {
      EXPECT_EQ(l.find("discarded"), std::string::npos) << "round " << round << ": " << l;
      cleaned += l.find("removed unfinished write") != std::string::npos;
    }
    EXPECT_EQ(cache.stats().discarded_files, 0u);
    for (size_t i = 0; i < sessions.size(); ++i) {
      auto hit = cache.lookup(want[i].tokens);
      if (hit.matched == 0) continue;
      ++entries_seen;
      Session s(*be, {mode, 256});
      std::string why;
      ASSERT_TRUE(cache.restore(hit.handle, s, nullptr, &why)) << why;
      // The longest cached prefix of conversation i is conversation i itself
      // (the others have other tokens).
      EXPECT_EQ(hit.matched, static_cast<int64_t>(want[i].tokens.size()));
      EXPECT_EQ(s.snapshot().state, want[i].state) << "round " << round << ", conversation " << i;
    }
    for (const auto& f : dir.files()) EXPECT_EQ(f.find(".tmp."), std::string::npos) << f << " left after the scan";
  }
  // The kills must have hit writes in progress, or the test proves nothing.
  std::printf("fault test: %d kills, %d unfinished writes cleaned up, %d entries restored\n", kKills, cleaned,
              entries_seen);
  EXPECT_GT(cleaned, 0);
  EXPECT_GT(entries_seen, 0);
}

}  // namespace
}  // namespace ds4::engine

// Checkpoint files: snapshot -> file -> fresh session -> continue equals never
// stopping, bit for bit; every kind of bad file is refused with one reason
// naming it; a failed write (ENOSPC) leaves nothing behind.
#include "engine/checkpoint.h"

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "engine_test_util.h"
#include "util/error.h"

namespace ds4::engine {
namespace {

using namespace test;
using backend::NumericsMode;

struct Fixture {
  std::shared_ptr<model::Model> m = tiny_model("f32", 1);
  std::unique_ptr<backend::Backend> be = backend::make_backend("cpu", m, {2});
};
Fixture& fx() {
  static Fixture f;
  return f;
}

std::vector<uint8_t> slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}
void spit(const fs::path& p, const std::vector<uint8_t>& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

int32_t argmax(std::span<const float> v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// Greedy continuation: every step's logits, so equality is token for token
// and bit for bit.
std::vector<std::vector<float>> greedy(Session& s, std::vector<float> logits, int steps) {
  std::vector<std::vector<float>> out;
  for (int i = 0; i < steps; ++i) {
    const int32_t t = argmax(logits);
    logits = s.feed(std::span<const int32_t>(&t, 1));
    out.push_back(logits);
  }
  return out;
}

TEST(Checkpoint, SaveLoadContinueEqualsNeverStopping) {
  auto& f = fx();
  const TempDir dir("ckpt_roundtrip");
  for (auto mode : {NumericsMode::exact, NumericsMode::faithful}) {
    const Fingerprint fp = model_fingerprint(*f.m, mode);
    const auto prompt = toks(45);  // past several compression windows
    const auto next = toks(3, 0, 45);
    // Never stopping: the whole prompt, then greedy.
    Session whole(*f.be, {mode, 256});
    whole.prefill(prompt);
    const auto want_logits = whole.feed_all(next);
    const auto want = greedy(whole, std::vector<float>(want_logits.end() - f.m->config.n_vocab, want_logits.end()), 12);

    // Stopped at 45 tokens, saved, loaded into a fresh session.
    Session a(*f.be, {mode, 256});
    a.prefill(prompt);
    Checkpoint c;
    c.snapshot = a.snapshot();
    c.extra = "tool-id map bytes";
    c.reason = SaveReason::cli;
    const std::string path = (dir.path / "a.ckpt").string();
    write_checkpoint(path, fp, c);
    EXPECT_EQ(fs::file_size(path), checkpoint_file_bytes(c));

    const Checkpoint back = read_checkpoint(path, fp);
    EXPECT_EQ(back.snapshot.tokens, prompt);
    EXPECT_EQ(back.extra, "tool-id map bytes");
    EXPECT_EQ(back.reason, SaveReason::cli);
    const CheckpointHead head = read_checkpoint_head(path, fp);
    EXPECT_EQ(head.tokens, prompt);
    EXPECT_EQ(head.file_bytes, fs::file_size(path));

    Session b(*f.be, {mode, 256});
    b.restore(back.snapshot);
    EXPECT_EQ(b.position(), 45);
    EXPECT_EQ(b.tokens(), prompt);
    const auto got_logits = b.feed_all(next);
    EXPECT_EQ(got_logits, want_logits);  // bit-exact
    const auto got = greedy(b, std::vector<float>(got_logits.end() - f.m->config.n_vocab, got_logits.end()), 12);
    EXPECT_EQ(got, want);
  }
}

TEST(Checkpoint, FingerprintSeparatesModelsAndModes) {
  auto& f = fx();
  const Fingerprint a = model_fingerprint(*f.m, NumericsMode::faithful);
  EXPECT_EQ(a, model_fingerprint(*f.m, NumericsMode::faithful));
  EXPECT_EQ(fingerprint_mismatch(a, a), "");
  EXPECT_NE(fingerprint_mismatch(a, model_fingerprint(*f.m, NumericsMode::exact)).find("numerics"), std::string::npos);
  auto other_seed = tiny_model("f32", 2);
  EXPECT_EQ(fingerprint_mismatch(model_fingerprint(*other_seed, NumericsMode::faithful), a), "weights differ");
  auto other_types = tiny_model("f16", 1);
  EXPECT_EQ(fingerprint_mismatch(model_fingerprint(*other_types, NumericsMode::faithful), a),
            "tensor names, types or shapes differ");
}

// Expects the read to fail with `kind` and a message naming the file and `why`.
void expect_refused(const std::string& path, const Fingerprint& fp, CheckpointError::Kind kind, const std::string& why) {
  for (int head_only = 0; head_only < 2; ++head_only) {
    try {
      if (head_only)
        read_checkpoint_head(path, fp);
      else
        read_checkpoint(path, fp);
      // A head-only read cannot see a bad payload; everything else it must refuse.
      if (!(head_only && why == "payload checksum mismatch")) ADD_FAILURE() << path << " was accepted, want: " << why;
    } catch (const CheckpointError& e) {
      EXPECT_EQ(e.kind, kind) << e.what();
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what() << " (want: " << why << ")";
    }
  }
}

TEST(Checkpoint, BadFilesAreRefusedWithOneReason) {
  auto& f = fx();
  const TempDir dir("ckpt_bad");
  const Fingerprint fp = model_fingerprint(*f.m, NumericsMode::faithful);
  Session s(*f.be, {NumericsMode::faithful, 256});
  s.prefill(toks(20));
  Checkpoint c;
  c.snapshot = s.snapshot();
  const fs::path good = dir.path / "good.ckpt";
  write_checkpoint(good.string(), fp, c);
  const auto bytes = slurp(good);
  ASSERT_GT(bytes.size(), kCheckpointHeaderBytes + 100);
  using K = CheckpointError::Kind;

  // Truncated anywhere: in the magic, the header, the tokens, the state.
  for (size_t len : {size_t{0}, size_t{5}, size_t{60}, kCheckpointHeaderBytes - 1, kCheckpointHeaderBytes,
                     kCheckpointHeaderBytes + 10, bytes.size() / 2, bytes.size() - 1}) {
    const fs::path p = dir.path / ("cut" + std::to_string(len));
    spit(p, std::vector<uint8_t>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(len)));
    expect_refused(p.string(), fp, K::truncated, "truncated");
  }
  // Trailing garbage.
  {
    auto b = bytes;
    b.push_back(0);
    spit(dir.path / "long", b);
    expect_refused((dir.path / "long").string(), fp, K::corrupt, "1 trailing bytes");
  }
  // A flipped bit in the state and in the tokens: payload checksum.
  for (size_t at : {bytes.size() - 7, kCheckpointHeaderBytes + 2}) {
    auto b = bytes;
    b[at] ^= 0x10;
    const fs::path p = dir.path / ("flip" + std::to_string(at));
    spit(p, b);
    expect_refused(p.string(), fp, K::corrupt, "payload checksum mismatch");
  }
  // A flipped bit in the header (the token count): header checksum.
  {
    auto b = bytes;
    b[57] ^= 0x01;
    spit(dir.path / "hdr", b);
    expect_refused((dir.path / "hdr").string(), fp, K::corrupt, "header checksum mismatch");
  }
  // Not a checkpoint at all.
  {
    std::vector<uint8_t> b(bytes.size(), 'x');
    spit(dir.path / "text", b);
    expect_refused((dir.path / "text").string(), fp, K::not_checkpoint, "not a ds4 checkpoint");
  }
  // Old and future versions.
  for (uint32_t v : {0u, 2u}) {
    auto b = bytes;
    std::memcpy(b.data() + 8, &v, 4);
    const fs::path p = dir.path / ("v" + std::to_string(v));
    spit(p, b);
    expect_refused(p.string(), fp, K::old_version, "version " + std::to_string(v) + ", this build reads version 1");
  }
  // Another model, another numerics mode.
  auto other = tiny_model("f32", 7);
  expect_refused(good.string(), model_fingerprint(*other, NumericsMode::faithful), K::foreign,
                 "made for another model: weights differ");
  expect_refused(good.string(), model_fingerprint(*f.m, NumericsMode::exact), K::foreign, "numerics faithful");
  // Gone.
  expect_refused((dir.path / "missing").string(), fp, K::vanished, "file vanished");
  // The good file is still good after all that.
  EXPECT_EQ(read_checkpoint(good.string(), fp).snapshot.state, c.snapshot.state);
}

// Fails every write after `budget` bytes with ENOSPC, as a full disk does.
std::atomic<long> g_budget{0};
ssize_t full_disk_write(int fd, const void* p, size_t n) {
  const long left = g_budget.load();
  if (left <= 0) {
    errno = ENOSPC;
    return -1;
  }
  const size_t k = std::min(n, static_cast<size_t>(left));
  g_budget -= static_cast<long>(k);
  return ::write(fd, p, k);  // a short write first, as the kernel does
}

TEST(Checkpoint, DiskFullFailsCleanlyThroughWriteHook) {
  auto& f = fx();
  const TempDir dir("ckpt_enospc_hook");
  const Fingerprint fp = model_fingerprint(*f.m, NumericsMode::faithful);
  Session s(*f.be, {NumericsMode::faithful, 256});
  s.prefill(toks(30));
  Checkpoint c;
  c.snapshot = s.snapshot();
  const std::string path = (dir.path / "x.ckpt").string();
  // An older version of the same file is there and must survive the failure.
  Checkpoint old = c;
  old.extra = "old";
  write_checkpoint(path, fp, old);
  for (long budget : {0L, 100L, 5000L, static_cast<long>(checkpoint_file_bytes(c)) - 1}) {
    g_budget = budget;
    set_checkpoint_write_fn(&full_disk_write);
    try {
      write_checkpoint(path, fp, c);
      ADD_FAILURE() << "write with " << budget << " bytes of room succeeded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(std::strerror(ENOSPC)), std::string::npos) << e.what();
    }
    set_checkpoint_write_fn(nullptr);
    EXPECT_EQ(dir.files(), std::vector<std::string>{"x.ckpt"}) << "a temporary was left behind";
    EXPECT_EQ(read_checkpoint(path, fp).extra, "old");
  }
}

TEST(Checkpoint, DiskFullFailsCleanlyOnATinyTmpfs) {
  auto& f = fx();
  const TempDir dir("ckpt_enospc_tmpfs");
  if (::mount("tmpfs", dir.path.c_str(), "tmpfs", 0, "size=64k") != 0) {
    // Without root the write hook test above covers the same path.
    GTEST_SKIP() << "cannot mount a tmpfs here: " << std::strerror(errno);
  }
  const Fingerprint fp = model_fingerprint(*f.m, NumericsMode::faithful);
  Session s(*f.be, {NumericsMode::faithful, 256});
  s.prefill(toks(64));
  Checkpoint c;
  c.snapshot = s.snapshot();
  // A first checkpoint fits; the second, with 64 KiB of extra bytes, cannot.
  write_checkpoint((dir.path / "small.ckpt").string(), fp, c);
  c.extra.assign(64 * 1024, 'e');
  const std::string path = (dir.path / "big.ckpt").string();
  std::string msg;
  try {
    write_checkpoint(path, fp, c);
  } catch (const Error& e) {
    msg = e.what();
  }
  const auto left = dir.files();
  ::umount(dir.path.c_str());
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::strerror(ENOSPC)), std::string::npos) << msg;
  EXPECT_EQ(left, std::vector<std::string>{"small.ckpt"}) << "a temporary was left on the full tmpfs";
}

}  // namespace
}  // namespace ds4::engine

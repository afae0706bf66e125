#include "engine/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "util/error.h"

namespace ds4::engine {

namespace {

namespace fs = std::filesystem;

constexpr char kMagic[8] = {'D', 'S', '4', 'C', 'K', 'P', 'T', '\0'};

// Feeds a canonical byte stream into one xxh3 state.
class Hasher {
 public:
  Hasher() : st_(XXH3_createState()) {
    if (!st_) throw std::bad_alloc();
    XXH3_64bits_reset(st_);
  }
  ~Hasher() { XXH3_freeState(st_); }
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;
  void bytes(const void* p, size_t n) { XXH3_64bits_update(st_, p, n); }
  template <typename T>
  void pod(T v) {
    bytes(&v, sizeof v);
  }
  void str(std::string_view s) {
    pod<uint64_t>(s.size());
    bytes(s.data(), s.size());
  }
  uint64_t digest() const { return XXH3_64bits_digest(st_); }

 private:
  XXH3_state_t* st_;
};

void hash_value(Hasher& h, const gguf::Value& v) {
  h.pod(static_cast<uint32_t>(v.type));
  h.pod(v.u);
  h.pod(v.i);
  h.pod(v.f);
  h.str(v.s);
  h.pod(static_cast<uint32_t>(v.elem_type));
  h.pod<uint64_t>(v.items.size());
  for (const auto& it : v.items) hash_value(h, it);
}

// Little-endian field access of the fixed header (x86-64 and aarch64 are
// little-endian; the static_assert keeps a big-endian build from lying).
static_assert(std::endian::native == std::endian::little, "checkpoint files are little-endian");
template <typename T>
void put(uint8_t* h, size_t at, T v) {
  std::memcpy(h + at, &v, sizeof v);
}
template <typename T>
T get(const uint8_t* h, size_t at) {
  T v;
  std::memcpy(&v, h + at, sizeof v);
  return v;
}

// Header offsets (docs/prefix-cache.md §File format).
enum : size_t {
  kOffVersion = 8,
  kOffHeaderBytes = 12,
  kOffHparams = 16,
  kOffTensors = 24,
  kOffWeights = 32,
  kOffTokenizer = 40,
  kOffNumerics = 48,
  kOffReason = 49,
  kOffTokens = 56,
  kOffState = 64,
  kOffCreated = 72,
  kOffPayloadHash = 80,
  kOffExtra = 88,
  kOffVariant = 96,  // 0 in files of before it: unsteered, which they are
  kOffHeaderHash = 120,
};

std::atomic<WriteFn> g_write{nullptr};

ssize_t do_write(int fd, const void* p, size_t n) {
  const WriteFn f = g_write.load(std::memory_order_relaxed);
  return f ? f(fd, p, n) : ::write(fd, p, n);
}

void write_all(int fd, const void* p, size_t n, const std::string& path) {
  const auto* b = static_cast<const uint8_t*>(p);
  while (n > 0) {
    const size_t chunk = std::min<size_t>(n, size_t{1} << 30);
    const ssize_t w = do_write(fd, b, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw Error(fmt::format("checkpoint {}: write failed: {}", path, std::strerror(errno)));
    }
    if (w == 0) throw Error(fmt::format("checkpoint {}: write failed: no progress", path));
    b += w;
    n -= static_cast<size_t>(w);
  }
}

std::atomic<uint64_t> g_tmp_counter{0};

uint64_t payload_hash(std::span<const int32_t> toks, std::span<const uint8_t> state, std::string_view extra) {
  Hasher h;
  h.bytes(toks.data(), toks.size_bytes());
  h.bytes(state.data(), state.size());
  h.bytes(extra.data(), extra.size());
  return h.digest();
}

// Reads exactly n bytes at the current offset; false on a short file.
bool read_exact(int fd, void* p, size_t n, const std::string& path) {
  auto* b = static_cast<uint8_t*>(p);
  while (n > 0) {
    const ssize_t r = ::read(fd, b, std::min<size_t>(n, size_t{1} << 30));
    if (r < 0) {
      if (errno == EINTR) continue;
      throw CheckpointError(CheckpointError::Kind::io,
                            fmt::format("checkpoint {}: read failed: {}", path, std::strerror(errno)));
    }
    if (r == 0) return false;
    b += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Opens and checks everything up to and including the fingerprint; leaves
// the descriptor at the token history.
struct Opened {
  Fd f;
  uint8_t h[kCheckpointHeaderBytes];
  CheckpointHead head;
  uint64_t payload_hash = 0;
};

void open_checked(const std::string& path, const Fingerprint& want, Opened& o) {
  using K = CheckpointError::Kind;
  auto err = [&](K k, const std::string& why) { throw CheckpointError(k, fmt::format("checkpoint {}: {}", path, why)); };
  o.f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (o.f.fd < 0) {
    if (errno == ENOENT) err(K::vanished, "file vanished");
    err(K::io, fmt::format("cannot open: {}", std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(o.f.fd, &st) != 0) err(K::io, fmt::format("cannot stat: {}", std::strerror(errno)));
  const auto size = static_cast<uint64_t>(st.st_size);
  o.head.file_bytes = size;
  const size_t got = static_cast<size_t>(std::min<uint64_t>(size, kCheckpointHeaderBytes));
  if (!read_exact(o.f.fd, o.h, got, path)) err(K::truncated, "truncated while reading");
  if (got < sizeof kMagic || std::memcmp(o.h, kMagic, sizeof kMagic) != 0) {
    if (got < sizeof kMagic && std::memcmp(o.h, kMagic, got) == 0) err(K::truncated, fmt::format("truncated: {} bytes", size));
    err(K::not_checkpoint, "not a ds4 checkpoint (bad magic)");
  }
  if (got < kOffVersion + 4) err(K::truncated, fmt::format("truncated: {} bytes", size));
  if (const auto v = get<uint32_t>(o.h, kOffVersion); v != kCheckpointVersion)
    err(K::old_version, fmt::format("version {}, this build reads version {}", v, kCheckpointVersion));
  if (got < kCheckpointHeaderBytes)
    err(K::truncated, fmt::format("truncated: {} bytes, the header alone is {}", size, kCheckpointHeaderBytes));
  if (get<uint64_t>(o.h, kOffHeaderHash) != XXH3_64bits(o.h, kOffHeaderHash)) err(K::corrupt, "header checksum mismatch");
  if (get<uint32_t>(o.h, kOffHeaderBytes) != kCheckpointHeaderBytes) err(K::corrupt, "unexpected header size");
  const uint8_t num = o.h[kOffNumerics];
  if (num > 1) err(K::corrupt, fmt::format("unknown numerics mode {}", num));
  Fingerprint fp;
  fp.hparams = get<uint64_t>(o.h, kOffHparams);
  fp.tensors = get<uint64_t>(o.h, kOffTensors);
  fp.weights = get<uint64_t>(o.h, kOffWeights);
  fp.tokenizer = get<uint64_t>(o.h, kOffTokenizer);
  fp.numerics = num == 0 ? backend::NumericsMode::exact : backend::NumericsMode::faithful;
  if (const std::string why = fingerprint_mismatch(fp, want); !why.empty()) err(K::foreign, "made for another model: " + why);
  o.head.fp = fp;
  o.head.reason = static_cast<SaveReason>(o.h[kOffReason]);
  o.head.created_unix = get<uint64_t>(o.h, kOffCreated);
  const auto n_tok = get<uint64_t>(o.h, kOffTokens);
  o.head.state_bytes = get<uint64_t>(o.h, kOffState);
  o.head.extra_bytes = get<uint64_t>(o.h, kOffExtra);
  o.head.variant = get<uint64_t>(o.h, kOffVariant);
  o.payload_hash = get<uint64_t>(o.h, kOffPayloadHash);
  // Sizes beyond any real file are corruption (and would overflow below).
  constexpr uint64_t kLimit = uint64_t{1} << 50;
  if (n_tok > kLimit || o.head.state_bytes > kLimit || o.head.extra_bytes > kLimit) err(K::corrupt, "implausible sizes");
  const uint64_t want_size = kCheckpointHeaderBytes + n_tok * 4 + o.head.state_bytes + o.head.extra_bytes;
  if (size < want_size) err(K::truncated, fmt::format("truncated: {} bytes, the header says {}", size, want_size));
  if (size > want_size) err(K::corrupt, fmt::format("{} trailing bytes", size - want_size));
  o.head.tokens.resize(static_cast<size_t>(n_tok));
  if (!read_exact(o.f.fd, o.head.tokens.data(), o.head.tokens.size() * 4, path))
    err(K::truncated, "truncated while reading");
}

}  // namespace

Fingerprint model_fingerprint(const model::Model& m, backend::NumericsMode numerics) {
  Fingerprint fp;
  fp.numerics = numerics;
  Hasher hp, tk;
  for (const auto& [k, v] : m.file->metadata()) {
    // general.* names and describes the file; it does not change what runs.
    if (k.starts_with("general.") && k != "general.architecture") continue;
    Hasher& h = k.starts_with("tokenizer.") ? tk : hp;
    h.str(k);
    hash_value(h, v);
  }
  fp.hparams = hp.digest();
  fp.tokenizer = tk.digest();
  Hasher ts, ws;
  for (const auto& t : m.file->tensors()) {
    ts.str(t.name);
    ts.pod(static_cast<uint32_t>(t.type));
    ts.pod<uint64_t>(t.ne.size());
    for (int64_t d : t.ne) ts.pod(d);
    // Reading every weight would take a minute on Flash; 128 bytes of each
    // tensor tell two fine-tunes (or two random seeds) of one shape apart.
    if (t.data && t.nbytes) {
      const size_t n = std::min<size_t>(64, t.nbytes);
      ws.bytes(t.data, n);
      ws.bytes(t.data + t.nbytes - n, n);
    }
  }
  fp.tensors = ts.digest();
  fp.weights = ws.digest();
  return fp;
}

std::string fingerprint_mismatch(const Fingerprint& f, const Fingerprint& w) {
  if (f.hparams != w.hparams) return "architecture or hyperparameters differ";
  if (f.tensors != w.tensors) return "tensor names, types or shapes differ";
  if (f.weights != w.weights) return "weights differ";
  if (f.tokenizer != w.tokenizer) return "tokenizer differs";
  if (f.numerics != w.numerics)
    return fmt::format("numerics {} (this run uses {})", backend::numerics_name(f.numerics),
                       backend::numerics_name(w.numerics));
  return "";
}

std::string_view save_reason_name(SaveReason r) {
  switch (r) {
    case SaveReason::unknown: return "unknown";
    case SaveReason::cold: return "cold";
    case SaveReason::continued: return "continued";
    case SaveReason::evict: return "evict";
    case SaveReason::shutdown: return "shutdown";
    case SaveReason::spill: return "spill";
    case SaveReason::cli: return "cli";
  }
  return "unknown";
}

uint64_t checkpoint_file_bytes(const Checkpoint& c) {
  return kCheckpointHeaderBytes + c.snapshot.tokens.size() * 4 + c.snapshot.state.size() + c.extra.size();
}

void write_checkpoint(const std::string& path, const Fingerprint& fp, const Checkpoint& c) {
  write_checkpoint(path, fp, c, c.reason);
}

void write_checkpoint(const std::string& path, const Fingerprint& fp, const Checkpoint& c, SaveReason reason) {
  uint8_t h[kCheckpointHeaderBytes] = {};
  std::memcpy(h, kMagic, sizeof kMagic);
  put<uint32_t>(h, kOffVersion, kCheckpointVersion);
  put<uint32_t>(h, kOffHeaderBytes, kCheckpointHeaderBytes);
  put<uint64_t>(h, kOffHparams, fp.hparams);
  put<uint64_t>(h, kOffTensors, fp.tensors);
  put<uint64_t>(h, kOffWeights, fp.weights);
  put<uint64_t>(h, kOffTokenizer, fp.tokenizer);
  h[kOffNumerics] = fp.numerics == backend::NumericsMode::exact ? 0 : 1;
  h[kOffReason] = static_cast<uint8_t>(reason);
  const auto& toks = c.snapshot.tokens;
  const auto& state = c.snapshot.state;
  put<uint64_t>(h, kOffTokens, toks.size());
  put<uint64_t>(h, kOffState, state.size());
  const uint64_t created =
      c.created_unix ? c.created_unix
                     : static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                                 std::chrono::system_clock::now().time_since_epoch())
                                                 .count());
  put<uint64_t>(h, kOffCreated, created);
  put<uint64_t>(h, kOffPayloadHash, payload_hash(toks, state, c.extra));
  put<uint64_t>(h, kOffExtra, c.extra.size());
  put<uint64_t>(h, kOffVariant, c.variant);
  put<uint64_t>(h, kOffHeaderHash, XXH3_64bits(h, kOffHeaderHash));

  // pid + counter: unique among processes sharing the directory and among
  // threads of this one; a scan removes temporaries of processes now dead.
  const std::string tmp = fmt::format("{}.tmp.{}.{}", path, ::getpid(), g_tmp_counter.fetch_add(1));
  Fd f;
  f.fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (f.fd < 0) fail("checkpoint {}: cannot create {}: {}", path, tmp, std::strerror(errno));
  try {
    write_all(f.fd, h, sizeof h, path);
    write_all(f.fd, toks.data(), toks.size() * 4, path);
    write_all(f.fd, state.data(), state.size(), path);
    write_all(f.fd, c.extra.data(), c.extra.size(), path);
    if (::fsync(f.fd) != 0) fail("checkpoint {}: fsync failed: {}", path, std::strerror(errno));
    const int fd = f.fd;
    f.fd = -1;
    if (::close(fd) != 0) fail("checkpoint {}: close failed: {}", path, std::strerror(errno));
    if (::rename(tmp.c_str(), path.c_str()) != 0) fail("checkpoint {}: rename failed: {}", path, std::strerror(errno));
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  // The rename is durable once the directory is.
  const std::string dir = fs::path(path).parent_path().empty() ? "." : fs::path(path).parent_path().string();
  Fd d;
  d.fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (d.fd < 0 || ::fsync(d.fd) != 0) fail("checkpoint {}: fsync of directory {} failed: {}", path, dir, std::strerror(errno));
}

CheckpointHead read_checkpoint_head(const std::string& path, const Fingerprint& want) {
  Opened o;
  open_checked(path, want, o);
  return std::move(o.head);
}

Checkpoint read_checkpoint(const std::string& path, const Fingerprint& want) {
  Opened o;
  open_checked(path, want, o);
  Checkpoint c;
  c.reason = o.head.reason;
  c.created_unix = o.head.created_unix;
  c.variant = o.head.variant;
  c.snapshot.tokens = std::move(o.head.tokens);
  c.snapshot.state.resize(static_cast<size_t>(o.head.state_bytes));
  c.extra.resize(static_cast<size_t>(o.head.extra_bytes));
  if (!read_exact(o.f.fd, c.snapshot.state.data(), c.snapshot.state.size(), path) ||
      !read_exact(o.f.fd, c.extra.data(), c.extra.size(), path))
    throw CheckpointError(CheckpointError::Kind::truncated, fmt::format("checkpoint {}: truncated while reading", path));
  if (payload_hash(c.snapshot.tokens, c.snapshot.state, c.extra) != o.payload_hash)
    throw CheckpointError(CheckpointError::Kind::corrupt, fmt::format("checkpoint {}: payload checksum mismatch", path));
  return c;
}

void set_checkpoint_write_fn(WriteFn fn) { g_write.store(fn, std::memory_order_relaxed); }

}  // namespace ds4::engine

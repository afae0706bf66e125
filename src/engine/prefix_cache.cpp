#include "engine/prefix_cache.h"

#include <signal.h>
#include <sys/stat.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <system_error>
#include <utility>

#include "util/error.h"
#include "util/log.h"

namespace ds4::engine {

namespace {

namespace fs = std::filesystem;

constexpr uint64_t kChainSeed = 0x64733470726566ULL;  // "ds4pref"
constexpr uint64_t kTailSalt = 0x9e3779b97f4a7c15ULL;
constexpr std::string_view kExt = ".ds4kv";

uint64_t mib(uint64_t b) { return b >> 20; }

// The chain's seed: unsteered states keep the seed they always had, so their
// keys (and file names) are those of before variants existed.
uint64_t chain_seed(uint64_t variant) {
  return variant == 0 ? kChainSeed : XXH3_64bits_withSeed(&variant, sizeof variant, kChainSeed);
}

bool prefix_of(std::span<const int32_t> shorter, std::span<const int32_t> longer) {
  return shorter.size() <= longer.size() && std::equal(shorter.begin(), shorter.end(), longer.begin());
}

// A temporary of write_checkpoint: "<name>.tmp.<pid>.<n>". True when its
// writer is no longer running (so the file can never be completed).
bool stale_temporary(const std::string& name) {
  const auto at = name.find(".tmp.");
  if (at == std::string::npos) return false;
  const std::string rest = name.substr(at + 5);
  const auto dot = rest.find('.');
  if (dot == std::string::npos || dot == 0) return false;
  long pid = 0;
  for (char ch : rest.substr(0, dot)) {
    if (ch < '0' || ch > '9') return false;
    pid = pid * 10 + (ch - '0');
    if (pid > 1L << 31) return false;
  }
  return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

}  // namespace

std::string_view tier_name(Tier t) {
  switch (t) {
    case Tier::none: return "none";
    case Tier::ram: return "ram";
    case Tier::disk: return "disk";
  }
  return "none";
}

PrefixCache::Handle& PrefixCache::Handle::operator=(Handle&& o) noexcept {
  if (this != &o) {
    release();
    cache_ = o.cache_;
    key_ = o.key_;
    o.cache_ = nullptr;
  }
  return *this;
}

void PrefixCache::Handle::release() {
  if (cache_) cache_->unpin(key_);
  cache_ = nullptr;
}

PrefixCache::PrefixCache(PrefixCacheOptions opt) : opt_(std::move(opt)) {
  if (opt_.block_tokens <= 0) fail("prefix cache: block size must be > 0 tokens, got {}", opt_.block_tokens);
  if (opt_.min_tokens < 0) fail("prefix cache: minimum must be >= 0 tokens, got {}", opt_.min_tokens);
  if (opt_.checkpoint_interval < 0)
    fail("prefix cache: checkpoint interval must be >= 0 tokens, got {}", opt_.checkpoint_interval);
  if (opt_.cold_max_tokens != 0 && opt_.cold_max_tokens < opt_.min_tokens)
    fail("prefix cache: cold save maximum must be 0 or >= the minimum of {} tokens, got {}", opt_.min_tokens,
         opt_.cold_max_tokens);
  if (opt_.boundary_trim < 0) fail("prefix cache: boundary trim must be >= 0 tokens, got {}", opt_.boundary_trim);
  const int64_t B = opt_.block_tokens;
  step_ = opt_.checkpoint_interval ? (opt_.checkpoint_interval + B - 1) / B * B : 0;
  if (!opt_.disk_dir.empty()) {
    std::error_code ec;
    fs::create_directories(opt_.disk_dir, ec);
    if (ec) fail("--kv-disk-dir {}: cannot create: {}", opt_.disk_dir, ec.message());
    if (!fs::is_directory(opt_.disk_dir)) fail("--kv-disk-dir {}: not a directory", opt_.disk_dir);
    ::chmod(opt_.disk_dir.c_str(), 0700);
    note(fmt::format("prefix cache: disk {} (budget {} MiB), ram budget {} MiB, block {} tokens, min {}, "
                     "checkpoint every {}",
                     opt_.disk_dir, mib(opt_.disk_bytes), mib(opt_.ram_bytes), B, opt_.min_tokens, step_));
    scan_dir();
    if (opt_.background_writes) writer_ = std::thread([this] { writer_loop(); });
  }
  std::lock_guard lk(mu_);
  publish();
}

// Queued writes finish first: an entry stored or spilled must reach the disk.
PrefixCache::~PrefixCache() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  jobs_cv_.notify_all();
  if (writer_.joinable()) writer_.join();
}

void PrefixCache::note(const std::string& line) const {
  if (opt_.log)
    opt_.log(line);
  else
    log::info("{}", line);
}

std::vector<uint64_t> PrefixCache::block_keys(std::span<const int32_t> tokens, uint64_t variant) const {
  const size_t B = static_cast<size_t>(opt_.block_tokens);
  std::vector<uint64_t> keys;
  keys.reserve(tokens.size() / B);
  uint64_t h = chain_seed(variant);
  for (size_t at = 0; at + B <= tokens.size(); at += B) {
    h = XXH3_64bits_withSeed(tokens.data() + at, B * sizeof(int32_t), h);
    keys.push_back(h);
  }
  return keys;
}

// Whole-block entries take their last block's chain key; an entry that ends
// inside a block hashes its tail onto the chain key before it (its parent).
uint64_t PrefixCache::entry_key(std::span<const int32_t> toks, uint64_t* parent, uint64_t variant) const {
  const auto keys = block_keys(toks, variant);
  const uint64_t base = keys.empty() ? chain_seed(variant) : keys.back();
  const size_t done = keys.size() * static_cast<size_t>(opt_.block_tokens);
  *parent = base;
  if (done == toks.size()) return base;
  return XXH3_64bits_withSeed(toks.data() + done, (toks.size() - done) * sizeof(int32_t), base ^ kTailSalt);
}

void PrefixCache::add_index(Entry& e, bool add) {
  if (e.key != e.parent) {
    if (add) {
      tails_.emplace(e.parent, e.key);
    } else {
      auto [b, en] = tails_.equal_range(e.parent);
      for (auto it = b; it != en; ++it)
        if (it->second == e.key) {
          tails_.erase(it);
          break;
        }
    }
  }
  for (uint64_t k : block_keys(e.tokens, e.variant)) {
    if (add) {
      ++block_refs_[k];
    } else if (auto it = block_refs_.find(k); it != block_refs_.end() && --it->second == 0) {
      block_refs_.erase(it);
    }
  }
}

void PrefixCache::drop_entry(uint64_t key, bool delete_file) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  Entry& e = it->second;
  if (e.ram) st_.ram_bytes -= e.ram_bytes, --st_.ram_entries;
  if (!e.file.empty()) {
    st_.disk_bytes -= e.disk_bytes, --st_.disk_entries;
    if (delete_file) ::unlink(e.file.c_str());
  }
  add_index(e, false);
  entries_.erase(it);
}

void PrefixCache::scan_dir() {
  struct Found {
    std::string path;
    fs::file_time_type mtime;
  };
  std::vector<Found> found;
  std::error_code ec;
  for (fs::directory_iterator it(opt_.disk_dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    std::error_code e2;
    if (name.find(".tmp.") != std::string::npos) {
      if (stale_temporary(name)) {
        fs::remove(it->path(), e2);
        note(fmt::format("prefix cache: removed unfinished write {}", it->path().string()));
      }
      continue;
    }
    if (!name.ends_with(kExt)) continue;  // not ours: left alone
    const auto mt = it->last_write_time(e2);
    if (e2) continue;  // vanished meanwhile (another process evicted it)
    found.push_back({it->path().string(), mt});
  }
  if (ec) fail("--kv-disk-dir {}: cannot list: {}", opt_.disk_dir, ec.message());
  // Oldest first, so the least recently written get the lowest LRU ticks.
  std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) { return a.mtime < b.mtime; });
  std::lock_guard lk(mu_);
  for (const Found& f : found) {
    CheckpointHead head;
    try {
      if (opt_.verify_on_scan) {
        Checkpoint c = read_checkpoint(f.path, opt_.fingerprint);
        head.file_bytes = checkpoint_file_bytes(c);
        head.tokens = std::move(c.snapshot.tokens);
        head.reason = c.reason;
        head.variant = c.variant;
        if (!c.extra.empty()) scanned_extras_.push_back(std::move(c.extra));
      } else {
        head = read_checkpoint_head(f.path, opt_.fingerprint);
      }
    } catch (const CheckpointError& e) {
      if (e.kind == CheckpointError::Kind::vanished) continue;
      if (e.kind != CheckpointError::Kind::io) ::unlink(f.path.c_str());
      ++st_.discarded_files;
      note(fmt::format("prefix cache: discarded {}", e.what()));
      continue;
    }
    Entry e;
    e.tokens = std::move(head.tokens);
    e.variant = head.variant;
    e.key = entry_key(e.tokens, &e.parent, e.variant);
    const std::string want = fmt::format("{:016x}{}", e.key, kExt);
    if (fs::path(f.path).filename().string() != want || static_cast<int64_t>(e.tokens.size()) < opt_.min_tokens || entries_.count(e.key)) {
      ::unlink(f.path.c_str());
      ++st_.discarded_files;
      note(fmt::format("prefix cache: discarded checkpoint {}: its name does not match its tokens", f.path));
      continue;
    }
    e.file = f.path;
    e.disk_bytes = head.file_bytes;
    e.reason = head.reason;
    e.last_used = ++tick_;
    st_.disk_bytes += e.disk_bytes;
    ++st_.disk_entries;
    add_index(e, true);
    entries_.emplace(e.key, std::move(e));
  }
  note(fmt::format("prefix cache: {} checkpoints on disk ({} MiB)", st_.disk_entries, mib(st_.disk_bytes)));
  fit_disk(0);
}

PrefixCache::Lookup PrefixCache::lookup(std::span<const int32_t> tokens, int64_t max_tokens, uint64_t variant) {
  const size_t limit = max_tokens < 0 ? tokens.size() : std::min(tokens.size(), static_cast<size_t>(max_tokens));
  const auto prompt = tokens.first(limit);
  const auto keys = block_keys(prompt, variant);
  const size_t B = static_cast<size_t>(opt_.block_tokens);
  std::lock_guard lk(mu_);
  ++st_.lookups;
  Lookup r;
  const Entry* best = nullptr;
  auto matches = [&](const Entry& e) { return e.variant == variant && prefix_of(e.tokens, prompt); };
  // From the longest block chain down: tails ending inside block k+1, then
  // the whole-block entry at block k (keys[k-1]).
  for (size_t k = keys.size() + 1; k-- > 0 && !best;) {
    const uint64_t base = k == 0 ? chain_seed(variant) : keys[k - 1];
    auto [b, en] = tails_.equal_range(base);
    for (auto it = b; it != en; ++it) {
      const Entry& e = entries_.at(it->second);
      if (matches(e) && (!best || e.tokens.size() > best->tokens.size())) best = &e;
    }
    if (!best && k > 0)
      if (auto it = entries_.find(base); it != entries_.end() && it->second.key == it->second.parent && matches(it->second))
        best = &it->second;
  }
  // How far the prompt runs along any cached entry's blocks: explains misses
  // and short hits ("diverges after N blocks").
  size_t shared = 0;
  while (shared < keys.size() && block_refs_.count(keys[shared])) ++shared;
  if (!best) {
    ++st_.misses;
    if (entries_.empty())
      r.explain = "miss: cache empty";
    else if (shared == 0)
      r.explain = fmt::format("miss: no block matched ({} prompt tokens, {} entries)", limit, entries_.size());
    else
      r.explain = fmt::format("miss: prompt shares {} blocks ({} tokens) with cached entries but no checkpoint ends "
                              "within them",
                              shared, shared * B);
    publish();
    return r;
  }
  Entry& e = entries_.at(best->key);
  e.last_used = ++tick_;
  ++e.pins;
  r.matched = static_cast<int64_t>(e.tokens.size());
  r.tier = e.ram ? Tier::ram : Tier::disk;
  (r.tier == Tier::ram ? st_.hits_ram : st_.hits_disk) += 1;
  (r.tier == Tier::ram ? st_.hit_tokens_ram : st_.hit_tokens_disk) += e.tokens.size();
  r.handle = Handle(this, e.key);
  r.explain = fmt::format("hit: {} of {} prompt tokens from {} (saved as {})", r.matched, limit, tier_name(r.tier),
                          save_reason_name(e.reason));
  if (shared * B > e.tokens.size())
    r.explain += fmt::format("; the prompt shares {} tokens with a longer entry", shared * B);
  publish();
  return r;
}

bool PrefixCache::restore(const Handle& h, Session& session, std::string* extra, std::string* why) {
  return restore_impl(h, [&](const Session::Snapshot& s) { session.restore(s); }, extra, why);
}

bool PrefixCache::restore(const Handle& h, backend::SessionState& state, std::vector<int32_t>* tokens,
                          std::string* extra, std::string* why) {
  return restore_impl(
      h,
      [&](const Session::Snapshot& s) {
        state.load(s.state);
        if (tokens) *tokens = s.tokens;
      },
      extra, why);
}

std::vector<std::string> PrefixCache::take_scanned_extras() {
  std::lock_guard lk(mu_);
  return std::exchange(scanned_extras_, {});
}

bool PrefixCache::restore_impl(const Handle& h, const std::function<void(const Session::Snapshot&)>& load,
                               std::string* extra, std::string* why) {
  auto say = [&](std::string s) {
    if (why) *why = std::move(s);
    return false;
  };
  if (h.cache_ != this) return say("restore: handle of another cache or released");
  std::shared_ptr<const Checkpoint> data;
  std::string file;
  std::vector<int32_t> want_tokens;
  {
    std::lock_guard lk(mu_);
    auto it = entries_.find(h.key_);
    if (it == entries_.end()) return say("restore: entry gone");
    data = it->second.ram ? it->second.ram : it->second.pending;
    file = it->second.file;
    if (!data) want_tokens = it->second.tokens;
  }
  if (!data) {
    try {
      auto c = std::make_shared<Checkpoint>(read_checkpoint(file, opt_.fingerprint));
      if (c->snapshot.tokens != want_tokens)
        throw CheckpointError(CheckpointError::Kind::corrupt,
                              fmt::format("checkpoint {}: replaced by another with other tokens", file));
      data = std::move(c);
    } catch (const CheckpointError& e) {
      std::lock_guard lk(mu_);
      ++st_.restore_failures;
      if (e.kind != CheckpointError::Kind::vanished) ++st_.discarded_files;
      note(fmt::format("prefix cache: discarded {}", e.what()));
      // Unpinned by force: the handle's later release finds nothing.
      drop_entry(h.key_, e.kind != CheckpointError::Kind::io && e.kind != CheckpointError::Kind::vanished);
      publish();
      return say(e.what());
    }
  }
  try {
    load(data->snapshot);
  } catch (const Error& e) {
    std::lock_guard lk(mu_);
    ++st_.restore_failures;
    publish();
    return say(fmt::format("restore: {}", e.what()));
  }
  if (extra) *extra = data->extra;
  // A disk hit is likely to be hit again soon (the next turn): keep it in RAM too.
  if (opt_.ram_bytes > 0) {
    std::lock_guard lk(mu_);
    auto it = entries_.find(h.key_);
    const uint64_t bytes = data->snapshot.bytes() + data->extra.size();
    if (it != entries_.end() && !it->second.ram && bytes <= opt_.ram_bytes) {
      it->second.ram = data;
      it->second.ram_bytes = bytes;
      st_.ram_bytes += bytes;
      ++st_.ram_entries;
      fit_ram(h.key_);
    }
    publish();
  }
  return true;
}

std::string PrefixCache::disk_path(uint64_t key) const {
  return (fs::path(opt_.disk_dir) / fmt::format("{:016x}{}", key, kExt)).string();
}

bool PrefixCache::fits_disk(uint64_t bytes, std::string* why) const {
  if (bytes <= opt_.disk_bytes) return true;
  *why = fmt::format("{} MiB exceeds the disk budget of {} MiB", mib(bytes), mib(opt_.disk_bytes));
  return false;
}

bool PrefixCache::write_disk(Entry& e, const Checkpoint& c, SaveReason reason, std::string* why) {
  const std::string path = disk_path(e.key);
  const uint64_t bytes = checkpoint_file_bytes(c);
  if (!fits_disk(bytes, why)) return false;
  try {
    write_checkpoint(path, opt_.fingerprint, c, reason);
  } catch (const Error& err) {
    ++st_.store_failures;
    *why = err.what();
    note(fmt::format("prefix cache: store failed: {}", err.what()));
    return false;
  }
  e.file = path;
  e.disk_bytes = bytes;
  st_.disk_bytes += bytes;
  ++st_.disk_entries;
  ++st_.stores_disk;
  return true;
}

bool PrefixCache::put_disk(Entry& e, std::shared_ptr<const Checkpoint> c, SaveReason reason, std::string* why) {
  const uint64_t mem = c->snapshot.bytes() + c->extra.size();
  if (!writer_.joinable() || st_.pending_bytes + mem > opt_.max_pending_bytes) {
    if (!write_disk(e, *c, reason, why)) return false;
    if (reason == SaveReason::spill) ++st_.spills;
    return true;
  }
  WriteJob j;
  j.bytes = checkpoint_file_bytes(*c);
  if (!fits_disk(j.bytes, why)) return false;
  e.gen = ++gen_;
  e.pending = c;
  j.key = e.key;
  j.gen = e.gen;
  j.mem_bytes = mem;
  j.c = std::move(c);
  j.reason = reason;
  j.path = disk_path(e.key);
  ++st_.pending_writes;
  st_.pending_bytes += mem;
  jobs_.push_back(std::move(j));
  jobs_cv_.notify_one();
  return true;
}

void PrefixCache::writer_loop() {
  std::unique_lock lk(mu_);
  for (;;) {
    jobs_cv_.wait(lk, [&] { return stop_ || !jobs_.empty(); });
    if (jobs_.empty()) return;  // stopping, and nothing left to write
    WriteJob j = std::move(jobs_.front());
    jobs_.pop_front();
    ++writing_;
    lk.unlock();
    std::string error;
    try {
      write_checkpoint(j.path, opt_.fingerprint, *j.c, j.reason);
    } catch (const Error& err) {
      error = err.what();
    }
    lk.lock();
    finish_write(j, error);
    --writing_;
    publish();
    idle_cv_.notify_all();
  }
}

void PrefixCache::finish_write(const WriteJob& j, const std::string& error) {
  --st_.pending_writes;
  st_.pending_bytes -= j.mem_bytes;
  auto it = entries_.find(j.key);
  if (it == entries_.end() || it->second.gen != j.gen) {
    // The entry went while its file was written (or was replaced by another
    // of the same key, whose own write names the same file): a file nobody
    // indexes would only take disk space until the next start.
    if (error.empty() && it == entries_.end()) ::unlink(j.path.c_str());
    return;
  }
  Entry& e = it->second;
  e.pending.reset();
  if (!error.empty()) {
    ++st_.store_failures;
    note(fmt::format("prefix cache: store failed: {}", error));
    if (!e.ram && e.file.empty()) drop_entry(e.key, false);
    return;
  }
  e.file = j.path;
  e.disk_bytes = j.bytes;
  st_.disk_bytes += j.bytes;
  ++st_.disk_entries;
  ++st_.stores_disk;
  if (j.reason == SaveReason::spill) {
    ++st_.spills;
    note(fmt::format("prefix cache: spilled {} tokens from ram to disk ({} MiB)", e.tokens.size(), mib(j.bytes)));
  }
  fit_disk(e.key);
}

void PrefixCache::wait_writes() {
  std::unique_lock lk(mu_);
  idle_cv_.wait(lk, [&] { return jobs_.empty() && writing_ == 0; });
}

// Least recently used first; pinned entries and `protect` stay.
void PrefixCache::fit_ram(uint64_t protect) {
  while (st_.ram_bytes > opt_.ram_bytes) {
    Entry* victim = nullptr;
    for (auto& [k, e] : entries_)
      if (e.ram && e.pins == 0 && k != protect && (!victim || e.last_used < victim->last_used)) victim = &e;
    if (!victim) return;
    ++st_.evictions_ram;
    if (victim->file.empty() && !victim->pending && !opt_.disk_dir.empty()) {
      std::string why;
      if (put_disk(*victim, victim->ram, SaveReason::spill, &why) && !victim->file.empty()) {
        note(fmt::format("prefix cache: spilled {} tokens from ram to disk ({} MiB)", victim->tokens.size(),
                         mib(victim->disk_bytes)));
        fit_disk(victim->key);
      }
    }
    if (victim->file.empty() && !victim->pending) {
      note(fmt::format("prefix cache: evicted {} tokens from ram", victim->tokens.size()));
      drop_entry(victim->key, false);
      continue;
    }
    victim->ram.reset();
    st_.ram_bytes -= victim->ram_bytes;
    victim->ram_bytes = 0;
    --st_.ram_entries;
  }
}

void PrefixCache::fit_disk(uint64_t protect) {
  while (st_.disk_bytes > opt_.disk_bytes) {
    Entry* victim = nullptr;
    for (auto& [k, e] : entries_)
      if (!e.file.empty() && e.pins == 0 && k != protect && (!victim || e.last_used < victim->last_used)) victim = &e;
    if (!victim) return;
    ++st_.evictions_disk;
    note(fmt::format("prefix cache: evicted {} tokens from disk ({} MiB, disk full)", victim->tokens.size(),
                     mib(victim->disk_bytes)));
    ::unlink(victim->file.c_str());
    st_.disk_bytes -= victim->disk_bytes;
    --st_.disk_entries;
    victim->file.clear();
    victim->disk_bytes = 0;
    if (!victim->ram) drop_entry(victim->key, false);
  }
}

PrefixCache::StoreResult PrefixCache::store(const Session& session, SaveReason reason, std::string extra,
                                            uint64_t variant) {
  return store_impl(session.tokens(), session.position(), [&] { return session.state_bytes(); }, reason,
                    std::move(extra), variant);
}

PrefixCache::StoreResult PrefixCache::store(const backend::SessionState& state, std::span<const int32_t> tokens,
                                            SaveReason reason, std::string extra, uint64_t variant) {
  return store_impl(tokens, state.position(), [&] { return state.save(); }, reason, std::move(extra), variant);
}

PrefixCache::StoreResult PrefixCache::store_impl(std::span<const int32_t> toks, int64_t position,
                                                 const std::function<std::vector<uint8_t>()>& save, SaveReason reason,
                                                 std::string extra, uint64_t variant) {
  StoreResult r;
  if (position != static_cast<int64_t>(toks.size())) {
    r.explain = fmt::format("not stored: session at position {} holds {} tokens", position, toks.size());
    return r;
  }
  if (static_cast<int64_t>(toks.size()) < opt_.min_tokens) {
    r.explain = fmt::format("not stored: {} tokens, fewer than the minimum {}", toks.size(), opt_.min_tokens);
    return r;
  }
  if (opt_.ram_bytes == 0 && opt_.disk_dir.empty()) {
    r.explain = "not stored: no ram budget and no disk directory";
    return r;
  }
  uint64_t parent = 0;
  const uint64_t key = entry_key(toks, &parent, variant);
  {
    std::lock_guard lk(mu_);
    if (auto it = entries_.find(key); it != entries_.end()) {
      it->second.last_used = ++tick_;
      r.tier = it->second.ram ? Tier::ram : Tier::disk;
      r.explain = std::equal(it->second.tokens.begin(), it->second.tokens.end(), toks.begin(), toks.end())
                      ? fmt::format("not stored: {} tokens already cached", toks.size())
                                            : "not stored: key collision with another entry";
      return r;
    }
  }
  // The copy out of the session runs without the lock.
  auto c = std::make_shared<Checkpoint>();
  c->snapshot.state = save();
  c->snapshot.tokens.assign(toks.begin(), toks.end());
  c->extra = std::move(extra);
  c->reason = reason;
  c->variant = variant;
  const uint64_t ram_bytes = c->snapshot.bytes() + c->extra.size();

  std::lock_guard lk(mu_);
  if (entries_.count(key)) {  // stored by another thread meanwhile
    r.explain = fmt::format("not stored: {} tokens already cached", toks.size());
    return r;
  }
  Entry e;
  e.key = key;
  e.parent = parent;
  e.tokens.assign(toks.begin(), toks.end());
  e.reason = reason;
  e.variant = variant;
  e.last_used = ++tick_;
  std::string why;
  if (opt_.ram_bytes > 0 && ram_bytes <= opt_.ram_bytes) {
    e.ram = c;
    e.ram_bytes = ram_bytes;
    st_.ram_bytes += ram_bytes;
    ++st_.ram_entries;
    ++st_.stores_ram;
    r.tier = Tier::ram;
  } else if (!opt_.disk_dir.empty() && put_disk(e, c, reason, &why)) {
    r.tier = Tier::disk;
  } else {
    if (why.empty())
      why = fmt::format("{} MiB exceeds the ram budget of {} MiB", mib(ram_bytes), mib(opt_.ram_bytes));
    r.explain = "not stored: " + why;
    publish();
    return r;
  }
  add_index(e, true);
  entries_.emplace(key, std::move(e));
  if (r.tier == Tier::ram)
    fit_ram(key);
  else
    fit_disk(key);
  r.stored = true;
  r.explain = fmt::format("stored {} tokens in {} ({}, {} MiB)", toks.size(), tier_name(r.tier),
                          save_reason_name(reason), mib(ram_bytes));
  note("prefix cache: " + r.explain);
  publish();
  return r;
}

void PrefixCache::flush() {
  if (opt_.disk_dir.empty()) return;
  std::unique_lock lk(mu_);
  std::vector<Entry*> todo;
  for (auto& [k, e] : entries_)
    if (e.ram && e.file.empty() && !e.pending) todo.push_back(&e);
  // Most recently used first: if the disk budget runs out, the older ones go.
  std::sort(todo.begin(), todo.end(), [](const Entry* a, const Entry* b) { return a->last_used > b->last_used; });
  // Written here, in order (the writer thread may still be busy with earlier
  // jobs; those are waited for below).
  for (Entry* e : todo) {
    std::string why;
    if (write_disk(*e, *e->ram, SaveReason::shutdown, &why)) fit_disk(e->key);
  }
  idle_cv_.wait(lk, [&] { return jobs_.empty() && writing_ == 0; });
  publish();
}

int64_t PrefixCache::next_checkpoint(int64_t from, int64_t to) const {
  if (step_ <= 0 || to <= from) return -1;
  const int64_t next = (std::max<int64_t>(from, 0) / step_ + 1) * step_;
  return next <= to ? next : -1;
}

int64_t PrefixCache::cold_checkpoint(int64_t prompt_len, int64_t anchor) const {
  if (opt_.cold_max_tokens == 0 || prompt_len < opt_.min_tokens || prompt_len > opt_.cold_max_tokens) return -1;
  if (anchor >= opt_.min_tokens && anchor < prompt_len) return anchor;
  const int64_t at = (prompt_len - opt_.boundary_trim) / opt_.block_tokens * opt_.block_tokens;
  return at >= opt_.min_tokens && at > 0 ? at : -1;
}

void PrefixCache::unpin(uint64_t key) {
  std::lock_guard lk(mu_);
  if (auto it = entries_.find(key); it != entries_.end() && it->second.pins > 0) --it->second.pins;
}

void PrefixCache::publish() {
  std::lock_guard lk(stats_mu_);
  published_ = st_;
}

PrefixCacheStats PrefixCache::stats() const {
  std::lock_guard lk(stats_mu_);
  return published_;
}

}  // namespace ds4::engine

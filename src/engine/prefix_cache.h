#pragma once
// The prefix cache (docs/prefix-cache.md): checkpoints of session state keyed
// by hash chains of fixed-size token blocks, in two tiers, host RAM and a
// disk directory, each under a byte budget. A request resumes from the longest
// cached prefix of its prompt; least recently used entries go first; entries
// pinned by a live Handle are never evicted.
//
// How a scheduler drives it (docs/prefix-cache.md §Scheduler):
//   auto hit = cache.lookup(prompt, prompt.size() - 1);  // leave a token to feed
//   log(hit.explain);
//   if (hit.matched && cache.restore(hit.handle, session, &extra, &why)) feed the rest
//   else cold prefill, cutting chunks at cache.next_checkpoint(pos, end) and calling
//        cache.store(session, SaveReason::continued) there;
//   before a live session is replaced: cache.store(session, SaveReason::evict);
//   at shutdown: cache.store(...shutdown) for live sessions, then cache.flush().
//
// Thread safety: every member may be called from any thread; stats() never
// waits for I/O. Disk writes (a store that goes to disk, a RAM entry spilled
// on eviction) run on the cache's own writer thread when background_writes is
// set, so the caller (the server's scheduler, between two batched steps)
// never waits on the disk; until its file is written such an entry is served
// from the copy in memory. Without it they run in the caller, under the lock.
#include <cstdint>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engine/checkpoint.h"
#include "engine/session.h"

namespace ds4::engine {

struct PrefixCacheOptions {
  Fingerprint fingerprint;    // of the model and numerics every session uses
  int64_t block_tokens = 256;  // the hash chain's block size
  uint64_t ram_bytes = 0;      // host RAM budget; 0: no RAM tier
  std::string disk_dir;        // "": no disk tier (created, mode 0700, if missing)
  uint64_t disk_bytes = uint64_t{4096} << 20;  // --kv-disk-space-mb, reference default 4096
  int64_t min_tokens = 512;    // shorter prefixes are cheaper to prefill than to store
  // Periodic checkpoints during long prefills and decodes: every multiple of
  // this many tokens (rounded up to whole blocks: 10000 -> 10240); 0: none.
  int64_t checkpoint_interval = 10000;
  // Cold saves (a prompt prefilled from nothing): prompts of min_tokens ..
  // cold_max_tokens get a checkpoint `boundary_trim` tokens before their end,
  // aligned down to a block (0: no cold saves). Reference defaults.
  int64_t cold_max_tokens = 30000;
  int64_t boundary_trim = 32;
  // Read and checksum every file at startup (else only headers and token
  // lists; a corrupt payload is then found at restore).
  bool verify_on_scan = true;
  // Disk writes on the writer thread (see above). Queued copies may hold up to
  // max_pending_bytes beyond the RAM budget; past that a write runs in the
  // caller, as without the thread.
  bool background_writes = false;
  uint64_t max_pending_bytes = uint64_t{2048} << 20;
  // One line per event (store, hit, eviction, discarded file); default log::info.
  std::function<void(const std::string&)> log;
};

enum class Tier { none, ram, disk };
std::string_view tier_name(Tier t);

struct PrefixCacheStats {
  uint64_t lookups = 0, misses = 0;
  uint64_t hits_ram = 0, hits_disk = 0;
  uint64_t hit_tokens_ram = 0, hit_tokens_disk = 0;
  uint64_t stores_ram = 0, stores_disk = 0, store_failures = 0;
  uint64_t evictions_ram = 0, evictions_disk = 0, spills = 0;
  uint64_t restore_failures = 0, discarded_files = 0;
  uint64_t ram_bytes = 0, disk_bytes = 0;
  uint64_t ram_entries = 0, disk_entries = 0;
  uint64_t pending_writes = 0, pending_bytes = 0;  // queued or being written
};

class PrefixCache {
 public:
  // Keeps its entry pinned (never evicted) while alive. Must not outlive the cache.
  class Handle {
   public:
    Handle() = default;
    Handle(Handle&& o) noexcept : cache_(o.cache_), key_(o.key_) { o.cache_ = nullptr; }
    Handle& operator=(Handle&& o) noexcept;
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    ~Handle() { release(); }
    explicit operator bool() const { return cache_ != nullptr; }
    void release();  // unpins now

   private:
    friend class PrefixCache;
    Handle(PrefixCache* c, uint64_t k) : cache_(c), key_(k) {}
    PrefixCache* cache_ = nullptr;
    uint64_t key_ = 0;
  };

  struct Lookup {
    int64_t matched = 0;  // tokens of the prompt the entry holds (0: miss)
    Tier tier = Tier::none;
    Handle handle;        // pins the entry until restored or dropped
    std::string explain;  // "hit: 2048 of 2300 prompt tokens from disk ..." / "miss: ..."
  };

  struct StoreResult {
    bool stored = false;
    Tier tier = Tier::none;
    std::string explain;
  };

  // Scans disk_dir: foreign, corrupt and old-version files are deleted with
  // one log line each; temporaries of dead writers are removed.
  explicit PrefixCache(PrefixCacheOptions opt);
  ~PrefixCache();
  PrefixCache(const PrefixCache&) = delete;
  PrefixCache& operator=(const PrefixCache&) = delete;

  // The longest cached prefix of `tokens[0, max_tokens)` (max_tokens < 0: all).
  // `variant` names what else the state depends on (a hash of the steering it
  // is computed with; 0: none): entries of another variant never match, as
  // their keys are chained from a seed that includes it.
  Lookup lookup(std::span<const int32_t> tokens, int64_t max_tokens = -1, uint64_t variant = 0);
  // Loads the entry into `session` (of this cache's model and numerics).
  // False, with `why`, when it cannot: a disk file gone bad (the entry is then
  // dropped and the file deleted) or a session too small for it. `extra`
  // receives the entry's extra bytes.
  bool restore(const Handle& h, Session& session, std::string* extra = nullptr, std::string* why = nullptr);
  // The same for a bare backend state (the scheduler's slots): `tokens`
  // receives the entry's token history.
  bool restore(const Handle& h, backend::SessionState& state, std::vector<int32_t>* tokens,
               std::string* extra = nullptr, std::string* why = nullptr);
  // Stores the session's whole state (position == tokens().size()). Not
  // stored, with the reason in `explain`: shorter than min_tokens, already
  // cached, larger than every budget, or a failed write (ENOSPC: serving goes on).
  StoreResult store(const Session& session, SaveReason reason, std::string extra = {}, uint64_t variant = 0);
  // The same for a bare backend state holding exactly `tokens`.
  StoreResult store(const backend::SessionState& state, std::span<const int32_t> tokens, SaveReason reason,
                    std::string extra = {}, uint64_t variant = 0);
  // Extra bytes of the entries found on disk at startup (with verify_on_scan),
  // handed over once: the server reloads the tool-id replay map from them.
  std::vector<std::string> take_scanned_extras();
  // Writes RAM-only entries to disk (shutdown) and waits for every queued
  // write; no-op without a disk tier.
  void flush();
  // Waits until no disk write is queued or running.
  void wait_writes();

  // Periodic checkpoints: whether a session at `pos` should be stored, and the
  // first such position in (from, to] (-1: none) for cutting prefill chunks.
  int64_t checkpoint_step() const { return step_; }
  bool should_checkpoint(int64_t pos) const { return step_ > 0 && pos > 0 && pos % step_ == 0; }
  int64_t next_checkpoint(int64_t from, int64_t to) const;
  // Where a cold prefill of `prompt_len` tokens should stop to store a `cold`
  // checkpoint (-1: none). `anchor` (e.g. the end of the system prompt and
  // tools, shared by every conversation of an agent) wins when it is at least
  // min_tokens and inside the prompt.
  int64_t cold_checkpoint(int64_t prompt_len, int64_t anchor = -1) const;

  PrefixCacheStats stats() const;
  const PrefixCacheOptions& options() const { return opt_; }
  // Chain keys of the first len / block_tokens full blocks; [k] covers tokens [0, (k+1)B).
  std::vector<uint64_t> block_keys(std::span<const int32_t> tokens, uint64_t variant = 0) const;

 private:
  struct Entry {
    uint64_t key = 0;
    uint64_t parent = 0;  // chain key of its last full block (tail entries)
    std::vector<int32_t> tokens;
    std::shared_ptr<const Checkpoint> ram;  // null: not in RAM
    std::string file;                      // "": not on disk
    // The copy a queued disk write holds (also what restores read meanwhile).
    std::shared_ptr<const Checkpoint> pending;
    uint64_t gen = 0;  // tells a write's entry from a later one of the same key
    uint64_t ram_bytes = 0, disk_bytes = 0;
    uint64_t last_used = 0;
    int pins = 0;
    SaveReason reason = SaveReason::unknown;
    uint64_t variant = 0;
  };

  uint64_t entry_key(std::span<const int32_t> toks, uint64_t* parent, uint64_t variant) const;
  void scan_dir();
  void add_index(Entry& e, bool add);
  void drop_entry(uint64_t key, bool delete_file);
  struct WriteJob {
    uint64_t key = 0, gen = 0, bytes = 0, mem_bytes = 0;
    std::shared_ptr<const Checkpoint> c;
    SaveReason reason = SaveReason::unknown;
    std::string path;
  };
  std::string disk_path(uint64_t key) const;
  bool fits_disk(uint64_t bytes, std::string* why) const;  // within the disk budget, else why not
  bool write_disk(Entry& e, const Checkpoint& c, SaveReason reason, std::string* why);
  // Disk write of `c` for entry e: queued for the writer thread when it runs
  // and the queue has room, else written now. False with `why` when the
  // checkpoint exceeds the disk budget or a write done now fails.
  bool put_disk(Entry& e, std::shared_ptr<const Checkpoint> c, SaveReason reason, std::string* why);
  void writer_loop();
  void finish_write(const WriteJob& j, const std::string& error);
  void fit_ram(uint64_t protect);
  void fit_disk(uint64_t protect);
  void unpin(uint64_t key);
  void publish();  // copies the counters stats() reads
  void note(const std::string& line) const;
  StoreResult store_impl(std::span<const int32_t> toks, int64_t position,
                         const std::function<std::vector<uint8_t>()>& save, SaveReason reason, std::string extra,
                         uint64_t variant);
  bool restore_impl(const Handle& h, const std::function<void(const Session::Snapshot&)>& load, std::string* extra,
                    std::string* why);

  PrefixCacheOptions opt_;
  int64_t step_ = 0;
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Entry> entries_;
  std::multimap<uint64_t, uint64_t> tails_;            // parent chain key -> tail entry key
  std::unordered_map<uint64_t, uint32_t> block_refs_;  // chain key -> entries that contain that block
  uint64_t tick_ = 0;
  PrefixCacheStats st_;
  mutable std::mutex stats_mu_;
  PrefixCacheStats published_;
  std::vector<std::string> scanned_extras_;  // under mu_
  // The writer thread's queue (under mu_).
  std::deque<WriteJob> jobs_;
  int writing_ = 0;  // jobs taken off the queue and not finished
  bool stop_ = false;
  uint64_t gen_ = 0;
  std::condition_variable jobs_cv_, idle_cv_;
  std::thread writer_;
};

}  // namespace ds4::engine

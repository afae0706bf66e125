#include "cli/cache_flags.h"

#include "engine/checkpoint.h"
#include "util/error.h"

namespace ds4::cli {

void add_cache_flags(CLI::App* sub, CacheFlags& f) {
  sub->add_option("--cache-ram-mb", f.ram_mb, "Prefix cache budget in host RAM, MiB (0: off)")->capture_default_str();
  sub->add_option("--kv-disk-dir", f.disk_dir, "Directory of the on-disk prefix cache (created; default: off)");
  sub->add_option("--kv-disk-space-mb", f.disk_mb, "Disk budget of the prefix cache, MiB")->capture_default_str();
  sub->add_option("--kv-cache-min-tokens", f.min_tokens, "Smallest checkpoint stored or loaded")->capture_default_str();
  sub->add_option("--kv-cache-cold-max-tokens", f.cold_max_tokens,
                  "Longest prompt that gets a cold checkpoint (0: no cold saves)")
      ->capture_default_str();
  sub->add_option("--kv-cache-continued-interval-tokens", f.interval_tokens,
                  "Checkpoint every this many tokens of a long prefill or decode (0: never)")
      ->capture_default_str();
  sub->add_option("--kv-cache-boundary-trim-tokens", f.trim_tokens, "Tokens a cold save leaves before the prompt's end")
      ->capture_default_str();
  sub->add_option("--kv-cache-block-tokens", f.block_tokens, "Token block of the prefix cache's hash chain")
      ->capture_default_str();
}

engine::PrefixCacheOptions cache_options(const CacheFlags& f, const engine::Engine& e) {
  auto nonneg = [](const char* flag, int64_t v) {
    if (v < 0) fail("invalid value for {}: {} (must be >= 0)", flag, v);
  };
  nonneg("--cache-ram-mb", f.ram_mb);
  nonneg("--kv-disk-space-mb", f.disk_mb);
  nonneg("--kv-cache-min-tokens", f.min_tokens);
  nonneg("--kv-cache-cold-max-tokens", f.cold_max_tokens);
  nonneg("--kv-cache-continued-interval-tokens", f.interval_tokens);
  nonneg("--kv-cache-boundary-trim-tokens", f.trim_tokens);
  if (f.block_tokens <= 0) fail("invalid value for --kv-cache-block-tokens: {} (must be > 0)", f.block_tokens);
  if (f.cold_max_tokens != 0 && f.cold_max_tokens < f.min_tokens)
    fail("invalid value for --kv-cache-cold-max-tokens: {} (must be 0 or >= --kv-cache-min-tokens {})",
         f.cold_max_tokens, f.min_tokens);
  if (!f.disk_dir.empty() && f.disk_mb == 0) fail("invalid value for --kv-disk-space-mb: 0 with --kv-disk-dir");
  engine::PrefixCacheOptions o;
  o.fingerprint = engine::model_fingerprint(e.model(), e.numerics());
  o.block_tokens = f.block_tokens;
  o.ram_bytes = static_cast<uint64_t>(f.ram_mb) << 20;
  o.disk_dir = f.disk_dir;
  o.disk_bytes = static_cast<uint64_t>(f.disk_mb) << 20;
  o.min_tokens = f.min_tokens;
  o.checkpoint_interval = f.interval_tokens;
  o.cold_max_tokens = f.cold_max_tokens;
  o.boundary_trim = f.trim_tokens;
  // The scheduler stores checkpoints between batched steps: disk writes go to
  // the cache's writer thread so that running streams never wait on the disk.
  o.background_writes = true;
  return o;
}

std::unique_ptr<engine::PrefixCache> make_prefix_cache(const CacheFlags& f, const engine::Engine& e) {
  engine::PrefixCacheOptions o = cache_options(f, e);
  if (o.ram_bytes == 0 && o.disk_dir.empty()) return nullptr;
  return std::make_unique<engine::PrefixCache>(std::move(o));
}

}  // namespace ds4::cli

#pragma once
// Prefix cache flags (docs/prefix-cache.md) for a command that serves many
// sessions (`ds4 serve`): the RAM tier's budget, antirez/ds4's disk cache
// flags (reference-behavior §3.1) with their defaults, and our block size.
// Wiring: add_cache_flags(sub, flags) at registration, then
//   auto cache = make_prefix_cache(flags, engine);  // null when both tiers are off
#include <CLI/CLI.hpp>

#include <cstdint>
#include <memory>
#include <string>

#include "engine/engine.h"
#include "engine/prefix_cache.h"

namespace ds4::cli {

struct CacheFlags {
  int64_t ram_mb = 4096;  // --cache-ram-mb; 0 turns the RAM tier off
  std::string disk_dir;   // --kv-disk-dir; "" turns the disk tier off
  int64_t disk_mb = 4096;
  int64_t min_tokens = 512, cold_max_tokens = 30000, interval_tokens = 10000, trim_tokens = 32;
  int64_t block_tokens = 256;
};

void add_cache_flags(CLI::App* sub, CacheFlags& f);
// Throws ds4::Error naming the flag for a negative or inconsistent value.
engine::PrefixCacheOptions cache_options(const CacheFlags& f, const engine::Engine& e);
std::unique_ptr<engine::PrefixCache> make_prefix_cache(const CacheFlags& f, const engine::Engine& e);

}  // namespace ds4::cli

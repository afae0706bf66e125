#include "server/metrics.h"

#include <fmt/format.h>

namespace ds4::server {

std::string endpoint_label(const std::string& path) {
  static const char* known[] = {"/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions",
                                "/v1/responses", "/v1/messages", "/v1/messages/count_tokens", "/tokenize",
                                "/detokenize"};
  for (const char* k : known)
    if (path == k) return path;
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  return "other";
}

void Metrics::count_request(const std::string& endpoint, int status) {
  std::lock_guard lk(mu_);
  ++requests_[{endpoint, status}];
}

std::string Metrics::render(const engine::SchedulerStats& s, const std::optional<engine::PrefixCacheStats>& cache) const {
  std::string o;
  auto metric = [&](const char* name, const char* type, const char* help, auto value) {
    o += fmt::format("# HELP {} {}\n# TYPE {} {}\n{} {}\n", name, help, name, type, name, value);
  };
  o += "# HELP ds4_http_requests_total HTTP requests answered, by endpoint and status.\n"
       "# TYPE ds4_http_requests_total counter\n";
  {
    std::lock_guard lk(mu_);
    for (const auto& [k, n] : requests_)
      o += fmt::format("ds4_http_requests_total{{endpoint=\"{}\",status=\"{}\"}} {}\n", k.first, k.second, n);
  }
  metric("ds4_requests_finished_total", "counter", "Generation requests the scheduler finished.", s.requests_done);
  metric("ds4_prompt_tokens_total", "counter", "Prompt tokens prefilled (prefix-reused tokens excluded).", s.prompt_tokens);
  metric("ds4_prompt_tokens_cached_total", "counter", "Prompt tokens not prefilled (a live slot or the prefix cache).",
         s.cached_tokens);
  o += "# HELP ds4_prompt_tokens_cached_by_source_total Prompt tokens not prefilled, by where they came from (a live "
       "slot, the prefix cache's RAM or disk tier).\n# TYPE ds4_prompt_tokens_cached_by_source_total counter\n";
  o += fmt::format("ds4_prompt_tokens_cached_by_source_total{{source=\"slot\"}} {}\n", s.cached_tokens_slot);
  o += fmt::format("ds4_prompt_tokens_cached_by_source_total{{source=\"ram\"}} {}\n", s.cached_tokens_ram);
  o += fmt::format("ds4_prompt_tokens_cached_by_source_total{{source=\"disk\"}} {}\n", s.cached_tokens_disk);
  metric("ds4_generated_tokens_total", "counter", "Tokens generated.", s.generated_tokens);
  metric("ds4_prefix_reuse_hits_total", "counter", "Requests that reused a slot's token prefix.", s.prefix_hits);
  metric("ds4_prefill_seconds_total", "counter", "Forward time spent on prompt tokens.", s.prefill_seconds);
  metric("ds4_decode_seconds_total", "counter", "Forward time spent on generated tokens.", s.decode_seconds);
  metric("ds4_prefill_tokens_per_second", "gauge", "Prompt tokens per second of forward time, since start.",
         s.prefill_seconds > 0 ? static_cast<double>(s.prompt_tokens) / s.prefill_seconds : 0.0);
  metric("ds4_decode_tokens_per_second", "gauge", "Generated tokens per second of forward time, since start.",
         s.decode_seconds > 0 ? static_cast<double>(s.generated_tokens) / s.decode_seconds : 0.0);
  o += "# HELP ds4_time_to_first_token_seconds Time from request arrival to its first token.\n"
       "# TYPE ds4_time_to_first_token_seconds summary\n";
  o += fmt::format("ds4_time_to_first_token_seconds_sum {}\nds4_time_to_first_token_seconds_count {}\n",
                   s.ttft_seconds_sum, s.ttft_count);
  metric("ds4_forward_steps_total", "counter", "Batched forward calls.", s.steps);
  metric("ds4_batch_sequences_last", "gauge", "Sequences in the last forward call.", s.last_batch_seqs);
  metric("ds4_batch_sequences_max", "gauge", "Most sequences one forward call has held.", s.max_batch_seqs);
  metric("ds4_queue_length", "gauge", "Requests waiting for a slot.", s.queue_length);
  metric("ds4_active_sessions", "gauge", "Slots serving a request now.", s.active);
  metric("ds4_slots", "gauge", "Slots (--parallel).", s.parallel);
  if (cache) {
    const engine::PrefixCacheStats& c = *cache;
    auto tiered = [&](const char* name, const char* type, const char* help, uint64_t ram, uint64_t disk) {
      o += fmt::format("# HELP {0} {1}\n# TYPE {0} {2}\n{0}{{tier=\"ram\"}} {3}\n{0}{{tier=\"disk\"}} {4}\n", name,
                       help, type, ram, disk);
    };
    metric("ds4_prefix_cache_lookups_total", "counter", "Prefix cache lookups.", c.lookups);
    metric("ds4_prefix_cache_misses_total", "counter", "Prefix cache lookups that found nothing.", c.misses);
    tiered("ds4_prefix_cache_hits_total", "counter", "Prefix cache hits, by tier.", c.hits_ram, c.hits_disk);
    tiered("ds4_prefix_cache_hit_tokens_total", "counter", "Prompt tokens the hits covered, by tier.", c.hit_tokens_ram,
           c.hit_tokens_disk);
    tiered("ds4_prefix_cache_stores_total", "counter", "Checkpoints stored, by tier.", c.stores_ram, c.stores_disk);
    tiered("ds4_prefix_cache_evictions_total", "counter", "Entries evicted, by tier.", c.evictions_ram, c.evictions_disk);
    metric("ds4_prefix_cache_spills_total", "counter", "RAM entries written to disk on eviction.", c.spills);
    metric("ds4_prefix_cache_store_failures_total", "counter", "Failed checkpoint writes (disk full, I/O error).",
           c.store_failures);
    metric("ds4_prefix_cache_restore_failures_total", "counter", "Hits whose state could not be restored.",
           c.restore_failures);
    metric("ds4_prefix_cache_discarded_files_total", "counter", "Corrupt, foreign or old files deleted.",
           c.discarded_files);
    tiered("ds4_prefix_cache_bytes", "gauge", "Bytes held, by tier.", c.ram_bytes, c.disk_bytes);
    tiered("ds4_prefix_cache_entries", "gauge", "Entries held, by tier.", c.ram_entries, c.disk_entries);
    metric("ds4_prefix_cache_pending_writes", "gauge", "Checkpoints queued for or being written to disk.",
           c.pending_writes);
    metric("ds4_prefix_cache_pending_bytes", "gauge", "Memory the queued disk writes hold.", c.pending_bytes);
  }
  return o;
}

}  // namespace ds4::server

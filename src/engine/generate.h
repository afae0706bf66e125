#pragma once
// The generation loop: prefill new prompt tokens into a Session, then sample
// token by token until EOS, a stop string, the token limit, a full context or
// an interrupt. Text is streamed as UTF-8-complete pieces tagged reasoning or
// answer; the <think>/</think> markers themselves are never shown.
#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/engine.h"
#include "engine/sampler.h"
#include "engine/session.h"

namespace ds4::engine {

enum class StopReason { eos, stop_string, max_tokens, context_full, interrupted };
std::string_view stop_reason_name(StopReason r);

struct GenerateOptions {
  // Sampling of answer tokens (the user's knobs).
  SamplingParams sampling;
  // Sampling while the model is thinking: ds4 ignores the knobs there and uses
  // the defaults (reference-behavior §3.6); diagnostics set greedy here too.
  SamplingParams thinking_sampling;
  int64_t max_tokens = 50000;
  int64_t ctx_size = 32768;  // the session never holds more tokens than this
  std::vector<std::string> stop;
  // The prompt ended with <think>: generated text is reasoning until </think>.
  bool thinking = false;
  // Never pick EOS (ds4-bench generates exactly N tokens).
  bool ban_eos = false;
  // Prefill is fed in chunks of this many tokens (progress + interrupt checks;
  // any chunking gives the same state on the CPU; on CUDA, chunks of 16 or
  // more tokens take the tensor-core products and agree with smaller ones to
  // rounding, see docs/cuda-backend.md).
  int64_t prefill_chunk = 512;
  const std::atomic<bool>* interrupt = nullptr;

  // Called with each answer/reasoning piece as soon as it is safe to show.
  std::function<void(std::string_view text, bool reasoning)> on_text;
  // Called for every sampled token (EOS included) with the logits it came from.
  std::function<void(std::span<const float> logits, int32_t token)> on_token;
  // Prefill progress: tokens done of total, after each chunk.
  std::function<void(int64_t done, int64_t total)> on_prefill;
};

struct GenerateResult {
  StopReason stop = StopReason::eos;
  std::vector<int32_t> tokens;      // sampled tokens, EOS excluded
  std::optional<int32_t> unfed;     // last of `tokens`, sampled but not yet in the session
  std::string text, reasoning;      // what was shown, per channel
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0, gen_seconds = 0;
  std::string message;              // context_full: the message for the user
};

// Prefills `prompt` (the tokens not yet in `session`) and generates. Throws
// ds4::Error when the prompt alone does not fit ctx_size (nothing is fed then).
GenerateResult generate(const Engine& engine, Session& session, std::span<const int32_t> prompt,
                        const GenerateOptions& opt);

}  // namespace ds4::engine

#pragma once
// Building steering directions (docs/steering.md): run prompts through the
// engine, capture one layer component (attention or FFN output) at every
// layer on the last prompt row, and turn the captures of a "good" and a "bad"
// prompt set into one unit direction per layer.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "backend/backend.h"
#include "engine/engine.h"

namespace ds4::engine {

struct CaptureOptions {
  backend::Component component = backend::Component::ffn;
  bool think = false;  // the prompt ends with <think> instead of </think>
  std::string system = "You are a helpful assistant.";
};

// The minimal DS4 prompt for `text` (BOS, system, User, text, Assistant,
// think marker) run through a fresh session with `steer`; returns the
// capture of its last row ([n_layer][n_embd] before and after steering).
backend::Capture capture_prompt(const Engine& e, std::string_view text, const CaptureOptions& opt,
                                backend::Steering steer = {});

struct DirectionOptions {
  bool pair_normalize = false;  // mean of normalized pair differences (needs equal set sizes)
  bool orthogonalize = true;    // remove the control mean's direction, then renormalize
};

// Per layer: d = normalize(mean(good) - mean(bad)) (or the normalized mean
// of normalize(good_i - bad_i)), then, unless told not to, made orthogonal
// to the normalized mean of `control` (when empty: of good and bad together)
// and normalized again. Each capture is [n_layer][n_embd]. Throws ds4::Error
// for empty sets, unequal sets with pair_normalize, or a degenerate layer
// (good and bad means equal).
std::vector<float> build_direction(const std::vector<std::vector<float>>& good,
                                   const std::vector<std::vector<float>>& bad,
                                   const std::vector<std::vector<float>>& control, uint32_t n_layer, uint32_t n_embd,
                                   const DirectionOptions& opt);

// Non-empty lines of a prompt file, one prompt each.
std::vector<std::string> read_prompt_lines(const std::string& path);

}  // namespace ds4::engine

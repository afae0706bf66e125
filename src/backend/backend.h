#pragma once
// The Backend interface (docs/ARCHITECTURE.md §3): a backend owns its weights'
// device copies and kernels, creates session state (the KV state of
// model-spec §9) and runs the forward pass for any number of tokens: decode is
// n = 1, prefill n > 1, chunked prefill is repeated calls on one session.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/weights.h"

namespace ds4::backend {

// `faithful`: FP8 KV rounding, indexer Hadamard + FP4, f16 KV storage, as the
// model was trained and as antirez/ds4 runs it. `exact`: no simulation; matches
// a float reference such as Hugging Face transformers.
enum class NumericsMode { exact, faithful };
NumericsMode parse_numerics(std::string_view s);  // throws ds4::Error
std::string_view numerics_name(NumericsMode m);

// Per-session state owned by a backend. Its position is the number of tokens
// processed so far; the next forward() continues from there.
class SessionState {
 public:
  virtual ~SessionState() = default;
  virtual int64_t position() const = 0;
  virtual NumericsMode numerics() const = 0;
  // The state in the canonical, backend-independent layout (session_state.h
  // of the CPU backend documents it): load() into a fresh session of the same
  // model continues exactly as this one would. Backends without it throw.
  virtual std::vector<uint8_t> save() const;
  virtual void load(std::span<const uint8_t> bytes);
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;
  virtual const model::Model& model() const = 0;
  virtual std::unique_ptr<SessionState> new_session(NumericsMode mode) const = 0;
  // Runs `tokens` at positions state.position() ... + n - 1. When `logits` is
  // non-empty it must hold n * vocab floats and receives every position's
  // logits, row-major; when empty only the state advances (prompt prefill
  // without logits skips the LM head).
  virtual void forward(SessionState& state, std::span<const int32_t> tokens, std::span<float> logits) const = 0;
};

struct BackendOptions {
  int threads = 0;  // 0: hardware concurrency
};

// "cpu" (and later "cuda"). Throws ds4::Error for an unknown or unavailable name.
std::unique_ptr<Backend> make_backend(std::string_view name, std::shared_ptr<const model::Model> model,
                                      const BackendOptions& opt = {});

}  // namespace ds4::backend

#pragma once
// The Backend interface (docs/ARCHITECTURE.md §3 and §7): a backend owns its
// weights' device copies and kernels, creates session state (the KV state of
// model-spec §9) sized up front for a context, and runs one forward pass over
// a batch of sequences: each sequence brings its own session and its own
// tokens (1 for a decode step, many for a prefill chunk), and says which of
// its positions need logits. A batch of one is the old single-sequence call;
// chunked prefill is repeated calls on one session.
//
// Threading contract: a Backend is driven by one thread at a time (the CLI or
// the server's scheduler); session_memory(), new_session() and forward() are
// not called concurrently with each other. A session belongs to the backend
// that created it, appears at most once in a batch, and may be destroyed from
// any thread while no forward() is running. name() and model() may be called
// from any thread at any time.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/placement.h"
#include "model/steering.h"
#include "model/weights.h"

namespace ds4::backend {

// `faithful`: FP8 KV rounding, indexer Hadamard + FP4, f16 KV storage, as the
// model was trained and as antirez/ds4 runs it. `exact`: no simulation; matches
// a float reference such as Hugging Face transformers.
enum class NumericsMode { exact, faithful };
NumericsMode parse_numerics(std::string_view s);  // throws ds4::Error
std::string_view numerics_name(NumericsMode m);

struct SessionOptions {
  NumericsMode numerics = NumericsMode::faithful;
  // Most tokens the session will ever hold (its positions are 0 .. ctx_size-1).
  // Memory for all of them is reserved when the session is created.
  int64_t ctx_size = 4096;
};

// What a session of a given context costs, known before it is created.
struct SessionMemory {
  size_t state_bytes = 0;    // KV state at full context (rings, compressed rows, frontiers)
  size_t scratch_bytes = 0;  // the session's own working memory of a forward pass
  size_t total() const { return state_bytes + scratch_bytes; }
};

// Per-session state owned by a backend. Its position is the number of tokens
// processed so far; the next forward() continues from there.
class SessionState {
 public:
  virtual ~SessionState() = default;
  virtual int64_t position() const = 0;
  virtual int64_t capacity() const = 0;  // the ctx_size it was created for
  virtual NumericsMode numerics() const = 0;
  // The state in the canonical, backend-independent layout (session.h of the
  // CPU backend documents it): load() into a fresh session of the same model
  // continues exactly as this one would. Backends without it throw.
  virtual std::vector<uint8_t> save() const;
  virtual void load(std::span<const uint8_t> bytes);
};

// Which positions of a sequence's step get logits.
enum class Logits { none, last, all };

// Directional steering of one sequence (docs/steering.md): a direction set's
// direction of each layer is projected out of the attention output and/or the
// FFN output (y <- y - s d (d.y)). Zero scales: untouched.
struct Steering {
  float attn = 0, ffn = 0;
  // The direction set: null is the backend's default (set_steering); any
  // other must have been registered with the backend (add_steering), which
  // keeps it for its own lifetime, so the pointer names one set for good.
  // Sequences of one batch may each name their own.
  const model::SteeringVectors* dirs = nullptr;
  bool active() const { return attn != 0 || ffn != 0; }
  // Equal when they compute the same thing: both inactive (whatever set they
  // name), or the same scales on the same set. Null and the default set's own
  // pointer are told apart, so callers that mix both resolve null first
  // (Backend::steering_for). The scheduler reuses a slot's state only for a
  // request whose steering equals the one the state was computed with.
  bool operator==(const Steering& o) const {
    if (!active() && !o.active()) return true;
    return attn == o.attn && ffn == o.ffn && dirs == o.dirs;
  }
};

// The layer outputs steering acts on, by name.
enum class Component { attn, ffn };

// Asks a step to copy one component at every layer for its last token row:
// `pre` as the layer computed it, `post` after this step's steering (equal
// when it has none). Each [n_layer][n_embd]. Used to build directions.
struct Capture {
  Component component = Component::ffn;
  std::vector<float> pre, post;
};

// One sequence's part of a batch.
struct SeqStep {
  SessionState* state = nullptr;
  std::span<const int32_t> tokens;  // at positions state->position() ... + n - 1
  Logits want = Logits::none;
  // none: empty; last: vocab floats; all: tokens.size() * vocab, row-major.
  std::span<float> logits;
  Steering steer{};
  Capture* capture = nullptr;  // optional; needs at least one token
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;
  virtual const model::Model& model() const = 0;

  // The memory a session of these options takes (on the backend's device).
  virtual SessionMemory session_memory(const SessionOptions& opt) const = 0;
  // Throws ds4::Error, naming the figures, when the session cannot be held;
  // a session once created never runs out of memory in forward().
  virtual std::unique_ptr<SessionState> new_session(const SessionOptions& opt) const = 0;

  // Runs every step of the batch; each session advances by its token count.
  // Equal, for each sequence, to running it alone (bit for bit on the CPU).
  // The whole batch is checked (validate_batch) before any state changes.
  virtual void forward(std::span<const SeqStep> batch) const = 0;

  // A batch of one: logits for every position when `logits` is non-empty
  // (n * vocab floats), none (state only) when it is empty.
  void forward(SessionState& state, std::span<const int32_t> tokens, std::span<float> logits) const;

  // The default steering directions: those of steps whose Steering names no
  // set (null: none). Also registers them (add_steering). Called while no
  // forward() runs. Throws for a backend without steering or vectors of
  // another shape.
  virtual void set_steering(std::shared_ptr<const model::SteeringVectors> v);
  // Registers another direction set that a step's Steering::dirs may name
  // (the server's named vectors). The backend keeps it, and whatever it made
  // of it (the CUDA backend's device copy), until it is destroyed, so forward()
  // never uploads or allocates for steering. Called while no forward() runs
  // (at server start). Registering a set twice is a no-op. Throws as
  // set_steering.
  virtual void add_steering(std::shared_ptr<const model::SteeringVectors> v);
  const model::SteeringVectors* steering() const { return steering_.get(); }
  // The set a step with this steering uses: its own, else the default (null
  // when there is none).
  const model::SteeringVectors* steering_for(const Steering& s) const { return s.dirs ? s.dirs : steering_.get(); }
  // Whether `v` was registered (set_steering or add_steering).
  bool has_steering_set(const model::SteeringVectors* v) const;

  // Where forward passes spent their time since the last call, as a printable
  // table (backend/phase_table.h), and a reset; empty for a backend made
  // without BackendOptions::profile.
  virtual std::string take_profile() const { return {}; }

  // The read rates a decode step's time is bound by, measured now over the
  // weights already loaded (nothing is allocated; `ds4 bench` prints the
  // bound they give, docs/placement.md). For the CPU backend the host is the
  // device. device_gbps 0: the backend measures nothing.
  struct ReadRates {
    int64_t device_expert_layers = -1;  // layers [0, N) keep their routed experts on the device; -1: every layer
    double device_gbps = 0;             // the backend reading its resident weights (a kernel; the CPU's threads)
    double host_gbps = 0;               // the host's threads reading host-resident experts (0: there are none)
  };
  virtual ReadRates measure_read_rates() const { return {}; }

 protected:
  // Check the vectors' shape against the model and keep them (as the default,
  // or as one more registered set); backends that apply steering call them
  // from their set_steering / add_steering. register_steering returns false
  // when the set was registered already.
  void keep_steering(std::shared_ptr<const model::SteeringVectors> v);
  bool register_steering(std::shared_ptr<const model::SteeringVectors> v);
  std::shared_ptr<const model::SteeringVectors> steering_;
  std::vector<std::shared_ptr<const model::SteeringVectors>> steering_sets_;  // every registered set
};

// Throws ds4::Error naming the offending step: a null or repeated session,
// a token outside the vocabulary, a logits buffer of the wrong size, a step
// that would pass the session's capacity, a non-finite steering scale, a
// non-zero scale with no direction set to apply, a direction set of another
// shape than the model's or one not registered with `be`, or a capture on a
// step without tokens.
void validate_batch(const Backend& be, std::span<const SeqStep> batch);

struct BackendOptions {
  int threads = 0;  // 0: hardware concurrency
  // Time each phase of the forward pass (CUDA: events on the stream, one
  // sync per pass; CPU: the driving thread's clock); read with
  // Backend::take_profile.
  bool profile = false;
  // CUDA: the routed experts of layers [0, N) go on the device, those of the
  // later layers stay in host memory and the host computes them
  // (docs/placement.md). -1: every layer's when they fit, else as many whole
  // layers as fit. The CPU backend holds everything in host memory anyway.
  int device_expert_layers = -1;
};

// A GPU this process sees, with its free memory when asked (for `ds4 plan`).
struct DeviceInfo {
  int id = 0;  // CUDA ordinal
  std::string name;
  size_t free_bytes = 0, total_bytes = 0;
};
// The CUDA devices; empty in a build without CUDA or on a machine without a
// device or driver.
std::vector<DeviceInfo> cuda_devices();

// How the CUDA backend sizes device memory, for the placement planner
// (src/model/placement.h): each weight's device bytes, the backend's scratch
// besides the weights, and the working room its load check keeps free.
// Empty in a build without CUDA.
struct DeviceSizing {
  model::DeviceBytes weight_bytes;
  size_t scratch_bytes = 0;
  size_t working_room = 0;
  // Set aside too when some routed experts stay in host memory, for a model
  // with these tensors (model::DeviceBudget::spill_bytes).
  std::function<uint64_t(std::span<const model::PlacementTensor>)> spill_bytes;
};
std::optional<DeviceSizing> cuda_sizing(const model::ModelConfig& c);

// "cpu" or "cuda". Throws ds4::Error for an unknown or unavailable name.
std::unique_ptr<Backend> make_backend(std::string_view name, std::shared_ptr<const model::Model> model,
                                      const BackendOptions& opt = {});

}  // namespace ds4::backend

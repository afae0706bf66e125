#include "backend/backend.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <unordered_set>

#include <fmt/format.h>

#include "backend/cpu/cpu_backend.h"
#ifdef DS4_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif
#include "util/error.h"

namespace ds4::backend {

NumericsMode parse_numerics(std::string_view s) {
  if (s == "exact") return NumericsMode::exact;
  if (s == "faithful") return NumericsMode::faithful;
  fail("unknown numerics mode '{}' (expected exact or faithful)", s);
}

std::string_view numerics_name(NumericsMode m) { return m == NumericsMode::exact ? "exact" : "faithful"; }

std::vector<uint8_t> SessionState::save() const { fail("this backend cannot save session state"); }
void SessionState::load(std::span<const uint8_t>) { fail("this backend cannot load session state"); }

void Backend::forward(SessionState& state, std::span<const int32_t> tokens, std::span<float> logits) const {
  const SeqStep step{&state, tokens, logits.empty() ? Logits::none : Logits::all, logits};
  forward(std::span<const SeqStep>(&step, 1));
}

void Backend::set_steering(std::shared_ptr<const model::SteeringVectors> v) {
  if (v) fail("{} backend: directional steering is not available on this backend yet", name());
  steering_.reset();
}

void Backend::add_steering(std::shared_ptr<const model::SteeringVectors> v) {
  if (v) fail("{} backend: directional steering is not available on this backend yet", name());
}

bool Backend::has_steering_set(const model::SteeringVectors* v) const {
  return std::any_of(steering_sets_.begin(), steering_sets_.end(), [v](const auto& p) { return p.get() == v; });
}

namespace {

// Empty when `v` fits the model, else what is wrong.
std::string steering_shape_error(const model::SteeringVectors& v, const model::ModelConfig& c) {
  if (v.n_layer != c.n_layer || v.n_embd != c.n_embd)
    return fmt::format("steering {}: vectors of {} x {}, the model has {} layers x {}", v.path, v.n_layer, v.n_embd,
                       c.n_layer, c.n_embd);
  if (v.dirs.size() != size_t{c.n_layer} * c.n_embd)
    return fmt::format("steering {}: {} floats, the model needs {} ({} layers x {})", v.path, v.dirs.size(),
                       size_t{c.n_layer} * c.n_embd, c.n_layer, c.n_embd);
  return {};
}

}  // namespace

bool Backend::register_steering(std::shared_ptr<const model::SteeringVectors> v) {
  if (!v) fail("{} backend: add_steering needs a direction set", name());
  if (auto e = steering_shape_error(*v, model().config); !e.empty()) fail("{}", e);
  if (has_steering_set(v.get())) return false;
  steering_sets_.push_back(std::move(v));
  return true;
}

void Backend::keep_steering(std::shared_ptr<const model::SteeringVectors> v) {
  if (v) register_steering(v);
  steering_ = std::move(v);
}

void validate_batch(const Backend& be, std::span<const SeqStep> batch) {
  const model::ModelConfig& c = be.model().config;
  const size_t V = c.n_vocab;
  std::unordered_set<const SessionState*> seen;
  for (size_t i = 0; i < batch.size(); ++i) {
    const SeqStep& s = batch[i];
    if (!s.state) fail("batch step {}: no session", i);
    if (!seen.insert(s.state).second) fail("batch step {}: the same session appears twice in one batch", i);
    const size_t n = s.tokens.size();
    size_t want = 0;
    if (s.want == Logits::last && n > 0) want = V;
    if (s.want == Logits::all) want = n * V;
    if (s.logits.size() != want)
      fail("batch step {}: logits buffer holds {} floats, need {} ({} tokens, vocab {}, logits {})", i, s.logits.size(),
           want, n, V, s.want == Logits::none ? "none" : s.want == Logits::last ? "last" : "all");
    for (size_t t = 0; t < n; ++t)
      if (s.tokens[t] < 0 || static_cast<uint32_t>(s.tokens[t]) >= c.n_vocab)
        fail("batch step {}: token id {} at index {} is outside the vocabulary (size {})", i, s.tokens[t], t,
             c.n_vocab);
    if (!std::isfinite(s.steer.attn) || !std::isfinite(s.steer.ffn))
      fail("batch step {}: steering scales must be finite (attn {}, ffn {})", i, s.steer.attn, s.steer.ffn);
    if (s.steer.dirs) {
      if (auto e = steering_shape_error(*s.steer.dirs, c); !e.empty()) fail("batch step {}: {}", i, e);
      if (!be.has_steering_set(s.steer.dirs))
        fail("batch step {}: steering {} is not registered with the {} backend (Backend::add_steering)", i,
             s.steer.dirs->path, be.name());
    }
    if (s.steer.active() && !be.steering_for(s.steer))
      fail("batch step {}: steering scales (attn {}, ffn {}) but no steering file is loaded", i, s.steer.attn,
           s.steer.ffn);
    if (s.capture && n == 0) fail("batch step {}: a capture needs at least one token", i);
    const int64_t end = s.state->position() + static_cast<int64_t>(n);
    if (end > s.state->capacity())
      fail("batch step {}: {} tokens at position {} pass the session's context of {} tokens", i, n,
           s.state->position(), s.state->capacity());
  }
}

std::vector<DeviceInfo> cuda_devices() {
#ifdef DS4_HAVE_CUDA
  return cuda::list_devices();
#else
  return {};
#endif
}

std::optional<DeviceSizing> cuda_sizing([[maybe_unused]] const model::ModelConfig& c) {
#ifdef DS4_HAVE_CUDA
  DeviceSizing s;
  s.weight_bytes = [](GgmlType t, std::span<const int64_t> ne) -> uint64_t { return cuda::weight_device_bytes(t, ne); };
  s.scratch_bytes = cuda::pass_scratch_bytes(c);
  s.working_room = cuda::kWeightRoom;
  s.spill_bytes = [](std::span<const model::PlacementTensor> t) -> uint64_t { return cuda::spill_stage_bytes(t); };
  return s;
#else
  return std::nullopt;
#endif
}

std::unique_ptr<Backend> make_backend(std::string_view name, std::shared_ptr<const model::Model> model,
                                      const BackendOptions& opt) {
  if (name == "cpu") return cpu::make_cpu_backend(std::move(model), opt);
#ifdef DS4_HAVE_CUDA
  if (name == "cuda") return cuda::make_cuda_backend(std::move(model), opt);
  fail("unknown backend '{}' (available: cpu, cuda)", name);
#else
  if (name == "cuda") fail("backend 'cuda': this ds4 was built without CUDA (configure with -DDS4_CUDA=ON where nvcc is installed)");
  fail("unknown backend '{}' (available: cpu)", name);
#endif
}

}  // namespace ds4::backend

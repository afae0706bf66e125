#include "engine/steering_build.h"

#include <cmath>
#include <fstream>

#include "engine/prompt.h"
#include "util/error.h"

namespace ds4::engine {
namespace {

using Vec = std::vector<double>;

Vec mean_layer(const std::vector<std::vector<float>>& caps, uint32_t l, uint32_t D) {
  Vec m(D, 0.0);
  for (const auto& c : caps)
    for (uint32_t i = 0; i < D; ++i) m[i] += c[static_cast<size_t>(l) * D + i];
  for (double& x : m) x /= static_cast<double>(caps.size());
  return m;
}

double norm(const Vec& v) {
  double s = 0;
  for (double x : v) s += x * x;
  return std::sqrt(s);
}

// Unit vector, or false when v is (numerically) zero.
bool normalize(Vec& v) {
  const double n = norm(v);
  if (!(n > 1e-30)) return false;
  for (double& x : v) x /= n;
  return true;
}

}  // namespace

backend::Capture capture_prompt(const Engine& e, std::string_view text, const CaptureOptions& opt,
                                backend::Steering steer) {
  const std::vector<int32_t> toks =
      single_prompt(e, opt.system, text, opt.think ? Thinking::high : Thinking::none);
  auto session = e.new_session(static_cast<int64_t>(toks.size()));
  backend::Capture cap;
  cap.component = opt.component;
  const backend::SeqStep step{&session->state(), toks, backend::Logits::none, {}, steer, &cap};
  e.backend().forward(std::span<const backend::SeqStep>(&step, 1));
  return cap;
}

std::vector<float> build_direction(const std::vector<std::vector<float>>& good,
                                   const std::vector<std::vector<float>>& bad,
                                   const std::vector<std::vector<float>>& control, uint32_t n_layer, uint32_t n_embd,
                                   const DirectionOptions& opt) {
  if (good.empty() || bad.empty()) fail("steering: need at least one good and one bad prompt");
  if (opt.pair_normalize && good.size() != bad.size())
    fail("steering: --pair-normalize needs as many good prompts as bad ones ({} vs {})", good.size(), bad.size());
  const size_t want = static_cast<size_t>(n_layer) * n_embd;
  for (const auto* set : {&good, &bad, &control})
    for (const auto& c : *set)
      if (c.size() != want) fail("steering: a capture holds {} floats, expected {}", c.size(), want);
  std::vector<std::vector<float>> both = good;
  both.insert(both.end(), bad.begin(), bad.end());
  const auto& ctrl = control.empty() ? both : control;

  std::vector<float> out(want);
  for (uint32_t l = 0; l < n_layer; ++l) {
    Vec d(n_embd, 0.0);
    if (opt.pair_normalize) {
      for (size_t p = 0; p < good.size(); ++p) {
        Vec diff(n_embd);
        for (uint32_t i = 0; i < n_embd; ++i)
          diff[i] = static_cast<double>(good[p][static_cast<size_t>(l) * n_embd + i]) -
                    bad[p][static_cast<size_t>(l) * n_embd + i];
        if (!normalize(diff)) fail("steering: layer {}: good and bad prompt {} give the same capture", l, p);
        for (uint32_t i = 0; i < n_embd; ++i) d[i] += diff[i] / static_cast<double>(good.size());
      }
    } else {
      const Vec g = mean_layer(good, l, n_embd), b = mean_layer(bad, l, n_embd);
      for (uint32_t i = 0; i < n_embd; ++i) d[i] = g[i] - b[i];
    }
    if (!normalize(d)) fail("steering: layer {}: the good and bad means are equal; no direction", l);
    if (opt.orthogonalize) {
      Vec c = mean_layer(ctrl, l, n_embd);
      if (normalize(c)) {
        double dot = 0;
        for (uint32_t i = 0; i < n_embd; ++i) dot += d[i] * c[i];
        for (uint32_t i = 0; i < n_embd; ++i) d[i] -= dot * c[i];
        if (!normalize(d)) fail("steering: layer {}: the direction lies along the control mean", l);
      }
    }
    for (uint32_t i = 0; i < n_embd; ++i) out[static_cast<size_t>(l) * n_embd + i] = static_cast<float>(d[i]);
  }
  return out;
}

std::vector<std::string> read_prompt_lines(const std::string& path) {
  std::ifstream f(path);
  if (!f) fail("{}: cannot open for reading", path);
  std::vector<std::string> out;
  for (std::string line; std::getline(f, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") != std::string::npos) out.push_back(line);
  }
  if (out.empty()) fail("{}: no prompts (one per line)", path);
  return out;
}

}  // namespace ds4::engine

// CUDA forward speed: `bench_cuda_forward MODEL.gguf [prefill_tokens] [decode_tokens] [sequences...]`.
// Times a prefill of P tokens and then D single-token decode steps (each call
// returns logits, as generation does) on one session, after a warm-up, and
// prints tokens/s with the weight bytes one token reads (every weight except
// the routed experts, plus n_expert_used experts per MoE layer, plus one
// embedding row) and the bandwidth that implies. Each further argument N
// times N sequences decoding together (each prefilled with 8 tokens, then
// decode_tokens batched steps of one token per sequence) and prints the
// aggregate and per-sequence tokens/s.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_check.h"
#include "model/weights.h"
#include "util/error.h"

namespace {

size_t bytes_of(const ds4::model::Weight& w) {
  if (!w.present()) return 0;
  size_t n = w.row_bytes() * static_cast<size_t>(w.rows());
  if (w.ne.size() > 2) n *= static_cast<size_t>(w.ne[2]);
  return n;
}

size_t bytes_per_token(const ds4::model::Model& m) {
  const auto& W = m.weights;
  const auto& c = m.config;
  size_t b = W.token_embd.row_bytes() + bytes_of(W.output_hc_fn) + bytes_of(W.output);
  for (const auto& L : W.layers) {
    for (const auto* w : {&L.hc_attn_fn, &L.q_a, &L.q_b, &L.kv, &L.out_a, &L.out_b, &L.compressor.kv,
                          &L.compressor.gate, &L.indexer_q_b, &L.indexer_proj, &L.indexer_compressor.kv,
                          &L.indexer_compressor.gate, &L.hc_ffn_fn, &L.gate_inp, &L.gate_shexp, &L.up_shexp,
                          &L.down_shexp})
      b += bytes_of(*w);
    for (const auto* w : {&L.gate_exps, &L.up_exps, &L.down_exps}) b += bytes_of(*w) / c.n_expert * c.n_expert_used;
  }
  return b;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_cuda_forward MODEL.gguf [prefill_tokens=64] [decode_tokens=32]\n");
    return 2;
  }
  try {
    if (ds4::cuda::device_count() == 0) {
      std::printf("bench_cuda_forward: no CUDA device, nothing measured\n");
      return 0;
    }
    const int P = argc > 2 ? std::atoi(argv[2]) : 64, Dn = argc > 3 ? std::atoi(argv[3]) : 32;
    auto model = ds4::model::Model::load(argv[1]);
    auto be = ds4::backend::make_backend("cuda", model);
    const size_t V = model->config.n_vocab;
    std::vector<int32_t> toks(static_cast<size_t>(P + Dn));
    for (size_t i = 0; i < toks.size(); ++i) toks[i] = static_cast<int32_t>((i * 7919 + 13) % V);
    {  // warm-up: first launches load modules and tables
      auto w = be->new_session({ds4::backend::NumericsMode::exact, P + Dn + 1});
      std::vector<float> lg(V);
      be->forward(*w, std::span<const int32_t>(toks.data(), 1), lg);
    }
    auto s = be->new_session({ds4::backend::NumericsMode::exact, P + Dn + 1});
    std::vector<float> lg(static_cast<size_t>(P) * V), one(V);
    auto t0 = std::chrono::steady_clock::now();
    be->forward(*s, std::span<const int32_t>(toks.data(), static_cast<size_t>(P)), lg);
    const double tp = seconds_since(t0);
    t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < Dn; ++i) be->forward(*s, std::span<const int32_t>(toks.data() + P + i, 1), one);
    const double td = seconds_since(t0);
    const double bpt = static_cast<double>(bytes_per_token(*model));
    std::printf("bench_cuda_forward: %s: layers %u, weight bytes/token %.1f MB\n", argv[1], model->config.n_layer,
                bpt / 1e6);
    std::printf("bench_cuda_forward: prefill %d tokens: %.1f tok/s (%.1f GB/s of weights)\n", P, P / tp,
                bpt * P / tp / 1e9);
    std::printf("bench_cuda_forward: decode %d tokens: %.1f tok/s (%.1f GB/s of weights)\n", Dn, Dn / td,
                bpt * Dn / td / 1e9);
    for (int a = 4; a < argc; ++a) {
      const int N = std::atoi(argv[a]);
      if (N <= 0) continue;
      std::vector<std::unique_ptr<ds4::backend::SessionState>> ss;
      std::vector<std::vector<float>> out(static_cast<size_t>(N), std::vector<float>(V));
      std::vector<ds4::backend::SeqStep> steps(static_cast<size_t>(N));
      std::vector<int32_t> stoks(static_cast<size_t>(N) * static_cast<size_t>(Dn + 8));
      for (size_t i = 0; i < stoks.size(); ++i) stoks[i] = static_cast<int32_t>((i * 104729 + 7) % V);
      const auto at = [&](int q, int t) { return stoks.data() + static_cast<size_t>(q) * static_cast<size_t>(Dn + 8) + t; };
      for (int q = 0; q < N; ++q) {
        ss.push_back(be->new_session({ds4::backend::NumericsMode::exact, Dn + 9}));
        be->forward(*ss.back(), std::span<const int32_t>(at(q, 0), 8), {});
      }
      t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < Dn; ++i) {
        for (int q = 0; q < N; ++q)
          steps[static_cast<size_t>(q)] = {ss[static_cast<size_t>(q)].get(), std::span<const int32_t>(at(q, 8 + i), 1),
                                           ds4::backend::Logits::last, out[static_cast<size_t>(q)]};
        be->forward(steps);
      }
      const double tb = seconds_since(t0);
      std::printf("bench_cuda_forward: %d sequences decoding together, %d steps: %.1f tok/s aggregate, %.1f tok/s "
                  "per sequence (%.2fx one sequence's decode)\n",
                  N, Dn, N * Dn / tb, Dn / tb, (N * Dn / tb) / (Dn / td));
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_forward: %s\n", e.what());
    return 1;
  }
}

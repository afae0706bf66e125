// CPU reference backend: the forward of model-spec §5-§8 over a batch of
// sequences. The rows of every sequence's tokens are stacked, so each layer
// runs its projections and experts once over all rows (one pass over each
// weight for the whole batch), and only the stateful middle (raw ring,
// compressors, indexer, attention) walks each sequence's tokens in order on
// its own session. Every row's values depend on that row alone, so a batch,
// prefill, decode and any chunking compute the same bits.
#include "backend/cpu/cpu_backend.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

#include "backend/cpu/layer_math.h"
#include "backend/cpu/linear.h"
#include "backend/cpu/numerics.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/read_rate.h"
#include "backend/cpu/rope.h"
#include "backend/cpu/session.h"
#include "backend/phase_table.h"
#include "util/error.h"
#include "util/float16.h"
#include "util/thread_pool.h"

namespace ds4::backend::cpu {
namespace {

using model::ModelConfig;
using model::Weight;
using Vec = std::vector<float>;

struct LayerFloats {
  Vec hc_attn_scale, hc_attn_base, attn_norm, q_a_norm, kv_norm, sinks;
  Vec hc_ffn_scale, hc_ffn_base, ffn_norm, exp_probs_b;
  Vec comp_ape, comp_norm, idx_ape, idx_norm;
};

Vec floats(const Weight& w) { return w.present() ? w.to_f32() : Vec{}; }

size_t sz(int64_t n) { return static_cast<size_t>(n); }

// Up to this many rows in a layer, experts run as one job per (expert, row)
// use in two pool calls (decode_experts); above it, one matmul per expert
// over its rows (prefill). Both give the same bits.
constexpr int64_t kExpertJobRows = 16;

double physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<double>(pages) * static_cast<double>(page) : 0.0;
}

class CpuBackend final : public Backend {
 public:
  CpuBackend(std::shared_ptr<const model::Model> m, const BackendOptions& opt)
      : m_(std::move(m)), c_(m_->config), pool_(std::make_unique<ThreadPool>(opt.threads)), rope_plain_(c_, false),
        rope_comp_(c_, true), profile_(opt.profile) {
    const auto& W = m_->weights;
    out_hc_base_ = floats(W.output_hc_base);
    out_hc_scale_ = floats(W.output_hc_scale);
    out_norm_ = floats(W.output_norm);
    for (const auto& L : W.layers) {
      LayerFloats f;
      f.hc_attn_scale = floats(L.hc_attn_scale);
      f.hc_attn_base = floats(L.hc_attn_base);
      f.attn_norm = floats(L.attn_norm);
      f.q_a_norm = floats(L.q_a_norm);
      f.kv_norm = floats(L.kv_norm);
      f.sinks = floats(L.sinks);
      f.hc_ffn_scale = floats(L.hc_ffn_scale);
      f.hc_ffn_base = floats(L.hc_ffn_base);
      f.ffn_norm = floats(L.ffn_norm);
      f.exp_probs_b = floats(L.exp_probs_b);
      f.comp_ape = floats(L.compressor.ape);
      f.comp_norm = floats(L.compressor.norm);
      f.idx_ape = floats(L.indexer_compressor.ape);
      f.idx_norm = floats(L.indexer_compressor.norm);
      lf_.push_back(std::move(f));
    }
  }

  std::string_view name() const override { return "cpu"; }
  // Wall time of each phase on the driving thread (the pool's workers run
  // inside the calls it times).
  std::string take_profile() const override { return profile_ ? table_.take("wall", false) : std::string(); }
  const model::Model& model() const override { return *m_; }
  // The host is this backend's device: its rate is the pool reading a
  // layer's routed experts (the bulk of what a decode step reads).
  ReadRates measure_read_rates() const override {
    if (m_->weights.layers.empty()) return {};
    ReadRates r;
    r.device_gbps = host_read_gbps(routed_expert_ranges(m_->weights.layers[0]), *pool_);
    return r;
  }
  SessionMemory session_memory(const SessionOptions& opt) const override {
    return {state_bytes(c_, opt.ctx_size), 0};
  }
  void set_steering(std::shared_ptr<const model::SteeringVectors> v) override { keep_steering(std::move(v)); }
  void add_steering(std::shared_ptr<const model::SteeringVectors> v) override { register_steering(std::move(v)); }

  std::unique_ptr<SessionState> new_session(const SessionOptions& opt) const override {
    if (opt.ctx_size <= 0) fail("cpu backend: context size must be > 0 (got {})", opt.ctx_size);
    // Rows are reserved, not touched, up front; a session whose full state
    // could never fit the machine is refused now rather than failing later.
    const double need = static_cast<double>(session_memory(opt).total()), have = physical_memory_bytes();
    if (have > 0 && need > have)
      fail("cpu backend: a session of {} tokens needs {:.1f} MiB of KV state, more than this machine's {:.1f} MiB "
           "of memory",
           opt.ctx_size, need / (1024.0 * 1024.0), have / (1024.0 * 1024.0));
    return std::make_unique<CpuSession>(c_, opt.numerics, opt.ctx_size);
  }

  void forward(std::span<const SeqStep> batch) const override {
    validate_batch(*this, batch);
    Rows R;
    for (const SeqStep& st : batch) {
      auto* S = dynamic_cast<CpuSession*>(st.state);
      if (!S) fail("cpu backend: session was not created by the cpu backend");
      const auto n = static_cast<int64_t>(st.tokens.size());
      R.seqs.push_back({S, static_cast<int64_t>(R.tok.size()), n, st.steer, st.capture});
      if (st.capture) {
        const size_t layer_floats = sz(c_.n_layer) * c_.n_embd;
        st.capture->pre.assign(layer_floats, 0.0f);
        st.capture->post.assign(layer_floats, 0.0f);
      }
      for (int64_t t = 0; t < n; ++t) {
        R.tok.push_back(st.tokens[sz(t)]);
        R.pos.push_back(S->pos + t);
      }
    }
    const auto n = static_cast<int64_t>(R.tok.size());
    if (n == 0) return;
    if (profile_) last_ = Clock::now();

    const int64_t D = c_.n_embd, hcD = int64_t{c_.hc_count} * D;
    Vec X(sz(n * hcD));
    Vec e(sz(D));
    for (int64_t t = 0; t < n; ++t) {
      dequantize_row(m_->weights.token_embd, R.tok[sz(t)], e.data());
      for (uint32_t i = 0; i < c_.hc_count; ++i) std::copy(e.begin(), e.end(), X.begin() + t * hcD + i * D);
    }
    mark(Phase::embed, LayerKind::outside);
    for (uint32_t l = 0; l < c_.n_layer; ++l) {
      attention_block(l, R, X);
      ffn_block(l, R, X);
    }
    for (const Seq& q : R.seqs) q.S->pos += q.n;

    // The head runs only on the rows that want logits, gathered.
    std::vector<int64_t> rows;
    for (size_t i = 0; i < batch.size(); ++i) {
      const Seq& q = R.seqs[i];
      if (batch[i].want == Logits::all)
        for (int64_t t = 0; t < q.n; ++t) rows.push_back(q.at + t);
      else if (batch[i].want == Logits::last && q.n > 0)
        rows.push_back(q.at + q.n - 1);
    }
    if (rows.empty()) {
      if (profile_) table_.pass(n);
      return;
    }
    const auto m = static_cast<int64_t>(rows.size());
    Vec Xh(sz(m * hcD));
    for (int64_t i = 0; i < m; ++i)
      std::copy(X.begin() + rows[sz(i)] * hcD, X.begin() + (rows[sz(i)] + 1) * hcD, Xh.begin() + i * hcD);
    Vec lg(sz(m) * c_.n_vocab);
    head(m, Xh, lg.data());
    mark(Phase::head, LayerKind::outside);
    size_t at = 0;
    for (const SeqStep& st : batch) {
      std::copy(lg.begin() + static_cast<std::ptrdiff_t>(at), lg.begin() + static_cast<std::ptrdiff_t>(at + st.logits.size()),
                st.logits.begin());
      at += st.logits.size();
    }
    mark(Phase::logits_copy, LayerKind::outside);
    if (profile_) table_.pass(n);
  }

 private:
  // One sequence of the batch: its session and its rows [at, at + n).
  struct Seq {
    CpuSession* S;
    int64_t at, n;
    Steering steer;
    Capture* capture;
  };
  // The batch's rows: every sequence's tokens in order, with their positions.
  struct Rows {
    std::vector<Seq> seqs;
    std::vector<int32_t> tok;
    std::vector<int64_t> pos;
  };

  struct HcMix {
    Vec y, post, comb;
  };

  HcMix hc_pre(const Weight& fn, const Vec& scale, const Vec& base, int64_t n, const Vec& X) const {
    const int64_t D = c_.n_embd, hc = c_.hc_count, hcD = hc * D, mix = c_.hc_mix_rows();
    Vec u(X.size()), m(sz(n * mix));
    per_token(n, [&](int64_t t) { rms_norm(X.data() + t * hcD, nullptr, hcD, c_.rms_eps, u.data() + t * hcD); });
    mm(fn, u.data(), hcD, n, m.data(), mix);
    HcMix r{Vec(sz(n * D)), Vec(sz(n * hc)), Vec(sz(n * hc * hc))};
    per_token(n, [&](int64_t t) {
      Vec pre(sz(hc));
      hc_split_sinkhorn(m.data() + t * mix, scale.data(), base.data(), c_, pre.data(), r.post.data() + t * hc,
                        r.comb.data() + t * hc * hc);
      hc_collapse(X.data() + t * hcD, pre.data(), hc, D, r.y.data() + t * D);
    });
    return r;
  }

  void hc_post(const HcMix& h, const Vec& out, int64_t n, Vec& X) const {
    const int64_t D = c_.n_embd, hc = c_.hc_count;
    per_token(n, [&](int64_t t) {
      hc_expand(X.data() + t * hc * D, out.data() + t * D, h.post.data() + t * hc, h.comb.data() + t * hc * hc, hc, D);
    });
  }

  // Steering and capture of one layer component (out: [rows][n_embd]): each
  // sequence's rows lose their scaled projection on the layer's direction of
  // that sequence's own set; a capture copies its last row before and after.
  void steer(uint32_t l, Component comp, const Rows& R, Vec& out) const {
    const int64_t D = c_.n_embd;
    for (const Seq& sq : R.seqs) {
      if (sq.n == 0) continue;
      const float s = comp == Component::attn ? sq.steer.attn : sq.steer.ffn;
      Capture* cap = sq.capture && sq.capture->component == comp ? sq.capture : nullptr;
      const int64_t last = sq.at + sq.n - 1;
      if (cap) std::copy_n(out.begin() + last * D, D, cap->pre.begin() + l * D);
      if (s != 0) {
        const std::span<const float> d = steering_for(sq.steer)->layer(l);
        for (int64_t t = sq.at; t < sq.at + sq.n; ++t) model::steer_row(d, s, std::span<float>(out.data() + t * D, sz(D)));
      }
      if (cap) std::copy_n(out.begin() + last * D, D, cap->post.begin() + l * D);
    }
  }

  void attention_block(uint32_t l, const Rows& R, Vec& X) const {
    const auto& W = m_->weights.layers[l];
    const LayerFloats& F = lf_[l];
    const auto n = static_cast<int64_t>(R.tok.size());
    // Numerics are per session: each row follows its own sequence's mode.
    std::vector<uint8_t> row_faithful(sz(n));
    for (const Seq& sq : R.seqs)
      std::fill_n(row_faithful.begin() + sq.at, sq.n, sq.S->mode == NumericsMode::faithful);
    const int64_t D = c_.n_embd, H = c_.n_head, hd = c_.head_dim, qr = c_.q_lora_rank, rd = c_.rope_dim,
                  nope = c_.nope_dim(), win = c_.sliding_window;
    const uint32_t ratio = c_.compress_ratios[l];
    const LayerKind kind = layer_kind(ratio);
    const Rope& rope = ratio ? rope_comp_ : rope_plain_;

    HcMix h = hc_pre(W.hc_attn_fn, F.hc_attn_scale, F.hc_attn_base, n, X);
    mark(Phase::hc_pre, kind);
    Vec a(sz(n * D));
    per_token(n, [&](int64_t t) { rms_norm(h.y.data() + t * D, F.attn_norm.data(), D, c_.rms_eps, a.data() + t * D); });

    Vec qlat(sz(n * qr));
    mm(W.q_a, a.data(), D, n, qlat.data(), qr);
    for (int64_t t = 0; t < n; ++t) rms_norm(qlat.data() + t * qr, F.q_a_norm.data(), qr, c_.rms_eps, qlat.data() + t * qr);
    Vec q(sz(n * H * hd));
    mm(W.q_b, qlat.data(), qr, n, q.data(), H * hd);
    Vec kv(sz(n * hd));
    mm(W.kv, a.data(), D, n, kv.data(), hd);
    // Per (token, head): independent, so spread over the pool.
    pool_->parallel_for(n * H, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        float* qh = q.data() + i * hd;
        rms_norm(qh, nullptr, hd, c_.rms_eps, qh);
        rope.apply(qh + nope, R.pos[sz(i / H)]);
      }
    }, 4);
    for (int64_t t = 0; t < n; ++t) {
      const int64_t p = R.pos[sz(t)];
      float* k = kv.data() + t * hd;
      rms_norm(k, F.kv_norm.data(), hd, c_.rms_eps, k);
      rope.apply(k + nope, p);
      if (row_faithful[sz(t)]) {
        fp8_simulate_64(std::span<float>(k, sz(nope)));
        for (int64_t j = 0; j < hd; ++j) k[j] = f16_to_f32(f32_to_f16(k[j]));
      }
    }

    // Compressor and indexer projections (per token, batched).
    const int64_t cw = ratio ? (ratio == 4 ? 2 : 1) * hd : 0;
    const int64_t ih = c_.indexer_heads, id = c_.indexer_head_dim, iw = 2 * id;
    Vec ckv, cg, ikv, ig, iq, iwt;
    if (ratio) {
      ckv.resize(sz(n * cw));
      cg.resize(sz(n * cw));
      mm(W.compressor.kv, a.data(), D, n, ckv.data(), cw);
      mm(W.compressor.gate, a.data(), D, n, cg.data(), cw);
    }
    if (ratio == 4) {
      ikv.resize(sz(n * iw));
      ig.resize(sz(n * iw));
      iq.resize(sz(n * ih * id));
      iwt.resize(sz(n * ih));
      mm(W.indexer_compressor.kv, a.data(), D, n, ikv.data(), iw);
      mm(W.indexer_compressor.gate, a.data(), D, n, ig.data(), iw);
      mm(W.indexer_q_b, qlat.data(), qr, n, iq.data(), ih * id);
      mm(W.indexer_proj, a.data(), D, n, iwt.data(), ih);
      const float wscale = 1.0f / std::sqrt(static_cast<float>(id * ih));
      pool_->parallel_for(n * ih, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          float* qh = iq.data() + i * id;
          rope_comp_.apply(qh + id - rd, R.pos[sz(i / ih)]);
          if (row_faithful[sz(i / ih)]) indexer_qat(std::span<float>(qh, sz(id)));
          iwt[sz(i)] *= wscale;
        }
      }, 4);
    }

    mark(Phase::attn_proj, kind);
    Vec o(sz(n * H * hd));
    std::vector<const float*> keys;
    // The stateful middle: each sequence's tokens in order on its own session.
    for (const Seq& sq : R.seqs) {
    LayerState& L = sq.S->layers[l];
    CompressorParams cp{F.comp_ape.data(), F.comp_norm.data(), c_.rms_eps, nope, rd, &rope_comp_, RowKind::attention, sq.S->mode};
    CompressorParams ip{F.idx_ape.data(), F.idx_norm.data(), c_.rms_eps, 0, rd, &rope_comp_, RowKind::indexer, sq.S->mode};
    for (int64_t t = sq.at; t < sq.at + sq.n; ++t) {
      const int64_t p = R.pos[sz(t)];
      std::copy(kv.begin() + t * hd, kv.begin() + (t + 1) * hd, L.raw.begin() + (p % win) * hd);
      keys.clear();
      for (int64_t j = std::max<int64_t>(0, p - win + 1); j <= p; ++j) keys.push_back(L.raw.data() + (j % win) * hd);
      if (ratio) compressor_step(L.attn, cp, p, ckv.data() + t * cw, cg.data() + t * cw);
      if (ratio == 4) {
        compressor_step(L.indexer, ip, p, ikv.data() + t * iw, ig.data() + t * iw);
        for (int64_t row :
             indexer_select(L.indexer, iq.data() + t * ih * id, iwt.data() + t * ih, ih, c_.indexer_top_k, pool_.get()))
          keys.push_back(L.attn.rows.data() + row * hd);
      } else if (ratio) {
        for (int64_t row = 0; row < L.attn.n_rows(); ++row) keys.push_back(L.attn.rows.data() + row * hd);
      }
      float* ot = o.data() + t * H * hd;
      attend(q.data() + t * H * hd, H, hd, keys, F.sinks.data(), ot, pool_.get());
    }
    }
    pool_->parallel_for(n * H, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) rope.apply(o.data() + i * hd + nope, R.pos[sz(i / H)], /*inverse=*/true);
    }, 4);
    mark(Phase::attend, kind);

    // Grouped output projection: group g maps its heads' outputs through its own rows of W_oa.
    const int64_t G = c_.o_groups, ro = c_.o_lora_rank, hpg = c_.heads_per_group();
    Vec z(sz(n * G * ro));
    for (int64_t g = 0; g < G; ++g)
      mm(row_slice(W.out_a, g * ro, ro), o.data() + g * hpg * hd, H * hd, n, z.data() + g * ro, G * ro);
    Vec out(sz(n * D));
    mm(W.out_b, z.data(), G * ro, n, out.data(), D);
    mark(Phase::attn_out, kind);
    steer(l, Component::attn, R, out);
    hc_post(h, out, n, X);
    mark(Phase::hc_post, kind);
  }

  void ffn_block(uint32_t l, const Rows& R, Vec& X) const {
    const std::vector<int32_t>& tokens = R.tok;
    const auto n = static_cast<int64_t>(tokens.size());
    const auto& W = m_->weights.layers[l];
    const LayerFloats& F = lf_[l];
    const int64_t D = c_.n_embd, E = c_.n_expert, K = c_.n_expert_used, FF = c_.expert_ff;
    const float clamp = c_.swiglu_clamp[l];

    const LayerKind kind = layer_kind(c_.compress_ratios[l]);
    HcMix h = hc_pre(W.hc_ffn_fn, F.hc_ffn_scale, F.hc_ffn_base, n, X);
    mark(Phase::hc_pre, kind);
    Vec f(sz(n * D));
    per_token(n, [&](int64_t t) { rms_norm(h.y.data() + t * D, F.ffn_norm.data(), D, c_.rms_eps, f.data() + t * D); });
    Vec logit(sz(n * E));
    mm(W.gate_inp, f.data(), D, n, logit.data(), E);

    // Routing: per expert, the tokens it serves and their weights.
    std::vector<std::vector<std::pair<int64_t, float>>> routed(sz(E));
    std::vector<int64_t> sel(sz(K)), order(sz(E));
    Vec s(sz(E));
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t e = 0; e < E; ++e) s[sz(e)] = std::sqrt(softplus(logit[sz(t * E + e)]));
      if (c_.is_hash_layer(l)) {
        const auto* ids = reinterpret_cast<const int32_t*>(W.tid2eid.data) + int64_t{tokens[sz(t)]} * K;
        for (int64_t k = 0; k < K; ++k) sel[sz(k)] = ids[k];
      } else {
        for (int64_t e = 0; e < E; ++e) order[sz(e)] = e;
        auto biased = [&](int64_t e) { return s[sz(e)] + (F.exp_probs_b.empty() ? 0.0f : F.exp_probs_b[sz(e)]); };
        std::partial_sort(order.begin(), order.begin() + K, order.end(), [&](int64_t a, int64_t b) {
          const float ba = biased(a), bb = biased(b);
          return ba > bb || (ba == bb && a < b);
        });
        std::copy(order.begin(), order.begin() + K, sel.begin());
      }
      float sum = 0;
      for (int64_t k = 0; k < K; ++k) sum += s[sz(sel[sz(k)])];
      for (int64_t k = 0; k < K; ++k) {
        float w = s[sz(sel[sz(k)])];
        if (c_.expert_weights_norm) w /= sum + 1e-20f;
        routed[sz(sel[sz(k)])].emplace_back(t, w * c_.expert_weights_scale);
      }
    }

    mark(Phase::router, kind);
    Vec out(sz(n * D), 0.0f);
    Vec xe, g, u, y;
    auto swiglu = [&](const Weight& wg, const Weight& wu, const Weight& wd, int64_t m, int64_t ff, const float* weights) {
      g.resize(sz(m * ff));
      u.resize(sz(m * ff));
      y.resize(sz(m * D));
      mm(wg, xe.data(), D, m, g.data(), ff);
      mm(wu, xe.data(), D, m, u.data(), ff);
      pool_->parallel_for(m * ff, [&](int64_t b, int64_t e) {
        for (int64_t k = b; k < e; ++k) {
          g[sz(k)] = swiglu_act(g[sz(k)], u[sz(k)], clamp, weights ? weights[k / ff] : 1.0f);
        }
      }, 512);
      mm(wd, g.data(), ff, m, y.data(), D);
    };
    // One token: every expert, the shared one too, in two pool calls. A few
    // rows: the routed experts that way, the shared one as a matmul below
    // (read once for all rows rather than once per row).
    const bool jobs = n <= kExpertJobRows, shared_in_jobs = n == 1;
    if (jobs) decode_experts(l, routed, n, f, out, shared_in_jobs);
    Vec wts;
    for (int64_t e = 0; e < E && !jobs; ++e) {
      const auto& list = routed[sz(e)];
      if (list.empty()) continue;
      const auto m = static_cast<int64_t>(list.size());
      xe.resize(sz(m * D));
      wts.resize(sz(m));
      for (int64_t i = 0; i < m; ++i) {
        std::copy(f.begin() + list[sz(i)].first * D, f.begin() + (list[sz(i)].first + 1) * D, xe.begin() + i * D);
        wts[sz(i)] = list[sz(i)].second;
      }
      swiglu(W.gate_exps.slice(e), W.up_exps.slice(e), W.down_exps.slice(e), m, FF, wts.data());
      for (int64_t i = 0; i < m; ++i)
        for (int64_t d = 0; d < D; ++d) out[sz(list[sz(i)].first * D + d)] += y[sz(i * D + d)];
    }
    mark(Phase::experts, kind);  // one-token decode: the shared expert too
    if (c_.n_expert_shared > 0 && !(jobs && shared_in_jobs)) {
      xe = f;
      swiglu(W.gate_shexp, W.up_shexp, W.down_shexp, n, c_.shared_ff(), nullptr);
      for (size_t k = 0; k < out.size(); ++k) out[k] += y[k];
      mark(Phase::shared, kind);
    }
    steer(l, Component::ffn, R, out);
    hc_post(h, out, n, X);
    mark(Phase::hc_post, kind);
  }

  // The experts of a few rows (a decode step of one or several sequences),
  // the shared one too when `with_shared`:
  // every (expert, row) use's gate and up rows in one pass over the pool,
  // then all their down rows in another, where the many-token path makes four
  // pool calls per expert (each costs microseconds of wake-up and hand-off on
  // many threads; a Flash layer has seven experts per token, and the rows of
  // a decode batch mostly route to different experts, so reading an expert
  // once per row costs little). The same kernels on the same activations
  // (a matmul row equals a matvec bit for bit), summed per row in the same
  // order (routed experts in expert order, then the shared one): bit for bit
  // the many-token path (the prefill == decode and batch == alone tests hold).
  void decode_experts(uint32_t l, const std::vector<std::vector<std::pair<int64_t, float>>>& routed, int64_t n,
                      const Vec& f, Vec& out, bool with_shared) const {
    const auto& W = m_->weights.layers[l];
    const int64_t D = c_.n_embd, FF = c_.expert_ff, SF = c_.n_expert_shared > 0 ? c_.shared_ff() : 0;
    const float clamp = c_.swiglu_clamp[l];
    struct Use {
      int64_t e;      // expert, or -1 for the shared one
      int64_t t;      // row
      float weight;   // routing weight (1 for the shared expert)
      int64_t ff, at; // hidden width, offset in g/u
    };
    std::vector<Use> uses;
    int64_t hidden = 0;
    // A hash layer may pick one expert twice: each pick is its own use, as
    // each is its own row of the many-token path's matmul.
    for (size_t e = 0; e < routed.size(); ++e)
      for (const auto& [t, w] : routed[e]) {
        uses.push_back({static_cast<int64_t>(e), t, w, FF, hidden});
        hidden += FF;
      }
    if (SF > 0 && with_shared)
      for (int64_t t = 0; t < n; ++t) {
        uses.push_back({-1, t, 1.0f, SF, hidden});
        hidden += SF;
      }
    Vec g(sz(hidden)), u(sz(hidden)), y(uses.size() * sz(D));
    std::vector<quant::MatvecJob> jobs;
    for (const Use& s : uses) {
      const Weight& wg = s.e < 0 ? W.gate_shexp : W.gate_exps;
      const Weight& wu = s.e < 0 ? W.up_shexp : W.up_exps;
      const float* x = f.data() + s.t * D;
      jobs.push_back(matvec_job(s.e < 0 ? wg : wg.slice(s.e), x, g.data() + s.at));
      jobs.push_back(matvec_job(s.e < 0 ? wu : wu.slice(s.e), x, u.data() + s.at));
    }
    quant::matvec_batch(jobs, pool_.get());
    // The activation over all uses' hidden values, split over the pool: one
    // exp each, and a Flash layer's 7 x 2048 take ~70 us on one Zen 3 core,
    // where a pool call costs ~4 us on 16 threads.
    pool_->parallel_for(hidden, [&](int64_t b, int64_t e) {
      size_t i = 0;
      for (int64_t k = b; k < e; ++k) {
        while (k >= uses[i].at + uses[i].ff) ++i;
        g[sz(k)] = swiglu_act(g[sz(k)], u[sz(k)], clamp, uses[i].weight);
      }
    }, 512);
    jobs.clear();
    for (size_t i = 0; i < uses.size(); ++i) {
      const Use& s = uses[i];
      const Weight& wd = s.e < 0 ? W.down_shexp : W.down_exps;
      jobs.push_back(matvec_job(s.e < 0 ? wd : wd.slice(s.e), g.data() + s.at, y.data() + i * sz(D)));
    }
    quant::matvec_batch(jobs, pool_.get());
    for (size_t i = 0; i < uses.size(); ++i)
      for (int64_t d = 0; d < D; ++d) out[sz(uses[i].t * D + d)] += y[i * sz(D) + sz(d)];
  }

  void head(int64_t n, const Vec& X, float* logits) const {
    const auto& W = m_->weights;
    const int64_t D = c_.n_embd, hc = c_.hc_count, hcD = hc * D, V = c_.n_vocab;
    Vec u(X.size()), m(sz(n * hc)), pre(sz(hc)), y(sz(n * D));
    for (int64_t t = 0; t < n; ++t) rms_norm(X.data() + t * hcD, nullptr, hcD, c_.rms_eps, u.data() + t * hcD);
    mm(W.output_hc_fn, u.data(), hcD, n, m.data(), hc);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = 0; i < hc; ++i)
        pre[sz(i)] = sigmoid(m[sz(t * hc + i)] * out_hc_scale_[0] + out_hc_base_[sz(i)]) + c_.hc_eps;
      hc_collapse(X.data() + t * hcD, pre.data(), hc, D, y.data() + t * D);
      rms_norm(y.data() + t * D, out_norm_.data(), D, c_.rms_eps, y.data() + t * D);
    }
    mm(W.output, y.data(), D, n, logits, V);
  }

  // fn(t) for every token, spread over the pool (each token's work is done by
  // one thread, so results do not depend on the thread count).
  template <class F>
  void per_token(int64_t n, F&& fn) const {
    if (n == 1) return fn(int64_t{0});
    pool_->parallel_for(n, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) fn(t);
    });
  }

  void mm(const Weight& w, const float* x, int64_t xs, int64_t n, float* y, int64_t ys) const {
    matmul(w, x, xs, n, y, ys, pool_.get());
  }

  std::shared_ptr<const model::Model> m_;
  const ModelConfig& c_;
  std::unique_ptr<ThreadPool> pool_;
  using Clock = std::chrono::steady_clock;
  // The time since the last mark belongs to phase p (when profiling).
  void mark(Phase p, LayerKind k) const {
    if (!profile_) return;
    const auto now = Clock::now();
    table_.add(p, k, std::chrono::duration<double, std::milli>(now - last_).count());
    last_ = now;
  }
  Rope rope_plain_, rope_comp_;
  bool profile_ = false;  // BackendOptions::profile
  mutable PhaseTable table_;
  mutable Clock::time_point last_;
  Vec out_hc_base_, out_hc_scale_, out_norm_;
  std::vector<LayerFloats> lf_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(std::shared_ptr<const model::Model> model, const BackendOptions& opt) {
  return std::make_unique<CpuBackend>(std::move(model), opt);
}

}  // namespace ds4::backend::cpu

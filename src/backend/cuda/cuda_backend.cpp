// CUDA backend: the forward of model-spec §5-§8 on the GPU, one token at a
// time through all layers (prefill is a host loop over tokens in this first
// version). Within a token nothing comes back to the host: routing, indexer
// top-k and compressor pooling all run on the device and the expert matvecs
// read the chosen expert's index from device memory. The host only tracks
// what follows from the position alone (ring slots, when a window closes, how
// many compressed rows exist). Each step mirrors the CPU reference
// (cpu_backend.cpp), the oracle this backend is tested against.
//
// Memory and streams (docs/cuda-backend.md): a session's device memory (KV
// state and its scratch, logits for a bounded number of rows included) is one
// slab allocated when the session is created, laid out by SessionLayout, and
// session_memory() reports that layout's exact size. forward() allocates and
// frees nothing and queues all its work on the backend's own non-blocking
// stream; it waits for that stream only to hand logits back.
#include "backend/cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/rope.h"
#include "backend/cpu/session.h"
#include "backend/cuda/cuda_buffer.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_quant.h"
#include "backend/cuda/fwd_kernels.h"
#include "util/error.h"
#include "util/log.h"

namespace ds4::backend::cuda {
namespace {

using ds4::cuda::DeviceBuffer;
using model::ModelConfig;
using model::Weight;
namespace fwd = ds4::cuda::fwd;

size_t sz(int64_t n) { return static_cast<size_t>(n); }
constexpr double kMiB = 1024.0 * 1024.0;
// Device memory new_session() leaves free beyond the session itself.
constexpr size_t kSessionRoom = size_t{128} << 20;

// A weight in device memory. Types the GPU kernels lack were converted to F32.
struct DevWeight {
  GgmlType type = GgmlType::F32;
  int64_t rows = 0, cols = 0;
  size_t row_bytes = 0;
  size_t mat_bytes = 0;  // rows * row_bytes: the stride between experts of a 3-D tensor
  const uint8_t* p = nullptr;
  bool present() const { return p != nullptr; }
};

int64_t n_mats(const Weight& w) { return w.ne.size() > 2 ? w.ne[2] : 1; }

bool gpu_type(GgmlType t) { return ds4::cuda::quant_supported(t); }

size_t device_bytes(const Weight& w) {
  if (!w.present()) return 0;
  const size_t mats = sz(n_mats(w)) * sz(w.rows());
  return gpu_type(w.type) ? mats * w.row_bytes() : mats * sz(w.cols()) * sizeof(float);
}

class Uploader {
 public:
  std::vector<DeviceBuffer> bufs;
  size_t converted = 0;

  DevWeight weight(const Weight& w) {
    DevWeight d;
    if (!w.present()) return d;
    d.rows = w.rows();
    d.cols = w.cols();
    const size_t mats = sz(n_mats(w));
    if (gpu_type(w.type)) {
      d.type = w.type;
      d.row_bytes = w.row_bytes();
      d.mat_bytes = d.row_bytes * sz(d.rows);
      d.p = put(w.data, d.mat_bytes * mats);
    } else {
      // No GPU kernel for this type: F32 keeps every value the CPU dequantizes.
      log::info("cuda: {} ({}): no GPU kernel for this type, converted to F32 at load", w.name, ggml_type_name(w.type));
      const std::vector<float> f = w.to_f32();
      d.type = GgmlType::F32;
      d.row_bytes = sz(d.cols) * sizeof(float);
      d.mat_bytes = d.row_bytes * sz(d.rows);
      d.p = put(f.data(), f.size() * sizeof(float));
      ++converted;
    }
    return d;
  }
  const float* floats(const Weight& w) {
    if (!w.present()) return nullptr;
    const std::vector<float> f = w.to_f32();
    return reinterpret_cast<const float*>(put(f.data(), f.size() * sizeof(float)));
  }
  const float* floats(const std::vector<float>& f) {
    return reinterpret_cast<const float*>(put(f.data(), f.size() * sizeof(float)));
  }
  const int32_t* ints(const Weight& w) {
    if (!w.present()) return nullptr;
    int64_t n = 1;
    for (int64_t e : w.ne) n *= e;
    return reinterpret_cast<const int32_t*>(put(w.data, sz(n) * sizeof(int32_t)));
  }

 private:
  const uint8_t* put(const void* src, size_t bytes) {
    bufs.emplace_back(bytes);
    bufs.back().upload(src, bytes);
    return bufs.back().as<const uint8_t>();
  }
};

struct DevCompressor {
  DevWeight kv, gate;
  const float* ape = nullptr;
  const float* norm = nullptr;
};

struct DevLayer {
  DevWeight hc_attn_fn, q_a, q_b, kv, out_a, out_b, indexer_q_b, indexer_proj;
  DevWeight hc_ffn_fn, gate_inp, gate_exps, up_exps, down_exps, gate_shexp, up_shexp, down_shexp;
  DevCompressor comp, icomp;
  const float *hc_attn_scale = nullptr, *hc_attn_base = nullptr, *attn_norm = nullptr, *q_a_norm = nullptr,
              *kv_norm = nullptr, *sinks = nullptr, *hc_ffn_scale = nullptr, *hc_ffn_base = nullptr,
              *ffn_norm = nullptr, *exp_probs_b = nullptr;
  const int32_t* tid2eid = nullptr;
};

// ---- session ---------------------------------------------------------------------

using ds4::cuda::DeviceSpan;

// Hands out consecutive 256-byte aligned parts of a slab. With a null base it
// only measures: the same layout code gives session_memory() its figures and
// the session its pointers, so the two cannot disagree.
class Carver {
 public:
  explicit Carver(uint8_t* base) : base_(base) {}
  DeviceSpan take(size_t bytes) {
    off_ = (off_ + 255) / 256 * 256;
    if (bytes > (size_t{1} << 60) - off_) fail("cuda session: device memory layout overflows ({} + {} bytes)", off_, bytes);
    const DeviceSpan s(base_ ? base_ + off_ : nullptr, bytes);
    off_ += bytes;
    return s;
  }
  DeviceSpan floats(int64_t n) { return take(sz(std::max<int64_t>(n, 4)) * sizeof(float)); }
  size_t used() const { return (off_ + 255) / 256 * 256; }

 private:
  uint8_t* base_;
  size_t off_ = 0;
};

struct DevCompState {
  int64_t ratio = 0, dim = 0;
  bool overlap = false;
  DeviceSpan kv, score, rows;
  int64_t n_rows = 0, cap = 0;  // rows emitted / reserved (every row the context can emit)
  int64_t width() const { return (overlap ? 2 : 1) * dim; }
  int64_t frontier_floats() const { return (overlap ? 2 : 1) * ratio * width(); }
};

struct DevLayerState {
  DeviceSpan raw;
  DevCompState attn, indexer;
};

std::vector<float> fbuf_host(const DeviceSpan& b, int64_t n) {
  std::vector<float> v(sz(n));
  if (n) b.download(v.data(), sz(n) * sizeof(float));
  return v;
}

void carve_comp(DevCompState& s, int64_t ratio, int64_t dim, bool overlap, int64_t ctx, Carver& mem) {
  s.ratio = ratio;
  s.dim = dim;
  s.overlap = overlap;
  s.kv = mem.floats(s.frontier_floats());
  s.score = mem.floats(s.frontier_floats());
  // Every row the context can emit (windows closing at positions < ctx).
  s.cap = ctx / ratio;
  s.rows = mem.floats(s.cap * dim);
}

// As the CPU: kv 0 and -inf scores, so a window -1 candidate has weight 0.
void reset_comp(const DevCompState& s) {
  const int64_t n = s.frontier_floats();
  const std::vector<float> zero(sz(n), 0.0f), ninf(sz(n), -INFINITY);
  s.kv.upload(zero.data(), zero.size() * sizeof(float));
  s.score.upload(ninf.data(), ninf.size() * sizeof(float));
}

// An activation vector as the weights it meets need it: as is for float
// weights, quantized to Q8_0 or Q8_K (as the CPU kernels quantize it) for the
// integer ones. Each form is made at most once per bind(), on first use, so
// several weights reading the same vector share one quantization.
struct QAct {
  DeviceSpan q80, q8k;
  const float* x = nullptr;
  int64_t cols = 0;
  bool has80 = false, has8k = false;
  cudaStream_t stream = nullptr;

  void carve(int64_t max_cols, Carver& mem) {
    q80 = mem.take(ds4::cuda::activation_bytes(GgmlType::Q8_0, max_cols));
    q8k = mem.take(ds4::cuda::activation_bytes(GgmlType::Q8_K, max_cols));
  }
  QAct& bind(const float* v, int64_t n) {
    x = v;
    cols = n;
    has80 = has8k = false;
    return *this;
  }
  // The activation in the form weight type t takes (F32: x itself).
  const void* as(GgmlType act) {
    if (act == GgmlType::Q8_0) {
      if (!has80) ds4::cuda::quantize_activation(act, x, cols, q80.get(), stream);
      has80 = true;
      return q80.get();
    }
    if (act == GgmlType::Q8_K) {
      if (!has8k) ds4::cuda::quantize_activation(act, x, cols, q8k.get(), stream);
      has8k = true;
      return q8k.get();
    }
    return x;
  }
};

// Scratch of one token's forward; a session is used by one thread at a time.
struct Scratch {
  QAct in_a, in_b;  // two live inputs at a time (e.g. the normed hidden state and q's latent)
  DeviceSpan gq;    // the routed experts' down-projection inputs, quantized (one row per expert)
  DeviceSpan X, u, mix, pre, post, comb, y, a, qlat, q, kv, ckv, cg, ikv, ig, iq, iwt, o, z, out, f, logit, sel, wts, g,
      up, ye, acc, v, topk, e;
  DeviceSpan idx_score, idx_flags;  // indexer top-k scratch: one value per compressed row
  DeviceSpan logits;                // logit_rows rows of vocab floats
  int64_t logit_rows = 0;
};

// Rows of logits a session keeps on the device: a forward that wants more
// hands them back in chunks of this many (about 16 MiB, 1 to 64 rows).
int64_t logit_rows_for(const ModelConfig& c) {
  const int64_t row = int64_t{c.n_vocab} * int64_t{sizeof(float)};
  return std::clamp<int64_t>((int64_t{16} << 20) / std::max<int64_t>(row, 1), 1, 64);
}

// Where every part of a session's device memory lives: KV state first, then
// scratch, in one slab.
struct SessionLayout {
  std::vector<DevLayerState> layers;
  Scratch sc;
  size_t state_bytes = 0, scratch_bytes = 0;

  SessionLayout(const ModelConfig& c, int64_t ctx, uint8_t* base) {
    if (ctx <= 0) fail("session: context size must be > 0 (got {})", ctx);
    Carver st(base);
    layers.resize(c.n_layer);
    int64_t max_idx_rows = 1;
    for (uint32_t l = 0; l < c.n_layer; ++l) {
      DevLayerState& L = layers[l];
      L.raw = st.floats(int64_t{c.sliding_window} * c.head_dim);
      const uint32_t r = c.compress_ratios[l];
      if (r != 0) carve_comp(L.attn, r, c.head_dim, r == 4, ctx, st);
      if (r == 4) {
        carve_comp(L.indexer, r, c.indexer_head_dim, true, ctx, st);
        max_idx_rows = std::max(max_idx_rows, L.indexer.cap);
      }
    }
    state_bytes = st.used();
    Carver m(base ? base + state_bytes : nullptr);
    const int64_t D = c.n_embd, hc = c.hc_count, hd = c.head_dim, H = c.n_head;
    const int64_t ffmax = std::max<int64_t>(c.expert_ff, c.shared_ff());
    Scratch& s = sc;
    s.X = m.floats(hc * D);
    s.u = m.floats(hc * D);
    s.mix = m.floats(c.hc_mix_rows());
    s.pre = m.floats(hc);
    s.post = m.floats(hc);
    s.comb = m.floats(hc * hc);
    s.y = m.floats(D);
    s.a = m.floats(D);
    s.qlat = m.floats(c.q_lora_rank);
    s.q = m.floats(H * hd);
    s.kv = m.floats(hd);
    s.ckv = m.floats(2 * hd);
    s.cg = m.floats(2 * hd);
    s.ikv = m.floats(2 * int64_t{c.indexer_head_dim});
    s.ig = m.floats(2 * int64_t{c.indexer_head_dim});
    s.iq = m.floats(int64_t{c.indexer_heads} * c.indexer_head_dim);
    s.iwt = m.floats(c.indexer_heads);
    s.o = m.floats(H * hd);
    s.z = m.floats(int64_t{c.o_groups} * c.o_lora_rank);
    s.out = m.floats(D);
    s.f = m.floats(D);
    s.logit = m.floats(c.n_expert);
    s.sel = m.floats(c.n_expert_used);
    s.wts = m.floats(c.n_expert_used);
    const int64_t K = c.n_expert_used;
    s.g = m.floats(std::max<int64_t>(K * c.expert_ff, c.shared_ff()));
    s.up = m.floats(std::max<int64_t>(K * c.expert_ff, c.shared_ff()));
    s.ye = m.floats(K * D);
    s.gq = m.take(sz(K) * std::max(ds4::cuda::activation_bytes(GgmlType::Q8_0, c.expert_ff),
                                   ds4::cuda::activation_bytes(GgmlType::Q8_K, c.expert_ff)));
    s.acc = m.floats(D);
    s.v = m.floats(std::max<int64_t>(hd, c.indexer_head_dim));
    s.topk = m.floats(std::max<uint32_t>(c.indexer_top_k, 1));
    s.e = m.floats(D);
    s.idx_score = m.floats(max_idx_rows);
    s.idx_flags = m.floats(max_idx_rows);
    s.logit_rows = logit_rows_for(c);
    s.logits = m.floats(s.logit_rows * c.n_vocab);
    const int64_t max_cols = std::max<int64_t>(
        {hc * D, H * hd, int64_t{c.o_groups} * c.o_lora_rank, ffmax, c.q_lora_rank, D, c.heads_per_group() * hd});
    s.in_a.carve(max_cols, m);
    s.in_b.carve(max_cols, m);
    scratch_bytes = m.used();
  }
};

class CudaSession final : public SessionState {
 public:
  // `mem`: the slab of SessionLayout(c, context, nullptr)'s size.
  CudaSession(const ModelConfig& c, NumericsMode m, int64_t context, DeviceBuffer mem, cudaStream_t stream)
      : c_(c), ctx(context), mode(m), slab(std::move(mem)), lay(c, context, slab.as<uint8_t>()) {
    lay.sc.in_a.stream = lay.sc.in_b.stream = stream;
    for (DevLayerState& L : lay.layers) {
      L.raw.fill_zero();
      for (const DevCompState* d : {&L.attn, &L.indexer})
        if (d->dim) reset_comp(*d);
    }
    // The copies above are synchronous for the host, but a kernel on the
    // backend's non-blocking stream must see them done.
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
  }
  int64_t position() const override { return pos; }
  int64_t capacity() const override { return ctx; }
  NumericsMode numerics() const override { return mode; }

  // Snapshots go through the CPU session's canonical layout, so a state saved
  // on one backend loads on the other.
  std::vector<uint8_t> save() const override {
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    cpu::CpuSession h(c_, mode, ctx);
    h.pos = pos;
    for (size_t l = 0; l < lay.layers.size(); ++l) {
      const DevLayerState& L = lay.layers[l];
      cpu::LayerState& H = h.layers[l];
      H.raw = fbuf_host(L.raw, static_cast<int64_t>(H.raw.size()));
      for (auto [d, c] : {std::pair{&L.attn, &H.attn}, std::pair{&L.indexer, &H.indexer}}) {
        if (!d->dim) continue;
        c->kv = fbuf_host(d->kv, d->frontier_floats());
        c->score = fbuf_host(d->score, d->frontier_floats());
        c->rows = fbuf_host(d->rows, d->n_rows * d->dim);
      }
    }
    return h.save();
  }
  void load(std::span<const uint8_t> bytes) override {
    cpu::CpuSession h(c_, mode, ctx);
    h.load(bytes);  // validates everything before this session changes
    for (size_t l = 0; l < lay.layers.size(); ++l)
      for (auto [d, c] : {std::pair{&lay.layers[l].attn, &h.layers[l].attn}, std::pair{&lay.layers[l].indexer, &h.layers[l].indexer}})
        if (d->dim && c->n_rows() > d->cap)
          fail("cuda session: snapshot holds {} compressed rows in layer {}, the session has room for {}", c->n_rows(), l,
               d->cap);
    DS4_CUDA_CHECK(cudaDeviceSynchronize());  // no queued work may still use the state
    for (size_t l = 0; l < lay.layers.size(); ++l) {
      DevLayerState& L = lay.layers[l];
      const cpu::LayerState& H = h.layers[l];
      L.raw.upload(H.raw.data(), H.raw.size() * sizeof(float));
      for (auto [d, c] : {std::pair{&L.attn, &H.attn}, std::pair{&L.indexer, &H.indexer}}) {
        if (!d->dim) continue;
        d->kv.upload(c->kv.data(), c->kv.size() * sizeof(float));
        d->score.upload(c->score.data(), c->score.size() * sizeof(float));
        if (!c->rows.empty()) d->rows.upload(c->rows.data(), c->rows.size() * sizeof(float));
        d->n_rows = c->n_rows();
      }
    }
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    pos = h.pos;
  }

  const ModelConfig& c_;
  int64_t pos = 0;
  int64_t ctx = 0;
  NumericsMode mode;
  DeviceBuffer slab;
  SessionLayout lay;
};

// ---- backend -----------------------------------------------------------------------

class CudaBackend final : public Backend {
 public:
  CudaBackend(std::shared_ptr<const model::Model> m) : m_(std::move(m)), c_(m_->config) {
    if (ds4::cuda::device_count() == 0) fail("cuda backend: no CUDA device (built with CUDA, but no GPU or driver here)");
    const auto& W = m_->weights;
    check_fits(W);
    Uploader& U = up_;
    token_embd_ = U.weight(W.token_embd);
    output_hc_fn_ = U.weight(W.output_hc_fn);
    output_ = U.weight(W.output);
    output_hc_base_ = U.floats(W.output_hc_base);
    output_hc_scale_ = U.floats(W.output_hc_scale);
    output_norm_ = U.floats(W.output_norm);
    for (const auto& L : W.layers) {
      DevLayer d;
      d.hc_attn_fn = U.weight(L.hc_attn_fn);
      d.q_a = U.weight(L.q_a);
      d.q_b = U.weight(L.q_b);
      d.kv = U.weight(L.kv);
      d.out_a = U.weight(L.out_a);
      d.out_b = U.weight(L.out_b);
      d.indexer_q_b = U.weight(L.indexer_q_b);
      d.indexer_proj = U.weight(L.indexer_proj);
      d.hc_ffn_fn = U.weight(L.hc_ffn_fn);
      d.gate_inp = U.weight(L.gate_inp);
      d.gate_exps = U.weight(L.gate_exps);
      d.up_exps = U.weight(L.up_exps);
      d.down_exps = U.weight(L.down_exps);
      d.gate_shexp = U.weight(L.gate_shexp);
      d.up_shexp = U.weight(L.up_shexp);
      d.down_shexp = U.weight(L.down_shexp);
      for (auto [dc, wc] : {std::pair{&d.comp, &L.compressor}, std::pair{&d.icomp, &L.indexer_compressor}}) {
        dc->kv = U.weight(wc->kv);
        dc->gate = U.weight(wc->gate);
        dc->ape = U.floats(wc->ape);
        dc->norm = U.floats(wc->norm);
      }
      d.hc_attn_scale = U.floats(L.hc_attn_scale);
      d.hc_attn_base = U.floats(L.hc_attn_base);
      d.attn_norm = U.floats(L.attn_norm);
      d.q_a_norm = U.floats(L.q_a_norm);
      d.kv_norm = U.floats(L.kv_norm);
      d.sinks = U.floats(L.sinks);
      d.hc_ffn_scale = U.floats(L.hc_ffn_scale);
      d.hc_ffn_base = U.floats(L.hc_ffn_base);
      d.ffn_norm = U.floats(L.ffn_norm);
      d.exp_probs_b = U.floats(L.exp_probs_b);
      d.tid2eid = U.ints(L.tid2eid);
      layers_.push_back(d);
    }
    rope_plain_ = U.floats(cpu::Rope(c_, false).inv_freq());
    rope_comp_ = U.floats(cpu::Rope(c_, true).inv_freq());
    if (up_.converted) log::info("cuda: {} tensors converted to F32 at load", up_.converted);
    // Lookup tables now, so that forward() never makes a synchronous copy.
    ds4::cuda::prepare_tables();
    DS4_CUDA_CHECK(cudaStreamCreateWithFlags(&st_, cudaStreamNonBlocking));
    DS4_CUDA_CHECK(cudaDeviceSynchronize());  // uploads done before the stream's first kernel
  }
  ~CudaBackend() override {
    // Sessions free their own slabs; a destructor cannot throw.
    if (st_) (void)cudaStreamDestroy(st_);
  }
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string_view name() const override { return "cuda"; }
  const model::Model& model() const override { return *m_; }
  SessionMemory session_memory(const SessionOptions& opt) const override {
    const SessionLayout lay(c_, opt.ctx_size, nullptr);
    return {lay.state_bytes, lay.scratch_bytes};
  }
  std::unique_ptr<SessionState> new_session(const SessionOptions& opt) const override {
    const SessionMemory need = session_memory(opt);
    size_t free_b = 0, total_b = 0;
    DS4_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    // Working room for the CUDA context and the kernels' own needs, so a
    // session that fits never leaves the device without it.
    const size_t room = kSessionRoom;
    if (need.total() > free_b || free_b - need.total() < room)
      fail("cuda backend: a session of {} tokens needs {:.1f} MiB of device memory (KV state {:.1f} MiB + scratch "
           "{:.1f} MiB, and {:.0f} MiB working room kept free), only {:.1f} MiB of {:.1f} MiB are free",
           opt.ctx_size, static_cast<double>(need.total()) / kMiB, static_cast<double>(need.state_bytes) / kMiB,
           static_cast<double>(need.scratch_bytes) / kMiB, static_cast<double>(room) / kMiB,
           static_cast<double>(free_b) / kMiB, static_cast<double>(total_b) / kMiB);
    return std::make_unique<CudaSession>(c_, opt.numerics, opt.ctx_size, DeviceBuffer(need.total()), st_);
  }

  // Sequences run one after another, token by token (the batched kernels are
  // not written yet); each sequence's logits land where its step asks, in
  // chunks of the session's logit rows. Everything is queued on st_; the host
  // waits for it only to hand logits back (and once at the end, so that a
  // fault of this call surfaces here).
  void forward(std::span<const SeqStep> batch) const override {
    validate_batch(c_, batch);
    const int64_t V = c_.n_vocab;
    for (const SeqStep& st : batch) {
      auto* S = dynamic_cast<CudaSession*>(st.state);
      if (!S) fail("cuda backend: session was not created by the cuda backend");
    }
    for (const SeqStep& st : batch) {
      auto* S = static_cast<CudaSession*>(st.state);
      const auto n = static_cast<int64_t>(st.tokens.size());
      if (n == 0) continue;
      Scratch& s = S->lay.sc;
      int64_t pending = 0, first = 0;  // logit rows in s.logits, and the output row of the first
      auto flush = [&] {
        if (!pending) return;
        DS4_CUDA_CHECK(cudaMemcpyAsync(st.logits.data() + first * V, s.logits.get(), sz(pending * V) * sizeof(float),
                                       cudaMemcpyDeviceToHost, st_));
        // The host buffer is pageable: the copy is done when the call returns,
        // and the device rows are free for the next chunk.
        pending = 0;
      };
      for (int64_t t = 0; t < n; ++t) {
        float* lg = nullptr;
        const bool want = st.want == Logits::all || (st.want == Logits::last && t == n - 1);
        if (want) {
          if (pending == s.logit_rows) flush();
          if (!pending) first = st.want == Logits::all ? t : 0;
          lg = s.logits.as<float>() + pending * V;
          ++pending;
        }
        token(*S, st.tokens[sz(t)], S->pos, lg);
        ++S->pos;
      }
      flush();
    }
    DS4_CUDA_CHECK(cudaStreamSynchronize(st_));
  }

 private:
  void check_fits(const model::ModelWeights& W) const {
    size_t need = 0;
    auto add = [&](const Weight& w) { need += device_bytes(w); };
    for (const Weight* w : {&W.token_embd, &W.output_hc_fn, &W.output_hc_base, &W.output_hc_scale, &W.output_norm,
                            &W.output})
      add(*w);
    for (const auto& L : W.layers)
      for (const Weight* w :
           {&L.hc_attn_fn, &L.hc_attn_scale, &L.hc_attn_base, &L.attn_norm, &L.q_a, &L.q_a_norm, &L.q_b, &L.kv,
            &L.kv_norm, &L.sinks, &L.out_a, &L.out_b, &L.compressor.ape, &L.compressor.kv, &L.compressor.gate,
            &L.compressor.norm, &L.indexer_q_b, &L.indexer_proj, &L.indexer_compressor.ape, &L.indexer_compressor.kv,
            &L.indexer_compressor.gate, &L.indexer_compressor.norm, &L.hc_ffn_fn, &L.hc_ffn_scale, &L.hc_ffn_base,
            &L.ffn_norm, &L.gate_inp, &L.exp_probs_b, &L.tid2eid, &L.gate_exps, &L.up_exps, &L.down_exps,
            &L.gate_shexp, &L.up_shexp, &L.down_shexp})
        add(*w);
    size_t free_b = 0, total_b = 0;
    DS4_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    // Headroom for sessions, scratch and the CUDA context's own allocations.
    const size_t headroom = 256ull << 20;
    if (need + headroom > free_b)
      fail("cuda backend: the model needs {:.1f} MiB of device memory for weights (+{:.0f} MiB working room), only "
           "{:.1f} MiB of {:.1f} MiB are free",
           static_cast<double>(need) / kMiB, static_cast<double>(headroom) / kMiB, static_cast<double>(free_b) / kMiB,
           static_cast<double>(total_b) / kMiB);
    log::info("cuda: uploading {:.1f} MiB of weights ({:.1f} MiB free)", static_cast<double>(need) / kMiB,
              static_cast<double>(free_b) / kMiB);
  }

  // y = rows [row0, row0 + rows) of w times the input. Integer weight types
  // take the input quantized as the CPU's kernels take it (QAct).
  void mv(const DevWeight& w, QAct& in, float* y, int64_t row0 = 0, int64_t rows = -1) const {
    if (in.cols != w.cols) fail("cuda backend: input of {} values for a weight of {} columns", in.cols, w.cols);
    const uint8_t* p = w.p + sz(row0) * w.row_bytes;
    const int64_t n = rows < 0 ? w.rows : rows;
    const GgmlType act = ds4::cuda::activation_type(w.type);
    if (act == GgmlType::F32) ds4::cuda::matvec(w.type, p, n, w.cols, in.x, y, st_);
    else ds4::cuda::matvec_q8(w.type, p, n, w.cols, in.as(act), y, st_);
  }
  // Matrix *sel of a stack of experts times the input.
  void mv_expert(const DevWeight& w, const int32_t* sel, QAct& in, float* y) const {
    const GgmlType act = ds4::cuda::activation_type(w.type);
    const auto stride = static_cast<int64_t>(w.mat_bytes);
    if (act == GgmlType::F32) ds4::cuda::matvec_indexed(w.type, w.p, stride, sel, w.rows, w.cols, in.x, y, st_);
    else ds4::cuda::matvec_q8_indexed(w.type, w.p, stride, sel, w.rows, w.cols, in.as(act), y, st_);
  }

  // HC pre-mix: rms_norm of the HC stream, mixer, Sinkhorn split, collapse into sc.y.
  void hc_pre(Scratch& s, const DevWeight& fn, const float* scale, const float* base) const {
    const int64_t D = c_.n_embd, hc = c_.hc_count;
    fwd::rms_norm_rows(s.X.as<float>(), nullptr, 1, hc * D, c_.rms_eps, s.u.as<float>(), st_);
    mv(fn, s.in_b.bind(s.u.as<float>(), hc * D), s.mix.as<float>());
    fwd::hc_split(s.mix.as<float>(), scale, base, static_cast<int>(hc), c_.hc_eps, static_cast<int>(c_.sinkhorn_iters),
                  s.pre.as<float>(), s.post.as<float>(), s.comb.as<float>(), st_);
    fwd::hc_collapse(s.X.as<float>(), s.pre.as<float>(), static_cast<int>(hc), D, s.y.as<float>(), st_);
  }

  void hc_post(Scratch& s) const {
    fwd::hc_expand(s.X.as<float>(), s.out.as<float>(), s.post.as<float>(), s.comb.as<float>(),
                   static_cast<int>(c_.hc_count), c_.n_embd, st_);
  }

  // cpu::compressor_step on the device.
  void comp_step(DevCompState& st, const DevCompressor& w, bool indexer, bool faithful, int64_t p,
                 const float* kv, const float* gate, Scratch& s) const {
    const int64_t r = st.ratio, d = st.dim, cw = st.width(), rd = c_.rope_dim;
    const int64_t slot = p % r, row = (st.overlap ? r : 0) + slot;
    fwd::comp_store(st.kv.as<float>() + row * cw, st.score.as<float>() + row * cw, kv, gate, w.ape + slot * cw, cw,
                    st_);
    if ((p + 1) % r != 0) return;
    const int64_t window = (p + 1) / r - 1;
    // Rows were reserved for the whole context and validate_batch keeps
    // positions inside it, so this holds; checked all the same.
    if (st.n_rows >= st.cap) fail("cuda backend: compressed row {} past the {} reserved", st.n_rows, st.cap);
    fwd::comp_pool(st.kv.as<float>(), st.score.as<float>(), r, d, st.overlap, s.v.as<float>(), st_);
    float* dst = st.rows.as<float>() + st.n_rows * d;
    fwd::rms_norm_rows(s.v.as<float>(), w.norm, 1, d, c_.rms_eps, dst, st_);
    fwd::rope(dst + d - rd, 0, 1, rope_comp_, static_cast<int>(rd / 2), window * r, false, st_);
    if (faithful) {
      if (indexer) fwd::indexer_qat(dst, 1, d, st_);
      else fwd::kv_round(dst, c_.nope_dim(), d, st_);
    }
    ++st.n_rows;
    if (st.overlap) {
      // The window just closed becomes the "previous" window of the next one.
      const size_t half = sz(r * cw) * sizeof(float);
      DS4_CUDA_CHECK(cudaMemcpyAsync(st.kv.get(), st.kv.as<float>() + r * cw, half, cudaMemcpyDeviceToDevice, st_));
      DS4_CUDA_CHECK(cudaMemcpyAsync(st.score.get(), st.score.as<float>() + r * cw, half, cudaMemcpyDeviceToDevice, st_));
    }
  }

  void attention(uint32_t l, CudaSession& S, int64_t p) const {
    const DevLayer& W = layers_[l];
    DevLayerState& L = S.lay.layers[l];
    Scratch& s = S.lay.sc;
    const bool faithful = S.mode == NumericsMode::faithful;
    const int64_t D = c_.n_embd, H = c_.n_head, hd = c_.head_dim, qr = c_.q_lora_rank, rd = c_.rope_dim,
                  nope = c_.nope_dim(), win = c_.sliding_window;
    const int pairs = static_cast<int>(rd / 2);
    const uint32_t ratio = c_.compress_ratios[l];
    const float* rope = ratio ? rope_comp_ : rope_plain_;
    const float eps = c_.rms_eps;

    hc_pre(s, W.hc_attn_fn, W.hc_attn_scale, W.hc_attn_base);
    float* a = s.a.as<float>();
    fwd::rms_norm_rows(s.y.as<float>(), W.attn_norm, 1, D, eps, a, st_);
    QAct& in_a = s.in_a.bind(a, D);
    float* qlat = s.qlat.as<float>();
    mv(W.q_a, in_a, qlat);
    fwd::rms_norm_rows(qlat, W.q_a_norm, 1, qr, eps, qlat, st_);
    QAct& in_q = s.in_b.bind(qlat, qr);
    float* q = s.q.as<float>();
    mv(W.q_b, in_q, q);
    fwd::rms_norm_rows(q, nullptr, H, hd, eps, q, st_);
    fwd::rope(q + nope, hd, static_cast<int>(H), rope, pairs, p, false, st_);
    // The new raw KV row goes straight into its ring slot.
    float* k = L.raw.as<float>() + (p % win) * hd;
    mv(W.kv, in_a, k);
    fwd::rms_norm_rows(k, W.kv_norm, 1, hd, eps, k, st_);
    fwd::rope(k + nope, 0, 1, rope, pairs, p, false, st_);
    if (faithful) fwd::kv_round(k, nope, hd, st_);

    const int32_t* sel = nullptr;
    int64_t n_comp = 0;
    if (ratio) {
      mv(W.comp.kv, in_a, s.ckv.as<float>());
      mv(W.comp.gate, in_a, s.cg.as<float>());
      comp_step(L.attn, W.comp, false, faithful, p, s.ckv.as<float>(), s.cg.as<float>(), s);
      n_comp = L.attn.n_rows;
    }
    if (ratio == 4) {
      const int64_t ih = c_.indexer_heads, id = c_.indexer_head_dim;
      mv(W.icomp.kv, in_a, s.ikv.as<float>());
      mv(W.icomp.gate, in_a, s.ig.as<float>());
      comp_step(L.indexer, W.icomp, true, faithful, p, s.ikv.as<float>(), s.ig.as<float>(), s);
      const int64_t nrows = L.indexer.n_rows, top_k = c_.indexer_top_k;
      if (nrows > top_k) {
        float* iq = s.iq.as<float>();
        mv(W.indexer_q_b, in_q, iq);
        fwd::rope(iq + id - rd, id, static_cast<int>(ih), rope_comp_, pairs, p, false, st_);
        if (faithful) fwd::indexer_qat(iq, ih, id, st_);
        float* iwt = s.iwt.as<float>();
        mv(W.indexer_proj, in_a, iwt);
        fwd::scale(iwt, ih, 1.0f / std::sqrt(static_cast<float>(id * ih)), st_);
        fwd::indexer_scores(L.indexer.rows.as<float>(), nrows, id, iq, iwt, static_cast<int>(ih),
                            s.idx_score.as<float>(), st_);
        fwd::topk_select(s.idx_score.as<float>(), nrows, top_k, s.idx_flags.as<int>(), s.topk.as<int32_t>(), st_);
        sel = s.topk.as<int32_t>();
        n_comp = top_k;
      } else {
        n_comp = nrows;  // all rows, in order, as indexer_select returns them
      }
    }
    const int64_t n_raw = std::min<int64_t>(p + 1, win);
    float* o = s.o.as<float>();
    fwd::attend(q, static_cast<int>(H), hd, L.raw.as<float>(), win, p, n_raw, ratio ? L.attn.rows.as<float>() : nullptr,
                n_comp, sel, W.sinks, o, st_);
    fwd::rope(o + nope, hd, static_cast<int>(H), rope, pairs, p, true, st_);

    // Grouped output projection: group g maps its heads through its rows of W_oa.
    const int64_t G = c_.o_groups, ro = c_.o_lora_rank, hpg = c_.heads_per_group();
    for (int64_t g = 0; g < G; ++g)
      mv(W.out_a, s.in_b.bind(o + g * hpg * hd, hpg * hd), s.z.as<float>() + g * ro, g * ro, ro);
    mv(W.out_b, s.in_b.bind(s.z.as<float>(), G * ro), s.out.as<float>());
    hc_post(s);
  }

  void ffn(uint32_t l, CudaSession& S, int32_t tok) const {
    const DevLayer& W = layers_[l];
    Scratch& s = S.lay.sc;
    const int64_t D = c_.n_embd, K = c_.n_expert_used, FF = c_.expert_ff;
    const float clamp = c_.swiglu_clamp[l];
    hc_pre(s, W.hc_ffn_fn, W.hc_ffn_scale, W.hc_ffn_base);
    float* f = s.f.as<float>();
    fwd::rms_norm_rows(s.y.as<float>(), W.ffn_norm, 1, D, c_.rms_eps, f, st_);
    QAct& in_f = s.in_a.bind(f, D);
    mv(W.gate_inp, in_f, s.logit.as<float>());
    const int32_t* hash = c_.is_hash_layer(l) ? W.tid2eid + int64_t{tok} * K : nullptr;
    int32_t* sel = s.sel.as<int32_t>();
    float* wts = s.wts.as<float>();
    fwd::route(s.logit.as<float>(), static_cast<int>(c_.n_expert), static_cast<int>(K), hash, W.exp_probs_b,
               c_.expert_weights_norm, c_.expert_weights_scale, sel, wts, st_);
    float* out = s.out.as<float>();
    DS4_CUDA_CHECK(cudaMemsetAsync(out, 0, sz(D) * sizeof(float), st_));
    float *g = s.g.as<float>(), *u = s.up.as<float>(), *ye = s.ye.as<float>();
    using ds4::cuda::activation_type;
    const GgmlType ga = activation_type(W.gate_exps.type), ua = activation_type(W.up_exps.type),
                   da = activation_type(W.down_exps.type);
    if (ga != GgmlType::F32 && ua != GgmlType::F32 && da != GgmlType::F32) {
      // All K routed experts in one launch per projection: the expert ids
      // stay on the device (sel), and the matrices are big enough together
      // to keep the memory system busy where one expert's is not.
      using ds4::cuda::matvec_q8_batched;
      const auto kk = static_cast<int>(K);
      matvec_q8_batched(W.gate_exps.type, W.gate_exps.p, static_cast<int64_t>(W.gate_exps.mat_bytes), sel, kk, FF, D,
                        in_f.as(ga), 0, g, FF, st_);
      matvec_q8_batched(W.up_exps.type, W.up_exps.p, static_cast<int64_t>(W.up_exps.mat_bytes), sel, kk, FF, D,
                        in_f.as(ua), 0, u, FF, st_);
      fwd::swiglu_rows(g, u, FF, K, clamp, wts, st_);
      ds4::cuda::quantize_activation_rows(da, g, FF, K, s.gq.get(), st_);
      matvec_q8_batched(W.down_exps.type, W.down_exps.p, static_cast<int64_t>(W.down_exps.mat_bytes), sel, kk, D, FF,
                        s.gq.get(), ds4::cuda::activation_bytes(da, FF), ye, D, st_);
      fwd::add_rows(out, ye, D, kk, st_);
    } else {
      for (int64_t k = 0; k < K; ++k) {
        mv_expert(W.gate_exps, sel + k, in_f, g);
        mv_expert(W.up_exps, sel + k, in_f, u);
        fwd::swiglu(g, u, FF, clamp, wts + k, st_);
        mv_expert(W.down_exps, sel + k, s.in_b.bind(g, FF), ye);
        fwd::add(out, ye, D, st_);
      }
    }
    if (c_.n_expert_shared > 0) {
      const int64_t SF = c_.shared_ff();
      mv(W.gate_shexp, in_f, g);
      mv(W.up_shexp, in_f, u);
      fwd::swiglu(g, u, SF, clamp, nullptr, st_);
      mv(W.down_shexp, s.in_b.bind(g, SF), ye);
      fwd::add(out, ye, D, st_);
    }
    hc_post(s);
  }

  void head(Scratch& s, float* logits) const {
    const int64_t D = c_.n_embd, hc = c_.hc_count;
    fwd::rms_norm_rows(s.X.as<float>(), nullptr, 1, hc * D, c_.rms_eps, s.u.as<float>(), st_);
    mv(output_hc_fn_, s.in_b.bind(s.u.as<float>(), hc * D), s.mix.as<float>());
    fwd::hc_head_pre(s.mix.as<float>(), output_hc_scale_, output_hc_base_, static_cast<int>(hc), c_.hc_eps,
                     s.pre.as<float>(), st_);
    fwd::hc_collapse(s.X.as<float>(), s.pre.as<float>(), static_cast<int>(hc), D, s.y.as<float>(), st_);
    fwd::rms_norm_rows(s.y.as<float>(), output_norm_, 1, D, c_.rms_eps, s.y.as<float>(), st_);
    mv(output_, s.in_b.bind(s.y.as<float>(), D), logits);
  }

  void token(CudaSession& S, int32_t tok, int64_t p, float* logits) const {
    Scratch& s = S.lay.sc;
    const int64_t D = c_.n_embd;
    ds4::cuda::dequantize_device(token_embd_.type, token_embd_.p + sz(tok) * token_embd_.row_bytes, s.e.as<float>(), D,
                                 st_);
    fwd::hc_fill(s.e.as<float>(), static_cast<int>(c_.hc_count), D, s.X.as<float>(), st_);
    for (uint32_t l = 0; l < c_.n_layer; ++l) {
      attention(l, S, p);
      ffn(l, S, tok);
    }
    if (logits) head(s, logits);
  }

  std::shared_ptr<const model::Model> m_;
  const ModelConfig& c_;
  Uploader up_;
  DevWeight token_embd_, output_hc_fn_, output_;
  const float *output_hc_base_ = nullptr, *output_hc_scale_ = nullptr, *output_norm_ = nullptr;
  const float *rope_plain_ = nullptr, *rope_comp_ = nullptr;
  std::vector<DevLayer> layers_;
  cudaStream_t st_ = nullptr;  // every kernel and copy of forward() goes here
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(std::shared_ptr<const model::Model> model, const BackendOptions&) {
  return std::make_unique<CudaBackend>(std::move(model));
}

}  // namespace ds4::backend::cuda

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
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string_view>
#include <vector>

#include "backend/cpu/read_rate.h"
#include "backend/cpu/rope.h"
#include "backend/cpu/session.h"
#include "backend/cuda/cuda_buffer.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_quant.h"
#include "backend/cuda/expert_stream.h"
#include "backend/cuda/fwd_kernels.h"
#include "backend/cuda/host_experts.h"
#include "backend/cuda/pdl.h"
#include "backend/cuda/phase_profile.h"
#include "backend/cuda/read_rate.h"
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
// Rows (tokens of all the batch's sequences) one pass runs through the layers
// together; a longer batch runs in several passes. The backend takes the
// largest of kPassRows, 2 kPassRows, ..., kPassRowsMax whose buffers fit a
// quarter of the memory the weights leave free: a wider pass reads and
// decodes every weight once for more prompt tokens and fills more of the card
// per launch. DS4_CUDA_PASS_ROWS=N overrides.
constexpr int64_t kPassRows = 256;
constexpr int64_t kPassRowsMax = 2048;
// Rows the stateful middle of attention (and routing) takes per launch: their
// parameters travel by value, in arrays of fwd::kMaxRows.
constexpr int64_t kMidRows = fwd::kMaxRows;
// Rows from which a pass's float products run as tiles (wide_float()), its
// dense integer products (wide(); DS4_CUDA_MMQ_ROWS overrides) and its routed
// experts (wide_experts(); DS4_CUDA_MMQ_EXPERT_ROWS overrides). Several
// sequences decoding together make passes of a few dozen rows, where one
// multi-row matvec pass over a dense weight beats tiles shaped for prefill
// (docs/cuda-backend.md, "Three thresholds").
constexpr int64_t kMmqRows = 16;
constexpr int64_t kMmqDenseRows = 33;
constexpr int64_t kMmqExpertRows = 16;
// Slots of a session's raw KV ring: the window, plus the rows of one launch
// of the middle, so that those rows write their KV before any of them attends
// without overwriting a position an earlier one still sees.
int64_t ring_slots(const ModelConfig& c) { return int64_t{c.sliding_window} + kMidRows; }

// Host-resident experts in a wide pass (expert_stream.h): a pass of at least
// kStreamRows rows copies a layer's experts to the device a window at a time
// instead of the host computing its slots. The host takes about 0.6 ms a row
// for one Flash q2 layer's slots on the 16-core GPU machine (prefill and
// decode alike, measured through ds4 bench); the copy of its 1.7 GiB of
// experts about 35-70 ms over PCIe, so the break-even is near 60-120 rows.
// DS4_CUDA_STREAM_ROWS=N overrides (0: never stream). Two staging buffers of
// kStageBytes each are kept on the device while any layer's experts are on
// the host.
constexpr int64_t kStreamRows = 64;
constexpr size_t kStageBytes = size_t{64} << 20;

// A row count from environment variable `name`, else `fallback`.
int64_t rows_setting(const char* name, int64_t fallback) {
  const char* env = std::getenv(name);
  if (!env) return fallback;
  char* end = nullptr;
  const long long v = std::strtoll(env, &end, 10);
  if (end == env || *end || v < 0) fail("{}={}: want a number of rows", name, env);
  return v;
}
// DS4_CUDA_STREAM_ROWS (0: never), else kStreamRows.
int64_t stream_rows_setting() { return rows_setting("DS4_CUDA_STREAM_ROWS", kStreamRows); }
// One layer's routed expert matrices (gate, up, down): type, and the bytes of
// one expert's matrix as stored.
struct ExpertMats {
  GgmlType type[3] = {GgmlType::F32, GgmlType::F32, GgmlType::F32};
  size_t bytes[3] = {0, 0, 0};
  bool present[3] = {false, false, false};
};
// The device bytes wide passes set aside to stream host layers' experts in
// (expert_stream.h): two buffers of kStageBytes, or more where one expert's
// gate and up (a step's unit) would not fit; 0 where they cannot stream (a
// type without tensor-core products, DS4_CUDA_STREAM_ROWS=0,
// DS4_CUDA_MMQ=0). Both the backend's load check and `ds4 plan` use it.
size_t stage_bytes(std::span<const ExpertMats> layers) {
  const char* mm = std::getenv("DS4_CUDA_MMQ");
  if (stream_rows_setting() == 0 || (mm && std::string_view(mm) == "0") || layers.empty()) return 0;
  size_t unit = 0;
  for (const ExpertMats& m : layers) {
    for (int k = 0; k < 3; ++k)
      if (!m.present[k] || ds4::cuda::activation_type(m.type[k]) == GgmlType::F32) return 0;
    unit = std::max({unit, m.bytes[0] + m.bytes[1], m.bytes[2]});
  }
  return 2 * std::max(kStageBytes, unit + 1024);
}

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

size_t device_bytes(const Weight& w) { return w.present() ? weight_device_bytes(w.type, w.ne) : 0; }

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
      d = describe(w);
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
  // The shape and type of a weight of a GPU type without its bytes (p null):
  // what weight() uploads, and for a weight left in host memory, what the
  // kernels reading it from a staging copy (expert_stream.h) need.
  static DevWeight describe(const Weight& w) {
    DevWeight d;
    if (!w.present() || !gpu_type(w.type)) return d;
    d.type = w.type;
    d.rows = w.rows();
    d.cols = w.cols();
    d.row_bytes = w.row_bytes();
    d.mat_bytes = d.row_bytes * sz(d.rows);
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

// A batch's rows of one input (n rows of `cols` floats, `stride` apart) as the
// weights they meet need them: as they are for float weights, quantized to
// Q8_0 or Q8_K (as the CPU kernels quantize them) for the integer ones. Each
// form is made at most once per bind(), on first use, so several weights
// reading the same input share one quantization.
struct QRows {
  DeviceSpan q80, q8k;
  const float* x = nullptr;
  int64_t cols = 0, stride = 0, n = 0;
  bool has80 = false, has8k = false;
  cudaStream_t stream = nullptr;

  void carve(int64_t max_cols, int64_t max_rows, Carver& mem) {
    q80 = mem.take(sz(max_rows) * ds4::cuda::activation_bytes(GgmlType::Q8_0, max_cols));
    q8k = mem.take(sz(max_rows) * ds4::cuda::activation_bytes(GgmlType::Q8_K, max_cols));
  }
  QRows& bind(const float* v, int64_t c, int64_t rows, int64_t row_stride = 0) {
    x = v;
    cols = c;
    n = rows;
    stride = row_stride ? row_stride : c;
    has80 = has8k = false;
    return *this;
  }
  // Binds rows [n][ff] of SwiGLU(g, u) (routing weight 1) in the form an
  // integer activation type `act` takes, quantized straight from g and u in
  // one launch (quantize_swiglu_rows); x is g as it was, so only as(act)
  // may be asked of these rows.
  QRows& bind_swiglu(GgmlType act, const float* g, const float* u, int64_t ff, int64_t rows, float clamp) {
    bind(g, ff, rows);
    ds4::cuda::quantize_swiglu_rows(act, g, u, ff, rows, clamp, nullptr, act == GgmlType::Q8_0 ? q80.get() : q8k.get(),
                                    stream);
    (act == GgmlType::Q8_0 ? has80 : has8k) = true;
    return *this;
  }
  // rms_norm_rows(x, w, rows, c, eps, y) and the rows bound to y; with
  // want80 their Q8_0 form made in the same launch (rms_norm_quantize_q8_0),
  // the bits as()'s own quantizer would give.
  QRows& bind_norm(const float* xin, const float* w, int64_t c, int64_t rows, float eps, float* y, bool want80) {
    if (want80 && c % 32 == 0) {
      ds4::cuda::rms_norm_quantize_q8_0(xin, w, rows, c, eps, y, q80.get(), stream);
      bind(y, c, rows);
      has80 = true;
      return *this;
    }
    fwd::rms_norm_rows(xin, w, rows, c, eps, y, stream);
    return bind(y, c, rows);
  }
  // The rows in the form weight activation type `act` takes (F32: x itself).
  const void* as(GgmlType act) {
    if (act == GgmlType::Q8_0) {
      if (!has80) ds4::cuda::quantize_activation_strided(act, x, cols, stride, n, q80.get(), stream);
      has80 = true;
      return q80.get();
    }
    if (act == GgmlType::Q8_K) {
      if (!has8k) ds4::cuda::quantize_activation_strided(act, x, cols, stride, n, q8k.get(), stream);
      has8k = true;
      return q8k.get();
    }
    return x;
  }
};


// The backend's working memory for one pass of up to R rows: each
// buffer holds one slice per row (row i at i * its width). Allocated once with
// the backend; the stateful middle of each row also uses its session's own
// scratch (SessionScratch).
struct Pass {
  QRows in_a, in_b;  // two live inputs at a time (e.g. the normed hidden state and q's latent)
  DeviceSpan gq;     // per row: the routed experts' down-projection inputs, quantized
  DeviceSpan oq;     // per row: the attention output's head groups, quantized (grouped output projection)
  DeviceSpan mmq;    // matmul_q8_grouped's slot sort (the routed experts of a wide pass)
  DeviceSpan fmm;    // matmul_float's column-slice partial sums
  DeviceSpan X, u, mix, pre, post, comb, y, a, qlat, q, kvt, ckv, cg, ikv, ig, iq, iwt, o, z, out, f, logit, sel, wts, g,
      up, ye, ys, e, hu, hy, logits, attn_part;
  int64_t gw = 0;  // floats per row of g and up
  int64_t cw = 0, icw = 0;  // widths of the compressor outputs (ckv/cg, ikv/ig)
  size_t bytes = 0;

  Pass(const ModelConfig& c, uint8_t* base, int64_t R) {
    Carver m(base);
    const int64_t D = c.n_embd, hc = c.hc_count, hd = c.head_dim, H = c.n_head;
    const int64_t ffmax = std::max<int64_t>(c.expert_ff, c.shared_ff());
    const int64_t K = c.n_expert_used;
    X = m.floats(R * hc * D);
    u = m.floats(R * hc * D);
    mix = m.floats(R * c.hc_mix_rows());
    pre = m.floats(R * hc);
    post = m.floats(R * hc);
    comb = m.floats(R * hc * hc);
    y = m.floats(R * D);
    a = m.floats(R * D);
    qlat = m.floats(R * c.q_lora_rank);
    q = m.floats(R * H * hd);
    kvt = m.floats(R * hd);
    cw = 2 * hd;
    icw = 2 * int64_t{c.indexer_head_dim};
    ckv = m.floats(R * cw);
    cg = m.floats(R * cw);
    ikv = m.floats(R * icw);
    ig = m.floats(R * icw);
    iq = m.floats(R * c.indexer_heads * c.indexer_head_dim);
    iwt = m.floats(R * c.indexer_heads);
    o = m.floats(R * H * hd);
    z = m.floats(R * c.o_groups * c.o_lora_rank);
    out = m.floats(R * D);
    f = m.floats(R * D);
    logit = m.floats(R * c.n_expert);
    sel = m.floats(R * K);
    wts = m.floats(R * K);
    gw = std::max<int64_t>(K * c.expert_ff, c.shared_ff());
    g = m.floats(R * gw);
    up = m.floats(R * gw);
    ye = m.floats(R * K * D);
    ys = m.floats(R * D);
    gq = m.take(sz(R * K) * std::max(ds4::cuda::activation_bytes(GgmlType::Q8_0, c.expert_ff),
                                     ds4::cuda::activation_bytes(GgmlType::Q8_K, c.expert_ff)));
    oq = m.take(sz(R * c.o_groups) * std::max(ds4::cuda::activation_bytes(GgmlType::Q8_0, c.heads_per_group() * hd),
                                              ds4::cuda::activation_bytes(GgmlType::Q8_K, c.heads_per_group() * hd)));
    e = m.floats(R * D);
    // The head runs kMidRows rows at a time.
    hu = m.floats(kMidRows * hc * D);
    hy = m.floats(kMidRows * D);
    logits = m.floats(kMidRows * c.n_vocab);
    attn_part = m.floats(fwd::attend_rows_scratch_floats(static_cast<int>(H), hd));
    mmq = m.take(ds4::cuda::matmul_q8_grouped_scratch(std::max<int64_t>(c.n_expert, 1), R * K));
    fmm = m.take(ds4::cuda::matmul_float_scratch_bound(R));
    const int64_t max_cols = std::max<int64_t>(
        {hc * D, H * hd, int64_t{c.o_groups} * c.o_lora_rank, ffmax, c.q_lora_rank, D, c.heads_per_group() * hd});
    in_a.carve(max_cols, R, m);
    in_b.carve(max_cols, R, m);
    bytes = m.used();
  }
};

// A session's own scratch: what the stateful middle of its rows needs, sized
// by the session's context: for each row of a middle group (a prefill
// chunk's rows may all be one session's) one indexer score per compressed
// row and its top-k.
struct SessionScratch {
  DeviceSpan topk, idx_score;
  int64_t idx_stride = 0, topk_stride = 0;  // floats / ints per group row
};

// Where every part of a session's device memory lives: KV state first, then
// scratch, in one slab.
struct SessionLayout {
  std::vector<DevLayerState> layers;
  SessionScratch sc;
  size_t state_bytes = 0, scratch_bytes = 0;

  SessionLayout(const ModelConfig& c, int64_t ctx, uint8_t* base) {
    if (ctx <= 0) fail("session: context size must be > 0 (got {})", ctx);
    Carver st(base);
    layers.resize(c.n_layer);
    int64_t max_idx_rows = 1;
    for (uint32_t l = 0; l < c.n_layer; ++l) {
      DevLayerState& L = layers[l];
      L.raw = st.floats(ring_slots(c) * c.head_dim);
      const uint32_t r = c.compress_ratios[l];
      if (r != 0) carve_comp(L.attn, r, c.head_dim, r == 4, ctx, st);
      if (r == 4) {
        carve_comp(L.indexer, r, c.indexer_head_dim, true, ctx, st);
        max_idx_rows = std::max(max_idx_rows, L.indexer.cap);
      }
    }
    state_bytes = st.used();
    Carver m(base ? base + state_bytes : nullptr);
    sc.topk_stride = std::max<int64_t>(c.indexer_top_k, 1);
    sc.idx_stride = (max_idx_rows + 63) / 64 * 64;
    sc.topk = m.floats(kMidRows * sc.topk_stride);
    sc.idx_score = m.floats(kMidRows * sc.idx_stride);
    scratch_bytes = m.used();
  }
};

class CudaSession final : public SessionState {
 public:
  // `mem`: the slab of SessionLayout(c, context, nullptr)'s size.
  CudaSession(const ModelConfig& c, NumericsMode m, int64_t context, DeviceBuffer mem)
      : c_(c), ctx(context), mode(m), slab(std::move(mem)), lay(c, context, slab.as<uint8_t>()) {
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
      H.raw = ring_to_canonical(fbuf_host(L.raw, ring_slots(c_) * c_.head_dim));
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
      const std::vector<float> ring = ring_from_canonical(H.raw, h.pos);
      L.raw.upload(ring.data(), ring.size() * sizeof(float));
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

  // The canonical ring has `window` slots, position q at q % window; this one
  // ring_slots, q at q % ring_slots. Both hold the last `window` positions.
  std::vector<float> ring_to_canonical(const std::vector<float>& ring) const {
    const int64_t win = c_.sliding_window, rs = ring_slots(c_), hd = c_.head_dim;
    std::vector<float> out(sz(win * hd), 0.0f);
    for (int64_t q = std::max<int64_t>(0, pos - win); q < pos; ++q)
      std::copy_n(ring.begin() + (q % rs) * hd, hd, out.begin() + (q % win) * hd);
    return out;
  }
  std::vector<float> ring_from_canonical(const std::vector<float>& canon, int64_t at) const {
    const int64_t win = c_.sliding_window, rs = ring_slots(c_), hd = c_.head_dim;
    std::vector<float> out(sz(rs * hd), 0.0f);
    for (int64_t q = std::max<int64_t>(0, at - win); q < at; ++q)
      std::copy_n(canon.begin() + (q % win) * hd, hd, out.begin() + (q % rs) * hd);
    return out;
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
  CudaBackend(std::shared_ptr<const model::Model> m, const BackendOptions& opt)
      : m_(std::move(m)), c_(m_->config), prof_(opt.profile) {
    if (ds4::cuda::device_count() == 0) fail("cuda backend: no CUDA device (built with CUDA, but no GPU or driver here)");
    const auto& W = m_->weights;
    pass_rows_max_ = check_fits(W, opt.device_expert_layers);
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
      // Routed experts of the layers past device_layers_ stay in the file's
      // mapping; the host computes them (ffn, host_experts).
      if (layers_.size() < sz(device_layers_)) {
        d.gate_exps = U.weight(L.gate_exps);
        d.up_exps = U.weight(L.up_exps);
        d.down_exps = U.weight(L.down_exps);
      } else {
        d.gate_exps = Uploader::describe(L.gate_exps);
        d.up_exps = Uploader::describe(L.up_exps);
        d.down_exps = Uploader::describe(L.down_exps);
      }
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
    pass_mem_ = DeviceBuffer(Pass(c_, nullptr, pass_rows_max_).bytes);
    pass_ = std::make_unique<Pass>(c_, pass_mem_.as<uint8_t>(), pass_rows_max_);
    pass_->in_a.stream = pass_->in_b.stream = st_;
    std::vector<int32_t> iota(std::max<uint32_t>(c_.o_groups, 1));
    for (size_t g = 0; g < iota.size(); ++g) iota[g] = static_cast<int32_t>(g);
    iota_ = DeviceBuffer(iota.size() * sizeof(int32_t));
    const char* mm = std::getenv("DS4_CUDA_MMQ");
    mmq_ = !(mm && std::string_view(mm) == "0");
    mmq_rows_ = std::max<int64_t>(rows_setting("DS4_CUDA_MMQ_ROWS", kMmqDenseRows), 1);
    mmq_expert_rows_ = std::max<int64_t>(rows_setting("DS4_CUDA_MMQ_EXPERT_ROWS", kMmqExpertRows), 1);
    if (mmq_ && (mmq_rows_ != kMmqDenseRows || mmq_expert_rows_ != kMmqExpertRows))
      log::info("cuda: passes of {} rows or more take tiled dense products, of {} rows or more tiled routed experts",
                mmq_rows_, mmq_expert_rows_);
    const char* fz = std::getenv("DS4_CUDA_FUSE");
    fuse_ = !(fz && std::string_view(fz) == "0");
    hc_counters_ = DeviceBuffer(sz(kHcPreRows) * sizeof(unsigned));
    DS4_CUDA_CHECK(cudaMemset(hc_counters_.get(), 0, sz(kHcPreRows) * sizeof(unsigned)));
    hc_part_ = DeviceBuffer(static_cast<size_t>(
        ds4::cuda::hc_pre_scratch_bytes(c_.hc_count, c_.n_embd, c_.hc_mix_rows(), kHcPreRows)));
    const char* pd = std::getenv("DS4_CUDA_PDL");
    pdl_ = !(pd && std::string_view(pd) == "0");
    const char* g = std::getenv("DS4_CUDA_GRAPH");
    graph_ = g && std::string_view(g) == "1";
    if (device_layers_ < static_cast<int64_t>(c_.n_layer)) {
      if (graph_) log::info("cuda: DS4_CUDA_GRAPH ignored: layers with host experts run host code inside a step");
      graph_ = false;
      host_ = std::make_unique<HostExperts>(c_, opt.threads);
      if (stage_bytes_ > 0) {
        stream_ = std::make_unique<ExpertStream>(stage_bytes_ / 2);
        std::vector<std::pair<const void*, size_t>> ranges;
        for (int64_t l = device_layers_; l < static_cast<int64_t>(c_.n_layer); ++l)
          for (const auto& r : cpu::routed_expert_ranges(W.layers[sz(l)])) ranges.push_back(r);
        (void)stream_->pin(std::move(ranges));
        log::info("cuda: passes of {} rows or more copy host layers' experts to the device ({:.0f} MiB of staging; "
                  "DS4_CUDA_STREAM_ROWS=N changes it, 0 never copies)",
                  stream_rows_, static_cast<double>(stage_bytes_) / kMiB);
      }
    }
    if (graph_) {
      void* h = nullptr;
      DS4_CUDA_CHECK(cudaHostAlloc(&h, sz(kMidRows) * sz(c_.n_vocab) * sizeof(float), cudaHostAllocDefault));
      logits_pinned_ = static_cast<float*>(h);
      log::info("cuda: decode steps run as CUDA graphs (DS4_CUDA_GRAPH=1)");
    }
    iota_.upload(iota.data(), iota.size() * sizeof(int32_t));
    DS4_CUDA_CHECK(cudaDeviceSynchronize());  // uploads done before the stream's first kernel
  }
  ~CudaBackend() override {
    host_.reset();  // its pinned buffers before the stream and context go
    stream_.reset();
    // Sessions free their own slabs; a destructor cannot throw.
    if (graph_steps_) {
      try {
        const double k = 1e3 / static_cast<double>(graph_steps_);
        log::info("cuda graph: {} steps ({} instantiated anew); per step, ms: capture {:.3f}, update {:.3f}, run {:.3f}",
                  graph_steps_, graph_made_, graph_t_[0] * k, graph_t_[1] * k, graph_t_[2] * k);
      } catch (...) {
      }
    }
    if (exec_) (void)cudaGraphExecDestroy(exec_);
    if (logits_pinned_) (void)cudaFreeHost(logits_pinned_);
    if (st_) (void)cudaStreamDestroy(st_);
  }
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string_view name() const override { return "cuda"; }
  std::string take_profile() const override { return prof_.take(); }
  ReadRates measure_read_rates() const override {
    ReadRates r;
    r.device_expert_layers = device_layers_ < static_cast<int64_t>(c_.n_layer) ? device_layers_ : -1;
    // The largest weight buffer (a layer's stacked experts where any are on
    // the device): large enough that launch costs vanish.
    const DeviceBuffer* big = nullptr;
    for (const DeviceBuffer& b : up_.bufs)
      if (!big || b.size() > big->size()) big = &b;
    if (big) r.device_gbps = ds4::cuda::read_gbps(big->get(), big->size(), pass_->logits.as<uint32_t>(), st_);
    if (host_) r.host_gbps = host_->read_gbps(m_->weights.layers[sz(device_layers_)]);
    return r;
  }
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
    return std::make_unique<CudaSession>(c_, opt.numerics, opt.ctx_size, DeviceBuffer(need.total()));
  }

  // Directions go to the device here, outside any forward: each registered
  // set once (the server registers its named vectors at start), kept as long
  // as the backend, so forward() only looks their device copies up.
  void set_steering(std::shared_ptr<const model::SteeringVectors> v) override {
    keep_steering(v);
    if (v) upload_steering(*v);
  }
  void add_steering(std::shared_ptr<const model::SteeringVectors> v) override {
    register_steering(v);
    upload_steering(*v);
  }

  // The batch's rows (every token of every sequence, in order) run through
  // the layers in passes of up to pass_rows_max_ rows: each weight is read once per
  // pass for all its rows, and only the stateful middle of attention (ring,
  // compressors, indexer, attention itself) walks the rows one by one, in
  // order, on each row's own session. Logits come back after each pass that
  // has some. Everything is queued on st_; the host waits for the stream only
  // to hand logits back (a copy into pageable memory returns when done) and
  // once at the end, so that a fault of this call surfaces here.
  void forward(std::span<const SeqStep> batch) const override {
    validate_batch(*this, batch);
    const ds4::cuda::PdlScope pdl(pdl_);
    // Each step's device directions (null: unsteered), found before any state changes.
    std::vector<const float*> steer_dev(batch.size(), nullptr);
    for (size_t i = 0; i < batch.size(); ++i) {
      const SeqStep& st = batch[i];
      auto* S = dynamic_cast<CudaSession*>(st.state);
      if (!S) fail("cuda backend: session was not created by the cuda backend");
      if (st.steer.active()) {
        const model::SteeringVectors* v = steering_for(st.steer);
        steer_dev[i] = steering_device(v);
        if (!steer_dev[i]) fail("cuda backend: batch step {}: steering {} has no device copy", i, v->path);
      }
      if (st.capture) {
        st.capture->pre.assign(sz(c_.n_layer) * c_.n_embd, 0.0f);
        st.capture->post.assign(sz(c_.n_layer) * c_.n_embd, 0.0f);
      }
    }
    // A batch of decode steps that fits one pass runs as a CUDA graph when
    // DS4_CUDA_GRAPH=1 (experimental: the pass is captured, the previous
    // graph updated in place, then launched, so the GPU runs the step's
    // kernels back to back).
    bool one_pass_decode = graph_ && !prof_.on() && batch.size() <= sz(kMidRows);
    for (const SeqStep& st : batch) one_pass_decode &= st.tokens.size() == 1 && !st.capture;
    std::vector<Row> rows;
    rows.reserve(sz(pass_rows_max_));
    for (size_t i = 0; i < batch.size(); ++i) {
      const SeqStep& st = batch[i];
      auto* S = static_cast<CudaSession*>(st.state);
      const auto n = static_cast<int64_t>(st.tokens.size());
      for (int64_t t = 0; t < n; ++t) {
        float* dst = nullptr;
        if (st.want == Logits::all) dst = st.logits.data() + t * int64_t{c_.n_vocab};
        if (st.want == Logits::last && t == n - 1) dst = st.logits.data();
        rows.push_back({S, st.tokens[sz(t)], S->pos, dst, st.steer, steer_dev[i], t == n - 1 ? st.capture : nullptr});
        ++S->pos;
        if (static_cast<int64_t>(rows.size()) == pass_rows_max_ && !one_pass_decode) {
          pass(rows);
          rows.clear();
        }
      }
    }
    if (one_pass_decode && !rows.empty()) {
      graph_pass(rows);
      return;
    }
    if (!rows.empty()) pass(rows);
    DS4_CUDA_CHECK(cudaStreamSynchronize(st_));
  }

 private:
  // Decides which layers' routed experts go on the device (device_layers_:
  // `want`, or with -1 as many whole layers from layer 0 up as fit beside the
  // dense parts, the smallest pass and the working room, as `ds4 plan` does)
  // and fails, naming the figures, when that does not fit; returns the rows
  // per pass to use.
  int64_t check_fits(const model::ModelWeights& W, int want) {
    size_t dense = 0;
    auto add = [&](const Weight& w) { dense += device_bytes(w); };
    for (const Weight* w : {&W.token_embd, &W.output_hc_fn, &W.output_hc_base, &W.output_hc_scale, &W.output_norm,
                            &W.output})
      add(*w);
    std::vector<size_t> experts;  // per layer: its routed experts' device bytes
    for (const auto& L : W.layers) {
      for (const Weight* w :
           {&L.hc_attn_fn, &L.hc_attn_scale, &L.hc_attn_base, &L.attn_norm, &L.q_a, &L.q_a_norm, &L.q_b, &L.kv,
            &L.kv_norm, &L.sinks, &L.out_a, &L.out_b, &L.compressor.ape, &L.compressor.kv, &L.compressor.gate,
            &L.compressor.norm, &L.indexer_q_b, &L.indexer_proj, &L.indexer_compressor.ape, &L.indexer_compressor.kv,
            &L.indexer_compressor.gate, &L.indexer_compressor.norm, &L.hc_ffn_fn, &L.hc_ffn_scale, &L.hc_ffn_base,
            &L.ffn_norm, &L.gate_inp, &L.exp_probs_b, &L.tid2eid, &L.gate_shexp, &L.up_shexp, &L.down_shexp})
        add(*w);
      experts.push_back(device_bytes(L.gate_exps) + device_bytes(L.up_exps) + device_bytes(L.down_exps));
    }
    const auto n_layer = static_cast<int64_t>(experts.size());
    const size_t pass0 = Pass(c_, nullptr, kPassRows).bytes;  // the backend's pass scratch, smallest
    size_t free_b = 0, total_b = 0;
    DS4_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    const size_t headroom = kWeightRoom;
    auto mib = [](size_t b) { return static_cast<double>(b) / kMiB; };
    // Staging for wide passes over host layers' experts (expert_stream.h),
    // needed only while some layer's experts are on the host.
    stream_rows_ = stream_rows_setting();
    std::vector<ExpertMats> mats;
    for (const auto& L : W.layers) {
      ExpertMats m;
      const Weight* ws[3] = {&L.gate_exps, &L.up_exps, &L.down_exps};
      for (int k = 0; k < 3; ++k) {
        m.type[k] = ws[k]->type;
        m.present[k] = ws[k]->present();
        m.bytes[k] = ws[k]->present() ? ws[k]->row_bytes() * sz(ws[k]->rows()) : 0;
      }
      mats.push_back(m);
    }
    const size_t stage = stage_bytes(mats);
    int64_t fit = 0;  // whole layers' experts that fit beside the dense parts
    size_t with = dense;
    while (fit < n_layer &&
           with + experts[sz(fit)] + pass0 + headroom + (fit + 1 < n_layer ? stage : 0) <= free_b)
      with += experts[sz(fit++)];
    if (want < 0) {
      device_layers_ = fit;
    } else {
      device_layers_ = std::min<int64_t>(want, n_layer);
    }
    stage_bytes_ = device_layers_ < n_layer ? stage : 0;
    size_t weights = dense + stage_bytes_;
    for (int64_t l = 0; l < device_layers_; ++l) weights += experts[sz(l)];
    const size_t need = weights + pass0;
    if (need + headroom > free_b) {
      if (dense + pass0 + headroom > free_b)
        fail("cuda backend: the model needs {:.1f} MiB of device memory for weights (+{:.0f} MiB working room), only "
             "{:.1f} MiB of {:.1f} MiB are free; even with every routed expert in host memory its dense parts "
             "(attention, norms, routers, shared experts, mixers, embedding and head: {:.1f} MiB with the pass "
             "buffers) do not fit (`ds4 plan -m FILE` shows the figures)",
             mib(need), mib(headroom), mib(free_b), mib(total_b), mib(dense + pass0));
      fail("cuda backend: the model needs {:.1f} MiB of device memory for weights with the routed experts of {} "
           "layers on the device (+{:.0f} MiB working room), only {:.1f} MiB of {:.1f} MiB are free; "
           "--gpu-layers-experts {} fits",
           mib(need), device_layers_, mib(headroom), mib(free_b), mib(total_b), fit);
    }
    if (device_layers_ < n_layer) {
      size_t host = 0;  // as stored: the host reads the file's mapping
      for (int64_t l = device_layers_; l < n_layer; ++l)
        for (const auto& r : cpu::routed_expert_ranges(W.layers[sz(l)])) host += r.second;
      log::info("cuda: routed experts of layers {} on the device, of layers {}-{} in host memory ({:.1f} MiB, "
                "computed by the host in narrow passes){}",
                device_layers_ > 0 ? fmt::format("0-{}", device_layers_ - 1) : std::string("none"), device_layers_,
                n_layer - 1, mib(host), want < 0 ? " (the whole model does not fit the device)" : "");
    }
    log::info("cuda: uploading {:.1f} MiB of weights ({:.1f} MiB free)", static_cast<double>(weights) / kMiB,
              static_cast<double>(free_b) / kMiB);
    int64_t rows = kPassRows;
    if (const char* env = std::getenv("DS4_CUDA_PASS_ROWS")) {
      char* end = nullptr;
      const long long v = std::strtoll(env, &end, 10);
      if (end == env || *end || v < 1 || v > 16384)
        fail("DS4_CUDA_PASS_ROWS={}: want a number of rows from 1 to 16384", env);
      rows = v;
      if (weights + Pass(c_, nullptr, rows).bytes + headroom > free_b)
        fail("DS4_CUDA_PASS_ROWS={}: a pass of {} rows needs {:.1f} MiB, which with the weights does not fit", env, rows,
             static_cast<double>(Pass(c_, nullptr, rows).bytes) / kMiB);
    } else {
      const size_t spare = free_b - weights - headroom;
      for (int64_t r = kPassRowsMax; r > kPassRows; r /= 2)
        if (Pass(c_, nullptr, r).bytes <= spare / 4) {
          rows = r;
          break;
        }
    }
    log::info("cuda: passes of up to {} rows ({:.1f} MiB of pass buffers)", rows,
              static_cast<double>(Pass(c_, nullptr, rows).bytes) / kMiB);
    return rows;
  }

  void mark(Phase p, uint32_t l) const { prof_.mark(st_, p, layer_kind(c_.compress_ratios[l])); }

  // One row of a pass: a token of a sequence at its position, and where its
  // logits go (null: none).
  struct Row {
    CudaSession* S;
    int32_t tok;
    int64_t pos;
    float* logits;
    Steering steer;
    const float* steer_dirs;  // device copy of the set `steer` uses, [n_layer][n_embd] (null: unsteered)
    Capture* capture;  // set on the last row of a sequence whose step asks for one
  };

  // For every bound row i: y + i * y_stride = rows [row0, row0 + rows) of w
  // times input row i. Integer weight types take the input quantized as the
  // CPU's kernels take it (QRows) and read the weight once for all rows.
  void mv(const DevWeight& w, QRows& in, float* y, int64_t y_stride, int64_t row0 = 0, int64_t rows = -1) const {
    if (in.cols != w.cols) fail("cuda backend: input of {} values for a weight of {} columns", in.cols, w.cols);
    const uint8_t* p = w.p + sz(row0) * w.row_bytes;
    const int64_t n = rows < 0 ? w.rows : rows;
    const GgmlType act = ds4::cuda::activation_type(w.type);
    if (act == GgmlType::F32 && wide_float()) {
      ds4::cuda::matmul_float(w.type, p, n, w.cols, in.x, in.stride, in.n, y, y_stride, pass_->fmm.as<float>(),
                              pass_->fmm.size(), st_);
    } else if (act == GgmlType::F32) {
      for (int64_t i = 0; i < in.n; ++i) ds4::cuda::matvec(w.type, p, n, w.cols, in.x + i * in.stride, y + i * y_stride, st_);
    } else if (wide()) {
      ds4::cuda::matmul_q8(w.type, p, n, w.cols, in.as(act), ds4::cuda::activation_bytes(act, w.cols), in.n, y, y_stride,
                           st_);
    } else {
      ds4::cuda::matvec_q8_rows(w.type, p, n, w.cols, in.as(act), ds4::cuda::activation_bytes(act, w.cols), in.n, y,
                                y_stride, st_);
    }
  }
  // Whether this pass takes the tiled dense integer products (matmul_q8* on
  // tensor cores) rather than the matvecs: a pass of mmq_rows_ rows or more
  // (kMmqDenseRows unless DS4_CUDA_MMQ_ROWS says), where one weight read
  // serves enough rows for the tiles to pay. Narrower passes (decode steps of a few
  // sequences) keep the matvecs, which give every row bit for bit its result
  // alone. Decided per pass, not per launch: the head and the stateful
  // middle work in groups of kMidRows, and a row's products must not depend
  // on which group of its pass it fell in (else a prompt split at another
  // place, or a snapshot taken mid-prompt, would change the continuation).
  bool wide() const { return mmq_ && pass_rows_ >= mmq_rows_; }
  // Float weights (f16 compressors, router, mixers; matmul_float) take their
  // tiles from kMmqRows rows whatever DS4_CUDA_MMQ_ROWS says: their matvec
  // form runs one launch per row.
  bool wide_float() const { return mmq_ && pass_rows_ >= kMmqRows; }
  // Whether the pass's routed experts take the grouped tiles (else the
  // grouped matvecs); decided per pass like wide(), from its own threshold so
  // the two can be measured apart (each slot's result depends only on its
  // row either way).
  bool wide_experts() const { return mmq_ && pass_rows_ >= mmq_expert_rows_; }
  // Several weights times the same input: for one row, the integer weights of
  // one type (all of them take in's columns) go in matvec_q8_list launches,
  // bit for bit what one mv each gives; otherwise, one mv each.
  struct MvJob {
    const DevWeight* w;
    float* y;
    int64_t y_stride;
  };
  // Jobs with a null weight are skipped.
  void mv_many(std::span<const MvJob> jobs, QRows& in) const {
    if (in.n != 1) {
      for (const MvJob& j : jobs)
        if (j.w) mv(*j.w, in, j.y, j.y_stride);
      return;
    }
    std::vector<const MvJob*> left;
    for (const MvJob& j : jobs)
      if (j.w) left.push_back(&j);
    while (!left.empty()) {
      const GgmlType t = left.front()->w->type;
      const GgmlType act = ds4::cuda::activation_type(t);
      std::vector<ds4::cuda::MatvecTarget> group;
      std::vector<const MvJob*> next;
      for (const MvJob* j : left) {
        if (j->w->type == t && act != GgmlType::F32 && group.size() < sz(ds4::cuda::kMatvecListMax)) {
          if (j->w->cols != in.cols) fail("cuda backend: input of {} values for a weight of {} columns", in.cols, j->w->cols);
          group.push_back({j->w->p, j->w->rows, j->y});
        } else if (j->w->type == t && act == GgmlType::F32 && fuse_ && ds4::cuda::matvec_list_ok(t, j->w->rows, j->w->cols) &&
                   group.size() < sz(ds4::cuda::kMatvecListMax)) {
          if (j->w->cols != in.cols) fail("cuda backend: input of {} values for a weight of {} columns", in.cols, j->w->cols);
          group.push_back({j->w->p, j->w->rows, j->y});
        } else if (j->w->type == t && act == GgmlType::F32) {
          mv(*j->w, in, j->y, j->y_stride);
        } else {
          next.push_back(j);
        }
      }
      if (act == GgmlType::F32) {
        // Float weights (the compressors' and indexer's projections): one list launch.
        if (!group.empty()) ds4::cuda::matvec_list(t, group.data(), static_cast<int>(group.size()), in.cols, in.x, st_);
      } else if (group.size() == 1) {
        ds4::cuda::matvec_q8(t, group[0].w, group[0].rows, in.cols, in.as(act), group[0].y, st_);
      } else if (!group.empty()) {
        ds4::cuda::matvec_q8_list(t, group.data(), static_cast<int>(group.size()), in.cols, in.as(act), st_);
      }
      left = std::move(next);
    }
  }
  // Matrix *sel of a stack of experts times row i of the input (F32 activations).
  // The routed experts' SwiGLU over a pass's `slots` slots (gate in P.g, up in
  // P.up, each slot scaled by its routing weight) and the down projections'
  // activations in P.gq, of type da: one launch when fused, else SwiGLU in
  // place and then the quantizer, the same float operations. Device and
  // streamed host layers both take it, so their slots agree bit for bit.
  void swiglu_slots(GgmlType da, int64_t slots, float clamp) const {
    Pass& P = *pass_;
    const int64_t FF = c_.expert_ff;
    float *g = P.g.as<float>(), *u = P.up.as<float>();
    if (fuse_) {
      ds4::cuda::quantize_swiglu_rows(da, g, u, FF, slots, clamp, P.wts.as<float>(), P.gq.get(), st_);
    } else {
      fwd::swiglu_rows(g, u, FF, slots, clamp, P.wts.as<float>(), st_);
      ds4::cuda::quantize_activation_rows(da, g, FF, slots, P.gq.get(), st_);
    }
  }
  void mv_expert(const DevWeight& w, const int32_t* sel, const float* x, float* y) const {
    const auto stride = static_cast<int64_t>(w.mat_bytes);
    ds4::cuda::matvec_indexed(w.type, w.p, stride, sel, w.rows, w.cols, x, y, st_);
  }

  // HC pre-mix of n rows: rms_norm of each row's HC stream, mixer (one weight
  // read for all rows), Sinkhorn split, collapse into P.y.
  void hc_pre(Pass& P, int64_t n, const DevWeight& fn, const float* scale, const float* base) const {
    const int64_t D = c_.n_embd, hc = c_.hc_count, mr = c_.hc_mix_rows();
    // The mixer is a float product, so the float threshold decides: a pass
    // that would tile it takes the steps below.
    if (fuse_ && !wide_float() && ds4::cuda::hc_pre_fusable(fn.type, static_cast<int>(hc))) {
      // A narrow pass (decode): the four steps below in one launch.
      ds4::cuda::HcPreArgs a;
      a.X = P.X.as<float>();
      a.hc = static_cast<int>(hc);
      a.D = D;
      a.rms_eps = c_.rms_eps;
      a.scale = scale;
      a.base = base;
      a.hc_eps = c_.hc_eps;
      a.iters = static_cast<int>(c_.sinkhorn_iters);
      a.mix = P.mix.as<float>();
      a.pre = P.pre.as<float>();
      a.post = P.post.as<float>();
      a.comb = P.comb.as<float>();
      a.y = P.y.as<float>();
      a.counters = hc_counters_.as<unsigned>();
      a.part = hc_part_.as<double>();
      a.part_rows = kHcPreRows;
      ds4::cuda::hc_pre_fused(fn.type, fn.p, mr, n, a, st_);
      return;
    }
    fwd::rms_norm_rows(P.X.as<float>(), nullptr, n, hc * D, c_.rms_eps, P.u.as<float>(), st_);
    mv(fn, P.in_b.bind(P.u.as<float>(), hc * D, n), P.mix.as<float>(), mr);
    fwd::hc_split_rows(P.mix.as<float>(), mr, n, scale, base, static_cast<int>(hc), c_.hc_eps,
                       static_cast<int>(c_.sinkhorn_iters), P.pre.as<float>(), P.post.as<float>(), P.comb.as<float>(),
                       st_);
    fwd::hc_collapse(P.X.as<float>(), P.pre.as<float>(), static_cast<int>(hc), D, P.y.as<float>(), st_, n);
  }

  void hc_post(Pass& P, int64_t n) const {
    const int64_t D = c_.n_embd, hc = c_.hc_count;
    fwd::hc_expand(P.X.as<float>(), P.out.as<float>(), P.post.as<float>(), P.comb.as<float>(), static_cast<int>(hc), D,
                   st_, n);
  }

  // Projections of all rows at once; then each row's stateful middle, in
  // order, on its own session; then the output projection of all rows.
  void attention(uint32_t l, std::span<const Row> rows) const {
    const DevLayer& W = layers_[l];
    Pass& P = *pass_;
    const auto n = static_cast<int64_t>(rows.size());
    const int64_t D = c_.n_embd, H = c_.n_head, hd = c_.head_dim, qr = c_.q_lora_rank;
    const uint32_t ratio = c_.compress_ratios[l];
    const float eps = c_.rms_eps;
    const int64_t ih = c_.indexer_heads, id = c_.indexer_head_dim;

    hc_pre(P, n, W.hc_attn_fn, W.hc_attn_scale, W.hc_attn_base);
    mark(Phase::hc_pre, l);
    float* a = P.a.as<float>();
    using ds4::cuda::activation_type;
    QRows& in_a = P.in_a.bind_norm(P.y.as<float>(), W.attn_norm, D, n, eps, a,
                                   fuse_ && (activation_type(W.q_a.type) == GgmlType::Q8_0 ||
                                             activation_type(W.kv.type) == GgmlType::Q8_0));
    float* qlat = P.qlat.as<float>();
    float* kvt = P.kvt.as<float>();
    bool need_indexer = false;  // does any row score compressed rows this pass?
    // After its compressor step a row at position p has (p + 1) / ratio rows.
    if (ratio == 4)
      for (const Row& r : rows) need_indexer |= (r.pos + 1) / ratio > int64_t{c_.indexer_top_k};
    // Every projection of the normed input, together (one launch per weight
    // type for a decode step).
    const MvJob none{nullptr, nullptr, 0};
    const MvJob jobs[] = {{&W.q_a, qlat, qr},
                          {&W.kv, kvt, hd},
                          ratio ? MvJob{&W.comp.kv, P.ckv.as<float>(), P.cw} : none,
                          ratio ? MvJob{&W.comp.gate, P.cg.as<float>(), P.cw} : none,
                          ratio == 4 ? MvJob{&W.icomp.kv, P.ikv.as<float>(), P.icw} : none,
                          ratio == 4 ? MvJob{&W.icomp.gate, P.ig.as<float>(), P.icw} : none,
                          need_indexer ? MvJob{&W.indexer_proj, P.iwt.as<float>(), ih} : none};
    mv_many(jobs, in_a);
    QRows& in_q = P.in_b.bind_norm(qlat, W.q_a_norm, qr, n, eps, qlat,
                                   fuse_ && (activation_type(W.q_b.type) == GgmlType::Q8_0 ||
                                             (need_indexer && activation_type(W.indexer_q_b.type) == GgmlType::Q8_0)));
    float* q = P.q.as<float>();
    mv(W.q_b, in_q, q, H * hd);
    fwd::rms_norm_rows(q, nullptr, n * H, hd, eps, q, st_);
    if (need_indexer) mv(W.indexer_q_b, in_q, P.iq.as<float>(), ih * id);
    mark(Phase::attn_proj, l);

    // The stateful middle, kMidRows rows at a time (its per-row parameters
    // travel by value in each launch).
    for (int64_t s0 = 0; s0 < n; s0 += kMidRows)
      middle(l, rows.subspan(sz(s0), sz(std::min(kMidRows, n - s0))), s0, need_indexer);
    mark(Phase::attend, l);

    // Grouped output projection: group g maps its heads through its rows of W_oa.
    const int64_t G = c_.o_groups, ro = c_.o_lora_rank, hpg = c_.heads_per_group();
    const GgmlType oact = ds4::cuda::activation_type(W.out_a.type);
    const size_t gbytes = oact == GgmlType::F32 ? 0 : ds4::cuda::activation_bytes(oact, hpg * hd);
    if (gbytes && gbytes % 16 == 0) {
      // o is [n][G][hpg*hd]: quantized as n*G rows in one launch; group g's
      // product then takes every G-th of them.
      ds4::cuda::quantize_activation_rows(oact, P.o.as<float>(), hpg * hd, n * G, P.oq.get(), st_);
      if (n == 1)  // the G groups as G matrices of one batched launch
        ds4::cuda::matvec_q8_batched(W.out_a.type, W.out_a.p, static_cast<int64_t>(sz(ro) * W.out_a.row_bytes),
                                     iota_.as<int32_t>(), static_cast<int>(G), ro, hpg * hd, P.oq.get(), gbytes,
                                     P.z.as<float>(), ro, st_);
      else
        for (int64_t g = 0; g < G; ++g) {
          const uint8_t* wg = W.out_a.p + sz(g * ro) * W.out_a.row_bytes;
          const uint8_t* ag = P.oq.as<uint8_t>() + sz(g) * gbytes;
          if (wide())
            ds4::cuda::matmul_q8(W.out_a.type, wg, ro, hpg * hd, ag, sz(G) * gbytes, n, P.z.as<float>() + g * ro,
                                 G * ro, st_);
          else
            ds4::cuda::matvec_q8_rows(W.out_a.type, wg, ro, hpg * hd, ag, sz(G) * gbytes, n, P.z.as<float>() + g * ro,
                                      G * ro, st_);
        }
    } else {
      for (int64_t g = 0; g < G; ++g)
        mv(W.out_a, P.in_b.bind(P.o.as<float>() + g * hpg * hd, hpg * hd, n, H * hd), P.z.as<float>() + g * ro, G * ro,
           g * ro, ro);
    }
    mv(W.out_b, P.in_b.bind(P.z.as<float>(), G * ro, n), P.out.as<float>(), D);
    mark(Phase::attn_out, l);
    steer(l, Component::attn, rows, P.out.as<float>());
    hc_post(P, n);
    mark(Phase::hc_post, l);
  }

  // Row at position p of a session steps compressor state st: it joins the
  // segment of its session's previous row when it follows it, else opens one
  // (comp_rows walks each segment in order). The host keeps the count of
  // compressed rows, which the attention launches of the group read.
  static void comp_row(fwd::CompRows& segs, DevCompState& st, bool faithful, int64_t p, const float* kv,
                       const float* gate) {
    fwd::CompSeg* last = segs.n ? &segs.s[segs.n - 1] : nullptr;
    if (!last || last->fkv != st.kv.as<float>() || last->p0 + last->n != p) {
      if (segs.n == fwd::kMaxRows) fail("cuda backend: more than {} compressor segments in a group", fwd::kMaxRows);
      last = &segs.s[segs.n++];
      *last = {st.kv.as<float>(), st.score.as<float>(), st.rows.as<float>(), kv, gate, p, st.n_rows, 0, faithful};
    }
    ++last->n;
    if ((p + 1) % st.ratio != 0) return;
    // Rows were reserved for the whole context and validate_batch keeps
    // positions inside it, so this holds; checked all the same.
    if (st.n_rows >= st.cap) fail("cuda backend: compressed row {} past the {} reserved", st.n_rows, st.cap);
    ++st.n_rows;
  }

  // Rows [s0, s0 + rows.size()) of a pass (at most kMidRows): what each row
  // leaves in its session's state, in order: its raw KV row in the ring
  // (which has room for kMidRows rows beyond the window) and its compressor
  // windows (a session's consecutive rows reuse the frontier). Then the
  // reading side for these rows at once: RoPE, the indexer, top-k and
  // attention, each row seeing exactly the state its position has.
  void middle(uint32_t l, std::span<const Row> rows, int64_t s0, bool need_indexer) const {
    const DevLayer& W = layers_[l];
    Pass& P = *pass_;
    const auto n = static_cast<int64_t>(rows.size());
    const int64_t H = c_.n_head, hd = c_.head_dim, rd = c_.rope_dim, nope = c_.nope_dim(), win = c_.sliding_window;
    const int pairs = static_cast<int>(rd / 2);
    const uint32_t ratio = c_.compress_ratios[l];
    const float* rope = ratio ? rope_comp_ : rope_plain_;
    const float eps = c_.rms_eps;
    const int64_t ih = c_.indexer_heads, id = c_.indexer_head_dim;
    // These rows' parts of the pass buffers.
    float* kvt = P.kvt.as<float>() + s0 * hd;
    float* q = P.q.as<float>() + s0 * H * hd;
    float* o = P.o.as<float>() + s0 * H * hd;
    float* ckv = P.ckv.as<float>() + s0 * P.cw;
    float* cg = P.cg.as<float>() + s0 * P.cw;
    float* ikv = P.ikv.as<float>() + s0 * P.icw;
    float* ig = P.ig.as<float>() + s0 * P.icw;
    float* iq = P.iq.as<float>() + s0 * ih * id;
    float* iwt = P.iwt.as<float>() + s0 * ih;
    const int64_t ring = ring_slots(c_), top_k = c_.indexer_top_k;
    fwd::Positions at_pos;
    fwd::AttnRows att;
    fwd::IdxRows idx;
    at_pos.n = att.n = idx.n = static_cast<int>(n);
    att.ring = ring;
    bool any_idx = false, all_faithful = true;
    fwd::CompRows ca, ci;  // compressor segments: attention, indexer
    fwd::KvRows kvr;
    kvr.n = static_cast<int>(n);
    for (int64_t i = 0; i < n; ++i) {
      const CudaSession& S = *rows[sz(i)].S;
      const int64_t p = rows[sz(i)].pos;
      kvr.dst[i] = S.lay.layers[l].raw.as<float>() + (p % ring) * hd;
      kvr.pos[i] = p;
      kvr.faithful[i] = S.mode == NumericsMode::faithful;
    }
    fwd::kv_rows(kvt, hd, W.kv_norm, eps, nope, rope, pairs, kvr, st_);
    mark(Phase::attn_kv, l);
    for (int64_t i = 0; i < n; ++i) {
      CudaSession& S = *rows[sz(i)].S;
      const int64_t p = rows[sz(i)].pos;
      DevLayerState& L = S.lay.layers[l];
      SessionScratch& s = S.lay.sc;
      const bool faithful = S.mode == NumericsMode::faithful;
      all_faithful &= faithful;
      at_pos.pos[i] = p;

      fwd::AttnRow& ar = att.r[i];
      ar = {p, std::min<int64_t>(p + 1, win), 0, L.raw.as<float>(), nullptr, nullptr};
      idx.r[i] = {};
      if (ratio) {
        comp_row(ca, L.attn, faithful, p, ckv + i * P.cw, cg + i * P.cw);
        ar.comp = L.attn.rows.as<float>();
        ar.n_comp = L.attn.n_rows;
      }
      if (ratio == 4) {
        comp_row(ci, L.indexer, faithful, p, ikv + i * P.icw, ig + i * P.icw);
        const int64_t nrows = L.indexer.n_rows;
        if (nrows > top_k) {
          if (!need_indexer) fail("cuda backend: indexer rows {} at position {} were not foreseen", nrows, p);
          int32_t* sel = s.topk.as<int32_t>() + i * s.topk_stride;
          idx.r[i] = {nrows, L.indexer.rows.as<float>(), s.idx_score.as<float>() + i * s.idx_stride, sel};
          ar.sel = sel;
          ar.n_comp = top_k;
          any_idx = true;
        }
        // else: all rows, in order, as indexer_select returns them
      }
    }
    // The compressor steps of these rows: one launch per compressor.
    if (ratio) {
      fwd::CompShape sh;
      sh.ratio = ratio;
      sh.d = hd;
      sh.in_stride = P.cw;
      sh.nope = nope;
      sh.overlap = ratio == 4;
      sh.ape = W.comp.ape;
      sh.norm = W.comp.norm;
      sh.inv_freq = rope_comp_;
      sh.pairs = pairs;
      sh.eps = eps;
      fwd::comp_rows(sh, ca, st_);
      if (ratio == 4) {
        sh.d = id;
        sh.in_stride = P.icw;
        sh.overlap = true;
        sh.indexer = true;
        sh.ape = W.icomp.ape;
        sh.norm = W.icomp.norm;
        fwd::comp_rows(sh, ci, st_);
      }
      mark(Phase::compressor, l);
    }
    fwd::rope_rows(q + nope, H * hd, hd, static_cast<int>(H), rope, pairs, at_pos, false, st_);
    if (any_idx) {
      // Every row's indexer query is prepared (rows that score nothing ignore it).
      fwd::rope_rows(iq + id - rd, ih * id, id, static_cast<int>(ih), rope_comp_, pairs, at_pos, false, st_);
      if (all_faithful) {
        fwd::indexer_qat(iq, n * ih, id, st_);
      } else {
        for (int64_t i = 0; i < n; ++i)
          if (rows[sz(i)].S->mode == NumericsMode::faithful) fwd::indexer_qat(iq + i * ih * id, ih, id, st_);
      }
      fwd::scale(iwt, n * ih, 1.0f / std::sqrt(static_cast<float>(id * ih)), st_);
      fwd::indexer_scores_rows(idx, id, iq, ih * id, iwt, ih, static_cast<int>(ih), st_);
      mark(Phase::indexer, l);
      fwd::topk_rows(idx, top_k, st_);
      mark(Phase::topk, l);
    }
    fwd::attend_rows(q, static_cast<int>(H), hd, att, W.sinks, o, P.attn_part.as<float>(), st_);
    fwd::rope_rows(o + nope, H * hd, hd, static_cast<int>(H), rope, pairs, at_pos, true, st_);
    mark(Phase::attend, l);
  }

  // Whether this pass copies layer l's host-resident experts to the device
  // (expert_stream.h) rather than handing its slots to the host. The copies
  // are multiplied as the device layers' experts of a tiled pass are, so the
  // experts' threshold decides with the streaming one.
  bool streams(uint32_t l) const {
    return stream_ && static_cast<int64_t>(l) >= device_layers_ && wide_experts() && pass_rows_ >= stream_rows_;
  }
  void start_stream(uint32_t l) const {
    const auto& L = m_->weights.layers[l];
    const DevLayer& W = layers_[l];
    const int64_t E = c_.n_expert;
    const ExpertStream::Tensor gate_up[] = {{L.gate_exps.data, W.gate_exps.mat_bytes},
                                            {L.up_exps.data, W.up_exps.mat_bytes}};
    const ExpertStream::Tensor down[] = {{L.down_exps.data, W.down_exps.mat_bytes}};
    std::vector<ExpertStream::Step> steps = stream_->plan(gate_up, E);
    for (const auto& st : stream_->plan(down, E)) steps.push_back(st);
    stream_->start(std::move(steps));
  }

  void ffn(uint32_t l, std::span<const Row> rows) const {
    const DevLayer& W = layers_[l];
    Pass& P = *pass_;
    const auto n = static_cast<int64_t>(rows.size());
    const int64_t D = c_.n_embd, K = c_.n_expert_used, FF = c_.expert_ff, E = c_.n_expert;
    const float clamp = c_.swiglu_clamp[l];
    hc_pre(P, n, W.hc_ffn_fn, W.hc_ffn_scale, W.hc_ffn_base);
    mark(Phase::hc_pre, l);
    float* f = P.f.as<float>();
    using ds4::cuda::activation_type;
    const GgmlType ga = activation_type(W.gate_exps.type), ua = activation_type(W.up_exps.type),
                   da = activation_type(W.down_exps.type);
    const bool shared_q80 = c_.n_expert_shared > 0 && (activation_type(W.gate_shexp.type) == GgmlType::Q8_0 ||
                                                       activation_type(W.up_shexp.type) == GgmlType::Q8_0);
    QRows& in_f = P.in_a.bind_norm(P.y.as<float>(), W.ffn_norm, D, n, c_.rms_eps, f,
                                   fuse_ && (shared_q80 || ga == GgmlType::Q8_0 || ua == GgmlType::Q8_0));
    mv(W.gate_inp, in_f, P.logit.as<float>(), E);
    float* out = P.out.as<float>();
    const bool integer = ga != GgmlType::F32 && ua != GgmlType::F32 && da != GgmlType::F32;
    for (int64_t s0 = 0; s0 < n; s0 += kMidRows) {
      fwd::Tokens toks;
      toks.n = static_cast<int>(std::min(kMidRows, n - s0));
      for (int i = 0; i < toks.n; ++i) toks.tok[i] = rows[sz(s0 + i)].tok;
      fwd::route_rows(P.logit.as<float>() + s0 * E, static_cast<int>(E), static_cast<int>(K),
                      c_.is_hash_layer(l) ? W.tid2eid : nullptr, toks, W.exp_probs_b, c_.expert_weights_norm,
                      c_.expert_weights_scale, P.sel.as<int32_t>() + s0 * K, P.wts.as<float>() + s0 * K, st_);
    }
    mark(Phase::router, l);
    const bool on_host = static_cast<int64_t>(l) >= device_layers_;
    float* ys = c_.n_expert_shared > 0 ? P.ys.as<float>() : nullptr;
    auto shared_expert = [&] {
      if (ys) {
        // Shared expert: rows [n][SF] in g and up, read once for all rows.
        const int64_t SF = c_.shared_ff();
        float *g = P.g.as<float>(), *u = P.up.as<float>();
        const MvJob shared[] = {{&W.gate_shexp, g, SF}, {&W.up_shexp, u, SF}};
        mv_many(shared, in_f);
        const GgmlType sa = ds4::cuda::activation_type(W.down_shexp.type);
        if (fuse_ && (sa == GgmlType::Q8_0 || sa == GgmlType::Q8_K)) {
          mv(W.down_shexp, P.in_b.bind_swiglu(sa, g, u, SF, n, clamp), ys, D);
        } else {
          fwd::swiglu(g, u, n * SF, clamp, nullptr, st_);
          mv(W.down_shexp, P.in_b.bind(g, SF, n), ys, D);
        }
        if (!integer && !on_host) fwd::add(out, ys, n * D, st_);
        mark(Phase::shared, l);
      }
    };
    if (on_host && streams(l)) {
      // The experts come over a window at a time (the walk started before
      // this layer's attention): gate and up windows, then down windows, each
      // slot computed as the device-resident layers compute theirs.
      shared_expert();
      const int32_t* sel = P.sel.as<int32_t>();
      const auto kk = static_cast<int>(K);
      float *g = P.g.as<float>(), *u = P.up.as<float>(), *ye = P.ye.as<float>();
      auto window = [&](const DevWeight& w, const uint8_t* p, const ExpertStream::Step& st, int64_t out_rows,
                        int64_t cols, const void* act, size_t row_stride, size_t k_stride, float* y, int64_t y_stride) {
        ds4::cuda::matmul_q8_grouped(w.type, p, static_cast<int64_t>(w.mat_bytes), E, sel, n, kk, out_rows, cols, act,
                                     row_stride, k_stride, y, y_stride, P.mmq.get(), P.mmq.size(), st_,
                                     {st.lo, st.hi});
      };
      size_t i = 0;
      for (; stream_->step(i).nt == 2; ++i) {
        const auto p = stream_->wait(i, st_);
        window(W.gate_exps, p[0], stream_->step(i), FF, D, in_f.as(ga), ds4::cuda::activation_bytes(ga, D), 0, g, FF);
        window(W.up_exps, p[1], stream_->step(i), FF, D, in_f.as(ua), ds4::cuda::activation_bytes(ua, D), 0, u, FF);
        stream_->release(i, st_);
      }
      const size_t dab = ds4::cuda::activation_bytes(da, FF);
      swiglu_slots(da, n * K, clamp);
      for (; stream_->started(); ++i) {
        const auto p = stream_->wait(i, st_);
        window(W.down_exps, p[0], stream_->step(i), D, FF, P.gq.get(), sz(K) * dab, dab, ye, D);
        stream_->release(i, st_);
      }
      mark(Phase::experts, l);
    } else if (on_host) {
      // The host computes this layer's routed experts slot by slot into ye
      // while the GPU runs the shared expert.
      host_->run(m_->weights.layers[l], l, n, f, P.sel.as<int32_t>(), P.wts.as<float>(), P.ye.as<float>(), st_,
                 shared_expert);
      mark(Phase::experts, l);
    } else {
      if (integer) {
        // The routed experts of all rows grouped by expert (the ids stay on the
        // device): each chosen expert is read once for the rows that chose it.
        // Slot j = i * K + k (row i's k-th choice) owns g, up and ye row j.
        // A wide pass sorts its slots by expert and runs each expert's slots
        // as tensor-core tiles (matmul_q8_grouped); a narrow one, the matvecs.
        const int32_t* sel = P.sel.as<int32_t>();
        const auto kk = static_cast<int>(K);
        auto experts = [&](const DevWeight& w, int64_t out_rows, int64_t cols, const void* act, size_t row_stride,
                           size_t k_stride, float* y, int64_t y_stride) {
          if (wide_experts())
            ds4::cuda::matmul_q8_grouped(w.type, w.p, static_cast<int64_t>(w.mat_bytes), E, sel, n, kk, out_rows, cols,
                                         act, row_stride, k_stride, y, y_stride, P.mmq.get(), P.mmq.size(), st_);
          else
            ds4::cuda::matvec_q8_grouped(w.type, w.p, static_cast<int64_t>(w.mat_bytes), sel, n, kk, out_rows, cols, act,
                                         row_stride, k_stride, y, y_stride, st_);
        };
        float *g = P.g.as<float>(), *u = P.up.as<float>(), *ye = P.ye.as<float>();
        experts(W.gate_exps, FF, D, in_f.as(ga), ds4::cuda::activation_bytes(ga, D), 0, g, FF);
        experts(W.up_exps, FF, D, in_f.as(ua), ds4::cuda::activation_bytes(ua, D), 0, u, FF);
        const size_t dab = ds4::cuda::activation_bytes(da, FF);
        swiglu_slots(da, n * K, clamp);
        experts(W.down_exps, D, FF, P.gq.get(), sz(K) * dab, dab, ye, D);
        // Summed with the shared expert's output once that is known.
      } else {
        // Float experts meet f32 activations, one matrix at a time.
        DS4_CUDA_CHECK(cudaMemsetAsync(out, 0, sz(n * D) * sizeof(float), st_));
        for (int64_t i = 0; i < n; ++i) {
          const int32_t* sel = P.sel.as<int32_t>() + i * K;
          const float* wts = P.wts.as<float>() + i * K;
          float *g = P.g.as<float>(), *u = P.up.as<float>(), *ye = P.ye.as<float>();
          for (int64_t k = 0; k < K; ++k) {
            mv_expert(W.gate_exps, sel + k, f + i * D, g);
            mv_expert(W.up_exps, sel + k, f + i * D, u);
            fwd::swiglu(g, u, FF, clamp, wts + k, st_);
            mv_expert(W.down_exps, sel + k, g, ye);
            fwd::add(out + i * D, ye, D, st_);
          }
        }
      }
      mark(Phase::experts, l);
      shared_expert();
    }
    bool touched = false;  // does a row steer or capture this FFN's output?
    for (const Row& r : rows) touched |= r.steer.ffn != 0 || (r.capture && r.capture->component == Component::ffn);
    if ((integer || on_host) && fuse_ && !touched) {
      // The expert sum goes straight into the HC expand.
      fwd::hc_expand_moe(P.X.as<float>(), P.ye.as<float>(), ys, static_cast<int>(K), P.post.as<float>(),
                         P.comb.as<float>(), static_cast<int>(c_.hc_count), D, n, st_);
      mark(Phase::hc_post, l);
      return;
    }
    if (integer || on_host) fwd::moe_sum(out, P.ye.as<float>(), ys, D, static_cast<int>(K), n, st_);
    steer(l, Component::ffn, rows, out);
    hc_post(P, n);
    mark(Phase::hc_post, l);
  }

  // The output head for the m rows that want logits (their indices in `which`):
  // logits of row j at P.logits + j * vocab.
  void head(std::span<const int64_t> which) const {
    Pass& P = *pass_;
    const auto m = static_cast<int64_t>(which.size());
    const int64_t D = c_.n_embd, hc = c_.hc_count, mr = c_.hc_mix_rows();
    for (int64_t j = 0; j < m; ++j)
      fwd::rms_norm_rows(P.X.as<float>() + which[sz(j)] * hc * D, nullptr, 1, hc * D, c_.rms_eps,
                         P.hu.as<float>() + j * hc * D, st_);
    mv(output_hc_fn_, P.in_b.bind(P.hu.as<float>(), hc * D, m), P.mix.as<float>(), mr);
    for (int64_t j = 0; j < m; ++j) {
      fwd::hc_head_pre(P.mix.as<float>() + j * mr, output_hc_scale_, output_hc_base_, static_cast<int>(hc), c_.hc_eps,
                       P.pre.as<float>() + j * hc, st_);
      fwd::hc_collapse(P.X.as<float>() + which[sz(j)] * hc * D, P.pre.as<float>() + j * hc, static_cast<int>(hc), D,
                       P.hy.as<float>() + j * D, st_);
    }
    fwd::rms_norm_rows(P.hy.as<float>(), output_norm_, m, D, c_.rms_eps, P.hy.as<float>(), st_);
    mv(output_, P.in_b.bind(P.hy.as<float>(), D, m), P.logits.as<float>(), c_.n_vocab);
  }

  // Uploads a registered set's directions once (synchronous; called while no
  // forward runs).
  void upload_steering(const model::SteeringVectors& v) {
    if (steering_device(&v)) return;
    DeviceBuffer b(v.dirs.size() * sizeof(float));
    b.upload(v.dirs.data(), v.dirs.size() * sizeof(float));
    steer_dev_.push_back({&v, std::move(b)});
  }
  // The device copy of a registered set, null when it has none.
  const float* steering_device(const model::SteeringVectors* v) const {
    for (const auto& [set, buf] : steer_dev_)
      if (set == v) return buf.as<float>();
    return nullptr;
  }

  // Steering and capture of one layer component (out: [rows][n_embd]), as
  // the CPU backend does it: a capture copies its row before and after.
  void steer(uint32_t l, Component comp, std::span<const Row> rows, float* out) const {
    const int64_t D = c_.n_embd;
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      const float s = comp == Component::attn ? r.steer.attn : r.steer.ffn;
      Capture* cap = r.capture && r.capture->component == comp ? r.capture : nullptr;
      float* y = out + sz(D) * i;
      if (cap)
        DS4_CUDA_CHECK(cudaMemcpyAsync(cap->pre.data() + sz(l) * sz(D), y, sz(D) * sizeof(float),
                                       cudaMemcpyDeviceToHost, st_));
      if (s != 0) fwd::steer_row(y, r.steer_dirs + sz(l) * sz(D), D, s, st_);
      if (cap)
        DS4_CUDA_CHECK(cudaMemcpyAsync(cap->post.data() + sz(l) * sz(D), y, sz(D) * sizeof(float),
                                       cudaMemcpyDeviceToHost, st_));
    }
  }

  // One pass: up to pass_rows_max_ rows through every layer, then the head for the
  // rows that want logits, whose values are copied to where they go.
  // One pass captured into a graph (logits into pinned host memory, as a
  // capture cannot copy to pageable memory), the previous executable graph
  // updated to it when the shapes allow (else made anew), launched, waited
  // for; then the logits go where the rows want them.
  void graph_pass(std::span<const Row> rows) const {
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    DS4_CUDA_CHECK(cudaStreamBeginCapture(st_, cudaStreamCaptureModeThreadLocal));
    cudaGraph_t g = nullptr;
    try {
      const ds4::cuda::PdlScope plain(false);  // a captured graph keeps the stream's plain order
      queue_pass(rows, logits_pinned_);
    } catch (...) {
      if (cudaStreamEndCapture(st_, &g) == cudaSuccess && g) (void)cudaGraphDestroy(g);
      (void)cudaGetLastError();
      throw;
    }
    DS4_CUDA_CHECK(cudaStreamEndCapture(st_, &g));
    const auto t1 = clock::now();
    if (exec_) {
      cudaGraphExecUpdateResultInfo info{};
      if (cudaGraphExecUpdate(exec_, g, &info) != cudaSuccess) {
        (void)cudaGetLastError();
        (void)cudaGraphExecDestroy(exec_);
        exec_ = nullptr;
      }
    }
    graph_made_ += exec_ ? 0 : 1;
    const cudaError_t inst = exec_ ? cudaSuccess : cudaGraphInstantiate(&exec_, g, 0);
    (void)cudaGraphDestroy(g);
    DS4_CUDA_CHECK(inst);
    const auto t2 = clock::now();
    DS4_CUDA_CHECK(cudaGraphLaunch(exec_, st_));
    DS4_CUDA_CHECK(cudaStreamSynchronize(st_));
    const auto t3 = clock::now();
    // What a step costs where: the host's capture and update against the
    // GPU's run of the step's kernels back to back (logged at the end).
    graph_t_[0] += std::chrono::duration<double>(t1 - t0).count();
    graph_t_[1] += std::chrono::duration<double>(t2 - t1).count();
    graph_t_[2] += std::chrono::duration<double>(t3 - t2).count();
    ++graph_steps_;
    const int64_t V = c_.n_vocab;
    int64_t j = 0;
    for (const Row& r : rows)
      if (r.logits) std::memcpy(r.logits, logits_pinned_ + j++ * V, sz(V) * sizeof(float));
  }

  void pass(std::span<const Row> rows) const {
    const auto t0 = std::chrono::steady_clock::now();
    auto queued = t0;
    prof_.begin(st_);
    queue_pass(rows, nullptr, &queued);
    if (prof_.on())
      prof_.end(st_, static_cast<int64_t>(rows.size()), std::chrono::duration<double>(queued - t0).count());
  }
  // host_logits: null, each row's logits straight to where it wants them;
  // else the j-th row with logits to host_logits + j * vocab. `queued`, when
  // given, gets the time the last kernel was queued: the logits copy into
  // pageable memory waits for the GPU, so the time after it says nothing about
  // what queueing costs the host.
  void queue_pass(std::span<const Row> rows, float* host_logits,
                  std::chrono::steady_clock::time_point* queued = nullptr) const {
    Pass& P = *pass_;
    const int64_t D = c_.n_embd, hc = c_.hc_count, V = c_.n_vocab;
    pass_rows_ = static_cast<int64_t>(rows.size());
    for (size_t i = 0; i < rows.size(); ++i) {
      float* e = P.e.as<float>() + sz(D) * i;
      ds4::cuda::dequantize_device(token_embd_.type, token_embd_.p + sz(rows[i].tok) * token_embd_.row_bytes, e, D, st_);
      fwd::hc_fill(e, static_cast<int>(hc), D, P.X.as<float>() + sz(hc * D) * i, st_);
    }
    prof_.mark(st_, Phase::embed, LayerKind::outside);
    for (uint32_t l = 0; l < c_.n_layer; ++l) {
      // A streamed layer's first expert windows come over while its
      // attention runs.
      if (streams(l)) start_stream(l);
      attention(l, rows);
      ffn(l, rows);
    }
    std::vector<int64_t> which;
    for (size_t i = 0; i < rows.size(); ++i)
      if (rows[i].logits) which.push_back(static_cast<int64_t>(i));
    if (which.empty()) {
      if (queued) *queued = std::chrono::steady_clock::now();
      return;
    }
    // The head kMidRows rows at a time (the logits buffer holds that many).
    for (size_t j0 = 0; j0 < which.size(); j0 += sz(kMidRows)) {
      const auto part = std::span<const int64_t>(which).subspan(j0, std::min(sz(kMidRows), which.size() - j0));
      head(part);
      prof_.mark(st_, Phase::head, LayerKind::outside);
      if (queued && j0 + part.size() == which.size()) *queued = std::chrono::steady_clock::now();
      if (host_logits)
        DS4_CUDA_CHECK(cudaMemcpyAsync(host_logits + j0 * sz(V), P.logits.as<float>(), part.size() * sz(V) * sizeof(float),
                                       cudaMemcpyDeviceToHost, st_));
      else
        for (size_t j = 0; j < part.size(); ++j)
          DS4_CUDA_CHECK(cudaMemcpyAsync(rows[sz(part[j])].logits, P.logits.as<float>() + sz(V) * j,
                                         sz(V) * sizeof(float), cudaMemcpyDeviceToHost, st_));
      prof_.mark(st_, Phase::logits_copy, LayerKind::outside);
    }
  }

  std::shared_ptr<const model::Model> m_;
  const ModelConfig& c_;
  Uploader up_;
  DevWeight token_embd_, output_hc_fn_, output_;
  const float *output_hc_base_ = nullptr, *output_hc_scale_ = nullptr, *output_norm_ = nullptr;
  const float *rope_plain_ = nullptr, *rope_comp_ = nullptr;
  std::vector<DevLayer> layers_;
  cudaStream_t st_ = nullptr;  // every kernel and copy of forward() goes here
  // Device copies of the registered steering sets, [n_layer][n_embd] each,
  // keyed by the set (which the base class keeps alive, so a key is never
  // reused for another set).
  std::vector<std::pair<const model::SteeringVectors*, DeviceBuffer>> steer_dev_;
  DeviceBuffer pass_mem_;
  DeviceBuffer iota_;  // 0, 1, ..., o_groups - 1: the matrix indices of a batched launch over the head groups
  std::unique_ptr<Pass> pass_;  // carved from pass_mem_; one pass at a time (one thread drives a backend)
  mutable PhaseProfile prof_;  // off unless BackendOptions::profile
  bool graph_ = false;              // DS4_CUDA_GRAPH=1
  mutable int64_t pass_rows_ = 0;  // rows of the pass being queued (see wide())
  int64_t device_layers_ = 0;      // layers [0, device_layers_) have their routed experts on the device
  std::unique_ptr<HostExperts> host_;  // the others' (null when none)
  std::unique_ptr<ExpertStream> stream_;  // wide passes copy the others' experts in (null: never)
  int64_t stream_rows_ = kStreamRows;     // rows from which a pass streams them
  size_t stage_bytes_ = 0;                // device bytes check_fits set aside for stream_
  int64_t pass_rows_max_ = kPassRows;  // rows a pass holds (check_fits picks it)
  int64_t mmq_rows_ = kMmqDenseRows, mmq_expert_rows_ = kMmqExpertRows;  // see wide(), wide_experts()
  bool mmq_ = true;                 // tensor-core products for wide passes (DS4_CUDA_MMQ=0: the matvecs, to compare)
  bool pdl_ = true;                 // programmatic launches where the GPU has them (launch.cuh; DS4_CUDA_PDL=0: plain)
  bool fuse_ = true;                // fused kernels for narrow passes (DS4_CUDA_FUSE=0: the separate ones, to compare)
  // hc_pre_fused's hand-over counters (zero between launches) and partial sums,
  // for kHcPreRows rows a launch (narrow passes are fewer; more run in groups)
  static constexpr int64_t kHcPreRows = 32;
  DeviceBuffer hc_counters_;
  DeviceBuffer hc_part_;
  float* logits_pinned_ = nullptr;  // [kMidRows][vocab], graph mode only
  mutable cudaGraphExec_t exec_ = nullptr;
  mutable int64_t graph_steps_ = 0, graph_made_ = 0;  // graph mode's step count, and how many were instantiated anew
  mutable double graph_t_[3] = {};                    // seconds in capture, update, run (see graph_pass)
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(std::shared_ptr<const model::Model> model, const BackendOptions& opt) {
  return std::make_unique<CudaBackend>(std::move(model), opt);
}

size_t weight_device_bytes(GgmlType type, std::span<const int64_t> ne) {
  const int64_t cols = ne.empty() ? 0 : ne[0];
  const int64_t rows = ne.size() < 2 ? 1 : ne[1];
  const int64_t mats = ne.size() > 2 ? ne[2] : 1;
  const size_t n = sz(mats) * sz(rows);
  return gpu_type(type) ? n * quant::row_bytes(type, cols) : n * sz(cols) * sizeof(float);
}

size_t pass_scratch_bytes(const model::ModelConfig& c) { return Pass(c, nullptr, kPassRows).bytes; }

size_t spill_stage_bytes(std::span<const model::PlacementTensor> tensors) {
  std::map<int, ExpertMats> by_layer;
  for (const auto& t : tensors) {
    if (t.kind != model::TensorKind::routed_expert || t.layer < 0 || t.ne.size() < 2) continue;
    const int k = t.name.find("gate_exps") != std::string::npos ? 0
                  : t.name.find("up_exps") != std::string::npos ? 1
                  : t.name.find("down_exps") != std::string::npos ? 2
                                                                 : -1;
    if (k < 0) continue;
    ExpertMats& m = by_layer[t.layer];
    m.type[k] = t.type;
    m.present[k] = true;
    m.bytes[k] = quant::row_bytes(t.type, t.ne[0]) * sz(t.ne[1]);
  }
  std::vector<ExpertMats> v;
  for (const auto& [l, m] : by_layer) v.push_back(m);
  return stage_bytes(v);
}

std::vector<DeviceInfo> list_devices() {
  std::vector<DeviceInfo> v;
  int n = 0;
  // No driver, no device: no list (and no error for a machine without a GPU).
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return v;
  }
  int current = 0;
  (void)cudaGetDevice(&current);
  for (int i = 0; i < n; ++i) {
    DeviceInfo d;
    d.id = i;
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) == cudaSuccess) d.name = prop.name;
    if (cudaSetDevice(i) != cudaSuccess || cudaMemGetInfo(&d.free_bytes, &d.total_bytes) != cudaSuccess) {
      (void)cudaGetLastError();
      continue;
    }
    v.push_back(std::move(d));
  }
  (void)cudaSetDevice(current);
  return v;
}

}  // namespace ds4::backend::cuda

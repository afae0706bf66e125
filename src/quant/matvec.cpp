// matvec/matmul: activation quantization, kernel dispatch and row splitting.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "quant/kernels.h"
#include "quant/quant.h"
#include "util/error.h"
#include "util/thread_pool.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace ds4::quant {

#if defined(__x86_64__)
namespace {
// clang's __builtin_cpu_supports does not know "f16c"; ask CPUID directly
// (leaf 1, ECX bit 29) so the dispatch compiles with gcc and clang alike.
bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}
}  // namespace
#endif

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Neon: return "neon";
  }
  return "?";
}

namespace {
bool probe_cpu(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return true;
#if defined(__x86_64__)
    case Isa::Avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
    case Isa::Avx512:
#if defined(DS4_EMULATE_AVX512)
      return true;  // the test build with the AVX-512 kernels emulated (avx512_emulated.h)
#else
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
#endif
#else
    case Isa::Avx2:
    case Isa::Avx512: return false;
#endif
#if defined(__aarch64__)
    case Isa::Neon: return true;
#else
    case Isa::Neon: return false;
#endif
  }
  return false;
}
}  // namespace

// Probed once: CPUID traps to the hypervisor in a VM (microseconds), and every
// matvec asks.
bool cpu_has(Isa isa) {
  static const bool has[4] = {probe_cpu(Isa::Scalar), probe_cpu(Isa::Avx2), probe_cpu(Isa::Avx512), probe_cpu(Isa::Neon)};
  return has[static_cast<int>(isa)];
}

const DotKernel* find_kernel(GgmlType t, Isa isa) {
  if (!cpu_has(isa)) return nullptr;
  switch (isa) {
    case Isa::Scalar: return scalar_kernel(t);
    case Isa::Avx2: return avx2_kernel(t);
    case Isa::Avx512: return avx512_kernel(t);
    case Isa::Neon: return neon_kernel(t);
  }
  return nullptr;
}

namespace {

Isa env_isa_cap() {
  const char* e = std::getenv("DS4_QUANT_ISA");
  const std::string_view v = e ? e : "";
  if (v == "scalar") return Isa::Scalar;
  if (v == "avx2") return Isa::Avx2;
  return Isa::Avx512;  // no cap (NEON is the only choice on ARM)
}

// The cap: from the environment, until set_isa_cap changes it.
std::atomic<int>& cap_slot() {
  static std::atomic<int> cap{static_cast<int>(env_isa_cap())};
  return cap;
}

Isa isa_cap() { return static_cast<Isa>(cap_slot().load(std::memory_order_relaxed)); }

struct Prepared {
  const DotKernel* k;
  size_t w_row_bytes, act_row_bytes;
};

Prepared prepare(GgmlType wtype, int64_t cols) {
  const DotKernel* k = best_kernel(wtype);
  if (!k) fail("matvec: no kernel for weight type {}", ggml_type_name(wtype));
  const TypeOps& w = require_ops(wtype, "(matvec weight)");
  if (cols % w.block_size) fail("matvec {}: {} columns is not a multiple of {}", ggml_type_name(wtype), cols, w.block_size);
  return {k, row_bytes(wtype, cols), k->act == GgmlType::F32 ? static_cast<size_t>(cols) * 4 : row_bytes(k->act, cols)};
}

// Quantizes n activation rows for kernel k into buf (or points at X for F32).
// Blocks are independent, so long activations are split over the pool.
const uint8_t* prepare_act(const DotKernel& k, const float* X, int64_t n, int64_t cols, size_t act_rb,
                           std::vector<uint8_t>& buf, ThreadPool* pool) {
  if (k.act == GgmlType::F32) return reinterpret_cast<const uint8_t*>(X);
  buf.resize(act_rb * static_cast<size_t>(n));
  const int64_t blk = k.act == GgmlType::Q8_0 ? 32 : 256;
  const int64_t nbk = cols / blk;
  const size_t bbytes = act_rb / static_cast<size_t>(nbk);
  uint8_t* out = buf.data();
  const ActQuantFn q = best_act_quant(k.act);
  auto body = [&](int64_t b, int64_t e) {
    for (int64_t idx = b; idx < e; ++idx) {
      const int64_t j = idx / nbk, kb = idx % nbk;
      uint8_t* dst = out + act_rb * static_cast<size_t>(j) + bbytes * static_cast<size_t>(kb);
      q(X + j * cols + kb * blk, dst, blk);
      if (k.order) k.order(dst, blk);
    }
  };
  // One thread quantizes ~1 value per ns with SIMD: below ~32k values that is
  // quicker than waking the pool.
  const int64_t grain = 32768 / blk;
  if (pool) pool->parallel_for(n * nbk, body, grain);
  else body(0, n * nbk);
  return out;
}

}  // namespace

void set_isa_cap(Isa cap) { cap_slot().store(static_cast<int>(cap), std::memory_order_relaxed); }

ActQuantFn find_act_quant(GgmlType act, Isa isa) {
  if (act != GgmlType::Q8_0 && act != GgmlType::Q8_K) return nullptr;
  if (!cpu_has(isa)) return nullptr;
  switch (isa) {
    case Isa::Scalar: return act == GgmlType::Q8_0 ? quantize_row_q8_0 : quantize_row_q8_k;
    case Isa::Avx2: return avx2_act_quant(act);
    case Isa::Avx512: return avx512_act_quant(act);
    case Isa::Neon: return nullptr;
  }
  return nullptr;
}

namespace {

// The ISAs best_* may choose from, fastest first, under the current cap.
template <class Find>
auto best_under_cap(Find&& find) -> decltype(find(Isa::Scalar)) {
  const Isa order[] = {Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Scalar};
  const Isa cap = isa_cap();
  for (Isa isa : order) {
    if (cap == Isa::Scalar && isa != Isa::Scalar) continue;
    if (isa == Isa::Avx512 && cap == Isa::Avx2) continue;
    if (auto f = find(isa)) return f;
  }
  return nullptr;
}

}  // namespace

void quantize_activation(const DotKernel& k, const float* x, void* dst, int64_t n) {
  if (k.act == GgmlType::F32) {
    std::memcpy(dst, x, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  best_act_quant(k.act)(x, dst, n);
  if (k.order) k.order(dst, n);
}

ActQuantFn best_act_quant(GgmlType act) {
  return best_under_cap([&](Isa isa) { return find_act_quant(act, isa); });
}

const DotKernel* best_kernel(GgmlType t) {
  return best_under_cap([&](Isa isa) { return find_kernel(t, isa); });
}

void matvec(GgmlType wtype, const void* W, int64_t rows, int64_t cols, const float* x, float* y, ThreadPool* pool) {
  matmul(wtype, W, rows, cols, x, 1, y, pool);
}

void matmul(GgmlType wtype, const void* W, int64_t rows, int64_t cols, const float* X, int64_t n, float* Y,
            ThreadPool* pool) {
  if (rows <= 0 || n <= 0) return;
  const Prepared p = prepare(wtype, cols);
  thread_local std::vector<uint8_t> buf;
  const uint8_t* act = prepare_act(*p.k, X, n, cols, p.act_row_bytes, buf, pool);
  const auto* w = static_cast<const uint8_t*>(W);
  // One row at a time, start to end: each thread streams its rows
  // sequentially, which the hardware prefetchers follow best. (Walking long
  // rows in column tiles across many rows was measured slower.)
  // Several activation rows: the kernel's dotn unpacks each weight row once
  // for a group of them (bit-identical to dot, so prefill equals decode).
  const DotNFn dotn = n > 1 ? p.k->dotn : nullptr;
  // A prompt's activation rows may outgrow L2 and be re-read from L3 for every
  // weight row; tiling rows x activations measured no faster on a 32 MiB-L3
  // EPYC (2 threads, n = 512), so the plain order stays.
  // Where the kernel has tiles (dotnm), kDotNMRows weight rows go together:
  // each activation block loaded then serves that many weight rows too.
  const DotNMFn dotnm = n > 1 ? p.k->dotnm : nullptr;
  auto body = [&](int64_t b, int64_t e) {
    constexpr int64_t kGroup = 16;  // rows per dotn call (a fixed buffer; kernels take 4 at a time)
    float out[kGroup * kDotNMRows];
    if (dotnm) {
      for (int64_t r = b; r < e; r += kDotNMRows) {
        const int nw = static_cast<int>(std::min<int64_t>(kDotNMRows, e - r));
        const uint8_t* wr = w + p.w_row_bytes * static_cast<size_t>(r);
        for (int64_t j0 = 0; j0 < n; j0 += kGroup) {
          const int64_t cnt = std::min(kGroup, n - j0);
          dotnm(cols, wr, p.w_row_bytes, nw, act + p.act_row_bytes * static_cast<size_t>(j0), p.act_row_bytes,
                static_cast<int>(cnt), out);
          for (int i = 0; i < nw; ++i)
            for (int64_t j = 0; j < cnt; ++j) Y[(j0 + j) * rows + r + i] = out[i * cnt + j];
        }
      }
      return;
    }
    for (int64_t r = b; r < e; ++r) {
      const uint8_t* wr = w + p.w_row_bytes * static_cast<size_t>(r);
      if (dotn) {
        for (int64_t j0 = 0; j0 < n; j0 += kGroup) {
          const int64_t cnt = std::min(kGroup, n - j0);
          dotn(cols, wr, act + p.act_row_bytes * static_cast<size_t>(j0), p.act_row_bytes, static_cast<int>(cnt), out);
          for (int64_t j = 0; j < cnt; ++j) Y[(j0 + j) * rows + r] = out[j];
        }
      } else {
        for (int64_t j = 0; j < n; ++j)
          Y[j * rows + r] = p.k->dot(cols, wr, act + p.act_row_bytes * static_cast<size_t>(j));
      }
    }
  };
  // About 8 KiB of weights (at least one row) per unit: the pool hands each
  // thread one contiguous share and cuts it finer only to rebalance.
  int64_t grain = std::max<int64_t>(1, static_cast<int64_t>(8192 / std::max<size_t>(1, p.w_row_bytes)));
  if (dotnm) grain = (grain + kDotNMRows - 1) / kDotNMRows * kDotNMRows;  // whole tiles where the split allows
  if (pool) pool->parallel_for(rows, body, grain);
  else body(0, rows);
}

void matvec_batch(std::span<const MatvecJob> jobs, ThreadPool* pool) {
  const size_t nj = jobs.size();
  if (nj == 0) return;
  struct Ready {
    const DotKernel* k;
    size_t w_row_bytes;
    const uint8_t* act;
    int64_t row0;  // first row of this job in the batch's row numbering
  };
  constexpr size_t kAsIs = SIZE_MAX;  // act_at: x is used as is (float kernels)
  thread_local std::vector<Ready> ready;
  thread_local std::vector<size_t> act_at, owner;
  thread_local std::vector<uint8_t> buf;
  ready.resize(nj);
  act_at.assign(nj, kAsIs);
  owner.resize(nj);
  // Each distinct (x, columns, activation type and order) gets one slot of one buffer;
  // pointers into it are taken once it stops growing.
  size_t bytes = 0;
  int64_t total = 0;
  size_t max_row_bytes = 1;
  for (size_t j = 0; j < nj; ++j) {
    const MatvecJob& jb = jobs[j];
    const Prepared p = prepare(jb.wtype, jb.cols);
    ready[j] = {p.k, p.w_row_bytes, nullptr, total};
    total += std::max<int64_t>(jb.rows, 0);
    max_row_bytes = std::max(max_row_bytes, p.w_row_bytes);
    owner[j] = j;
    if (p.k->act == GgmlType::F32) continue;
    for (size_t i = 0; i < j; ++i)
      if (act_at[i] != kAsIs && jobs[i].x == jb.x && jobs[i].cols == jb.cols && ready[i].k->act == p.k->act &&
          ready[i].k->order == p.k->order) {
        owner[j] = owner[i];
        break;
      }
    if (owner[j] == j) {
      act_at[j] = bytes;
      bytes += p.act_row_bytes;
    } else {
      act_at[j] = act_at[owner[j]];
    }
  }
  buf.resize(bytes);
  for (size_t j = 0; j < nj; ++j) {
    if (act_at[j] == kAsIs) {
      ready[j].act = reinterpret_cast<const uint8_t*>(jobs[j].x);
      continue;
    }
    ready[j].act = buf.data() + act_at[j];
    if (owner[j] == j) quantize_activation(*ready[j].k, jobs[j].x, buf.data() + act_at[j], jobs[j].cols);
  }
  if (total == 0) return;
  // [b, e) counts rows of the whole batch and may span several jobs. The
  // workers see this thread's tables through `rs` (inside the task, `ready`
  // would name each worker's own thread_local copy).
  const std::span<const Ready> rs(ready);
  auto body = [&](int64_t b, int64_t e) {
    const auto after = std::upper_bound(rs.begin(), rs.end(), b, [](int64_t v, const Ready& r) { return v < r.row0; });
    size_t j = static_cast<size_t>(after - rs.begin()) - 1;
    for (int64_t g = b; g < e; ++g) {
      while (g >= rs[j].row0 + jobs[j].rows) ++j;  // also steps over empty jobs
      const Ready& rd = rs[j];
      const int64_t r = g - rd.row0;
      const auto* w = static_cast<const uint8_t*>(jobs[j].W) + rd.w_row_bytes * static_cast<size_t>(r);
      jobs[j].y[r] = rd.k->dot(jobs[j].cols, w, rd.act);
    }
  };
  // About 8 KiB of weights per unit, as matmul.
  const int64_t grain = std::max<int64_t>(1, static_cast<int64_t>(8192 / max_row_bytes));
  if (pool) pool->parallel_for(total, body, grain);
  else body(0, total);
}

}  // namespace ds4::quant

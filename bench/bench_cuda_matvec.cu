// Decode matvec throughput per weight type at DeepSeek V4 Flash shapes: GB/s of
// weight bytes read, and that as a fraction of this GPU's memory bandwidth
// measured in the same run by a streaming read kernel (a device-to-device copy
// is printed beside it, counting bytes read + written).
//
// Each configuration cycles through enough copies of the weights (>= 512 MiB in
// all) that they cannot stay in L2, and its launches are captured in one CUDA
// graph (as decode will run them) so launch gaps do not dilute short kernels.
// Prints figures only; nothing here asserts a speed.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "backend/cuda/cuda_buffer.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_quant.h"

using namespace ds4;

namespace {

__global__ void fill_kernel(uint32_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 0x9E3779B1u ^ seed;
    h ^= h >> 15;
    h *= 0x85EBCA77u;
    h ^= h >> 13;
    // Keep every 16-bit half a finite f16/bf16 with a modest exponent, so
    // scales and float weights are ordinary numbers (the kernels do not care,
    // but NaN-filled output would hide a broken kernel in a quick look).
    p[i] = h & 0x3BFF3BFFu;
  }
}

__global__ void read_kernel(const uint4* __restrict__ p, size_t n, uint32_t* sink) {
  uint32_t acc = 0;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {  // four independent loads in flight per thread
    const uint4 a = p[i], b = p[i + stride], c = p[i + 2 * stride], d = p[i + 3 * stride];
    acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^ d.w;
  }
  for (; i < n; i += stride) acc ^= p[i].x ^ p[i].y ^ p[i].z ^ p[i].w;
  if (acc == 0x9E3779B1u) *sink = acc;  // keeps the loads; practically never true
}

struct Timer {
  cudaEvent_t a, b;
  Timer() {
    DS4_CUDA_CHECK(cudaEventCreate(&a));
    DS4_CUDA_CHECK(cudaEventCreate(&b));
  }
  ~Timer() {
    (void)cudaEventDestroy(a);
    (void)cudaEventDestroy(b);
  }
  void start(cudaStream_t s) { DS4_CUDA_CHECK(cudaEventRecord(a, s)); }
  double stop_ms(cudaStream_t s) {
    DS4_CUDA_CHECK(cudaEventRecord(b, s));
    DS4_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    DS4_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    return ms;
  }
};

int g_sms = 0;

double read_bandwidth(cudaStream_t s) {
  const size_t bytes = size_t{2} << 30;
  cuda::DeviceBuffer buf(bytes), sink(4);
  fill_kernel<<<g_sms * 8, 256, 0, s>>>(buf.as<uint32_t>(), bytes / 4, 1);
  DS4_CUDA_CHECK_LAUNCH("fill_kernel");
  Timer t;
  double best = 0;
  for (int rep = 0; rep < 6; ++rep) {
    t.start(s);
    read_kernel<<<g_sms * 8, 512, 0, s>>>(buf.as<uint4>(), bytes / 16, sink.as<uint32_t>());
    DS4_CUDA_CHECK_LAUNCH("read_kernel");
    const double ms = t.stop_ms(s);
    if (rep > 0) best = std::max(best, static_cast<double>(bytes) / (ms * 1e6));
  }
  return best;
}

double copy_bandwidth(cudaStream_t s) {
  const size_t bytes = size_t{1} << 30;
  cuda::DeviceBuffer src(bytes), dst(bytes);
  Timer t;
  double best = 0;
  for (int rep = 0; rep < 6; ++rep) {
    t.start(s);
    DS4_CUDA_CHECK(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, s));
    const double ms = t.stop_ms(s);
    if (rep > 0) best = std::max(best, 2.0 * static_cast<double>(bytes) / (ms * 1e6));
  }
  return best;
}

size_t row_bytes(GgmlType t, int64_t cols) {
  const auto info = ggml_type_info(ggml_type_id(t));
  return static_cast<size_t>(cols / info->block_size) * info->block_bytes;
}

// How a configuration multiplies: the f32-activation kernel with rows per warp
// rpw (0: cuda::matvec's default), or the integer kernel on an activation
// quantized beforehand (kQ8), or quantized in every launch (kQ8Act).
constexpr int kQ8 = -10, kQ8Act = -11;
constexpr int kBlk = cuda::detail::kBlockPerRow;

// GB/s of weight bytes for one configuration.
double time_matvec(GgmlType t, int64_t rows, int64_t cols, int rpw, cudaStream_t s) {
  const size_t bytes = row_bytes(t, cols) * static_cast<size_t>(rows);
  const size_t stride = (bytes + 255) / 256 * 256;
  const size_t copies = std::max<size_t>(1, ((size_t{512} << 20) + bytes - 1) / bytes);
  cuda::DeviceBuffer w(stride * copies), x(static_cast<size_t>(cols) * 4), y(static_cast<size_t>(rows) * 4);
  fill_kernel<<<g_sms * 8, 256, 0, s>>>(w.as<uint32_t>(), w.size() / 4, 7);
  fill_kernel<<<g_sms, 256, 0, s>>>(x.as<uint32_t>(), x.size() / 4, 9);
  DS4_CUDA_CHECK_LAUNCH("fill_kernel");
  const GgmlType act = cuda::activation_type(t);
  cuda::DeviceBuffer qa(cuda::activation_bytes(act, cols));
  if (rpw == kQ8 || rpw == kQ8Act) cuda::quantize_activation(act, x.as<float>(), cols, qa.get(), s);
  auto run = [&](size_t i) {
    const void* wi = w.as<uint8_t>() + (i % copies) * stride;
    if (rpw == kQ8 || rpw == kQ8Act) {
      if (rpw == kQ8Act) cuda::quantize_activation(act, x.as<float>(), cols, qa.get(), s);
      cuda::matvec_q8(t, wi, rows, cols, qa.get(), y.as<float>(), s);
    } else if (rpw)
      cuda::detail::matvec_rows_per_warp(rpw, t, wi, rows, cols, x.as<float>(), y.as<float>(), s);
    else
      cuda::matvec(t, wi, rows, cols, x.as<float>(), y.as<float>(), s);
  };
  run(0);  // warm-up; also uploads lookup tables outside the capture
  DS4_CUDA_CHECK(cudaStreamSynchronize(s));

  const size_t launches = std::max<size_t>(copies, 64);
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  DS4_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  for (size_t i = 0; i < launches; ++i) run(i);
  DS4_CUDA_CHECK(cudaStreamEndCapture(s, &graph));
  DS4_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  Timer tm;
  DS4_CUDA_CHECK(cudaGraphLaunch(exec, s));  // warm-up
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    tm.start(s);
    DS4_CUDA_CHECK(cudaGraphLaunch(exec, s));
    const double ms = tm.stop_ms(s);
    best = std::max(best, static_cast<double>(bytes) * static_cast<double>(launches) / (ms * 1e6));
  }
  DS4_CUDA_CHECK(cudaGraphExecDestroy(exec));
  DS4_CUDA_CHECK(cudaGraphDestroy(graph));
  return best;
}

}  // namespace

// `bench_cuda_matvec [--bandwidth]`: --bandwidth measures and prints only the
// memory bandwidth line (scripts/bench-gpu divides decode GB/s by it).
int main(int argc, char** argv) {
  const bool bandwidth_only = argc > 1 && std::string(argv[1]) == "--bandwidth";
  try {
    if (cuda::device_count() == 0) {
      // Not an error: `make bench` runs every benchmark, also on machines without a GPU.
      std::printf("bench_cuda_matvec: no CUDA device, nothing measured\n");
      return 0;
    }
    cudaDeviceProp prop{};
    DS4_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    g_sms = prop.multiProcessorCount;
    cudaStream_t s;
    DS4_CUDA_CHECK(cudaStreamCreate(&s));
    const double rd = read_bandwidth(s), cp = copy_bandwidth(s);
    std::printf("device: %s, %d SMs, L2 %d MiB\n", prop.name, g_sms, prop.l2CacheSize >> 20);
    std::printf("memory bandwidth: read kernel %.0f GB/s, device-to-device copy %.0f GB/s (read+write)\n", rd, cp);
    if (bandwidth_only) return 0;
    std::printf("matvec GB/s of weight bytes (best of 3 graph replays). rpwN/blk/default: f32 activations, N rows\n"
                "per warp or a block per row; q8: integer kernel on a quantized activation (what the backend runs),\n"
                "q8+act: quantizing it in each launch too; %%read = the backend's kernel vs the read kernel\n");
    std::printf("%-8s %-12s %9s %8s %8s %8s %8s %8s %8s %8s %6s\n", "type", "rows x cols", "MB", "rpw1", "rpw2", "rpw4",
                "blk", "default", "q8", "q8+act", "%read");
    const GgmlType types[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16,   GgmlType::Q8_0,
                              GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS};
    // Flash's decode shapes: expert down / gate+up, q_b-like, the router (256 x
    // 4096), the compressors' projections (512 and 1024 x 4096), the HC mixers.
    const int64_t shapes[][2] = {{4096, 2048}, {2048, 4096}, {4096, 32768}, {256, 4096},
                                 {512, 4096},  {1024, 4096}, {24, 16384}};
    for (GgmlType t : types)
      for (const auto& sh : shapes) {
        const double mb = static_cast<double>(row_bytes(t, sh[1]) * static_cast<size_t>(sh[0])) / 1e6;
        double g[7] = {0, 0, 0, 0, 0, 0, 0};
        const int rpws[7] = {1, 2, 4, kBlk, 0, kQ8, kQ8Act};
        const bool integer = cuda::activation_type(t) != GgmlType::F32;
        for (int i = 0; i < (integer ? 7 : 5); ++i) g[i] = time_matvec(t, sh[0], sh[1], rpws[i], s);
        char shape[32];
        std::snprintf(shape, sizeof shape, "%lldx%lld", static_cast<long long>(sh[0]), static_cast<long long>(sh[1]));
        std::printf("%-8s %-12s %9.1f %8.0f %8.0f %8.0f %8.0f %8.0f %8.0f %8.0f %5.0f%%\n",
                    std::string(ggml_type_name(t)).c_str(), shape, mb, g[0], g[1], g[2], g[3], g[4], g[5], g[6],
                    100.0 * (integer ? g[5] : g[4]) / rd);
      }
    DS4_CUDA_CHECK(cudaStreamDestroy(s));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_matvec: %s\n", e.what());
    return 1;
  }
}

#include "backend/cuda/expert_stream.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "backend/cuda/cuda_check.h"
#include "util/error.h"
#include "util/log.h"

namespace ds4::backend::cuda {

namespace {

constexpr size_t kAlign = 256;
size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

}  // namespace

ExpertStream::ExpertStream(size_t buffer_bytes) : bytes_(buffer_bytes) {
  if (const char* env = std::getenv("DS4_CUDA_STAGE_EXPERTS")) {
    char* end = nullptr;
    const long long v = std::strtoll(env, &end, 10);
    if (end == env || *end || v < 1) fail("DS4_CUDA_STAGE_EXPERTS={}: want a number of experts from 1", env);
    cap_ = v;
  }
  buf_[0] = ds4::cuda::DeviceBuffer(bytes_);
  buf_[1] = ds4::cuda::DeviceBuffer(bytes_);
  DS4_CUDA_CHECK(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking));
  for (int b = 0; b < 2; ++b) {
    DS4_CUDA_CHECK(cudaEventCreateWithFlags(&ready_[b], cudaEventDisableTiming));
    DS4_CUDA_CHECK(cudaEventCreateWithFlags(&free_[b], cudaEventDisableTiming));
  }
}

ExpertStream::~ExpertStream() {
  // A destructor cannot throw: errors here are dropped. Queued copies finish
  // before the buffers and the registrations go.
  if (copy_) (void)cudaStreamSynchronize(copy_);
  for (void* p : pinned_) (void)cudaHostUnregister(p);
  for (int b = 0; b < 2; ++b) {
    if (ready_[b]) (void)cudaEventDestroy(ready_[b]);
    if (free_[b]) (void)cudaEventDestroy(free_[b]);
  }
  if (copy_) (void)cudaStreamDestroy(copy_);
}

bool ExpertStream::pin(std::vector<std::pair<const void*, size_t>> ranges) {
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  // Page-aligned [begin, end), merged where they touch: registering a page
  // twice is an error.
  std::vector<std::pair<uintptr_t, uintptr_t>> spans;
  for (const auto& [p, n] : ranges) {
    if (!p || !n) continue;
    const auto a = reinterpret_cast<uintptr_t>(p);
    spans.emplace_back(a / page * page, (a + n + page - 1) / page * page);
  }
  std::sort(spans.begin(), spans.end());
  std::vector<std::pair<uintptr_t, uintptr_t>> merged;
  for (const auto& s : spans) {
    if (!merged.empty() && s.first <= merged.back().second)
      merged.back().second = std::max(merged.back().second, s.second);
    else
      merged.push_back(s);
  }
  size_t total = 0;
  for (const auto& [a, b] : merged) total += b - a;
  // Locking most of the host's memory would starve everything else (and a
  // mapping larger than memory cannot be locked at all).
  const auto phys = static_cast<size_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<size_t>(page);
  const double mib = static_cast<double>(total) / (1024.0 * 1024.0);
  if (total > phys / 2) {
    log::info("cuda: host experts not pinned ({:.1f} MiB is more than half of the host's {:.1f} MiB): wide passes copy "
              "them from pageable memory",
              mib, static_cast<double>(phys) / (1024.0 * 1024.0));
    return false;
  }
  int dev = 0, ro = 0;
  DS4_CUDA_CHECK(cudaGetDevice(&dev));
  (void)cudaDeviceGetAttribute(&ro, cudaDevAttrHostRegisterReadOnlySupported, dev);
  if (!ro) {
    log::info("cuda: host experts not pinned (the device cannot register read-only host memory): wide passes copy "
              "them from pageable memory");
    return false;
  }
  for (const auto& [a, b] : merged) {
    void* p = reinterpret_cast<void*>(a);
    const cudaError_t e = cudaHostRegister(p, b - a, cudaHostRegisterReadOnly);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();  // clear it: the fallback is not an error
      log::info("cuda: host experts not pinned ({}: {}): wide passes copy them from pageable memory",
                cudaGetErrorName(e), cudaGetErrorString(e));
      for (void* q : pinned_) (void)cudaHostUnregister(q);
      pinned_.clear();
      return false;
    }
    pinned_.push_back(p);
  }
  log::info("cuda: host experts pinned for streaming ({:.1f} MiB in {} ranges)", mib, merged.size());
  return true;
}

std::vector<ExpertStream::Step> ExpertStream::plan(std::span<const Tensor> tensors, int64_t n_expert) const {
  if (tensors.empty() || tensors.size() > static_cast<size_t>(kTensors))
    fail("cuda: expert stream: {} tensors in a step (1 to {})", tensors.size(), kTensors);
  size_t per = 0;  // one expert of every tensor
  for (const Tensor& t : tensors) per += t.mat_bytes;
  const size_t slack = kAlign * tensors.size();
  if (per == 0 || per + slack > bytes_)
    fail("cuda: expert stream: one expert's matrices ({} bytes) do not fit a staging buffer of {} bytes", per, bytes_);
  auto each = static_cast<int64_t>((bytes_ - slack) / per);
  if (cap_ > 0) each = std::min(each, cap_);
  std::vector<Step> steps;
  for (int64_t lo = 0; lo < n_expert; lo += each) {
    Step s;
    s.nt = static_cast<int>(tensors.size());
    for (int i = 0; i < s.nt; ++i) s.t[i] = tensors[static_cast<size_t>(i)];
    s.lo = lo;
    s.hi = std::min(n_expert, lo + each);
    steps.push_back(s);
  }
  return steps;
}

void ExpertStream::queue_copy(size_t i) {
  const Step& s = steps_[i];
  const int b = static_cast<int>(i % 2);
  // The buffer's previous step has been multiplied.
  DS4_CUDA_CHECK(cudaStreamWaitEvent(copy_, free_[b], 0));
  size_t off = 0;
  auto* dst = buf_[b].as<uint8_t>();
  for (int k = 0; k < s.nt; ++k) {
    const Tensor& t = s.t[k];
    const size_t n = static_cast<size_t>(s.hi - s.lo) * t.mat_bytes;
    DS4_CUDA_CHECK(cudaMemcpyAsync(dst + off, t.host + static_cast<size_t>(s.lo) * t.mat_bytes, n,
                                   cudaMemcpyHostToDevice, copy_));
    off += align_up(n, kAlign);
  }
  DS4_CUDA_CHECK(cudaEventRecord(ready_[b], copy_));
}

void ExpertStream::start(std::vector<Step> steps) {
  if (started()) fail("cuda: expert stream: a walk started before the last one ended");
  steps_ = std::move(steps);
  for (size_t i = 0; i < std::min<size_t>(2, steps_.size()); ++i) queue_copy(i);
}

std::vector<const uint8_t*> ExpertStream::wait(size_t i, cudaStream_t s) {
  if (i >= steps_.size()) fail("cuda: expert stream: step {} of a walk of {}", i, steps_.size());
  const Step& st = steps_[i];
  const int b = static_cast<int>(i % 2);
  DS4_CUDA_CHECK(cudaStreamWaitEvent(s, ready_[b], 0));
  std::vector<const uint8_t*> out;
  size_t off = 0;
  for (int k = 0; k < st.nt; ++k) {
    out.push_back(buf_[b].as<const uint8_t>() + off);
    off += align_up(static_cast<size_t>(st.hi - st.lo) * st.t[k].mat_bytes, kAlign);
  }
  return out;
}

void ExpertStream::release(size_t i, cudaStream_t s) {
  const int b = static_cast<int>(i % 2);
  DS4_CUDA_CHECK(cudaEventRecord(free_[b], s));
  if (i + 2 < steps_.size()) queue_copy(i + 2);
  if (i + 1 == steps_.size()) steps_.clear();
}

}  // namespace ds4::backend::cuda

#pragma once
// Host side of programmatic dependent launch (launch.cuh says what it is and
// why): whether this thread's kernel launches are programmatic. Plain C++,
// for .cpp and .cu files.

namespace ds4::cuda {

// Whether the current device supports it (compute capability 9.0 or later)
// and this thread's PdlScope, if any, allows it.
bool pdl_on();

// Sets, for the calling thread and until it is destroyed, whether launches
// may be programmatic: the backend holds one for each forward() with its own
// setting (DS4_CUDA_PDL=0 turns it off), and one that forbids it while it
// captures a graph, whose edges then keep the stream's plain order.
class PdlScope {
 public:
  explicit PdlScope(bool allow);
  ~PdlScope();
  PdlScope(const PdlScope&) = delete;
  PdlScope& operator=(const PdlScope&) = delete;

 private:
  bool prev_;
};

}  // namespace ds4::cuda

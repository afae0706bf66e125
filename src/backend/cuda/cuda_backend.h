#pragma once
// The CUDA backend (docs/ARCHITECTURE.md §4): weights and session KV state in
// device memory (plain cudaMalloc), the whole forward on the GPU. Matches the
// CPU reference up to f32 rounding and the activation quantization the CPU's
// integer kernels do (the GPU matvecs multiply by f32 activations).
#include <memory>

#include "backend/backend.h"

namespace ds4::backend::cuda {

// Throws ds4::Error when there is no CUDA device, a weight type cannot be run
// or the model does not fit in free device memory (naming both sizes).
std::unique_ptr<Backend> make_cuda_backend(std::shared_ptr<const model::Model> model, const BackendOptions& opt);

}  // namespace ds4::backend::cuda

#include "backend/backend.h"

#include "backend/cpu/cpu_backend.h"
#ifdef DS4_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif
#include "util/error.h"

namespace ds4::backend {

NumericsMode parse_numerics(std::string_view s) {
  if (s == "exact") return NumericsMode::exact;
  if (s == "faithful") return NumericsMode::faithful;
  fail("unknown numerics mode '{}' (expected exact or faithful)", s);
}

std::string_view numerics_name(NumericsMode m) { return m == NumericsMode::exact ? "exact" : "faithful"; }

std::vector<uint8_t> SessionState::save() const { fail("this backend cannot save session state"); }
void SessionState::load(std::span<const uint8_t>) { fail("this backend cannot load session state"); }

std::unique_ptr<Backend> make_backend(std::string_view name, std::shared_ptr<const model::Model> model,
                                      const BackendOptions& opt) {
  if (name == "cpu") return cpu::make_cpu_backend(std::move(model), opt);
#ifdef DS4_HAVE_CUDA
  if (name == "cuda") return cuda::make_cuda_backend(std::move(model), opt);
  fail("unknown backend '{}' (available: cpu, cuda)", name);
#else
  if (name == "cuda") fail("backend 'cuda': this ds4 was built without CUDA (configure with -DDS4_CUDA=ON where nvcc is installed)");
  fail("unknown backend '{}' (available: cpu)", name);
#endif
}

}  // namespace ds4::backend

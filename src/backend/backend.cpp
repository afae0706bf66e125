#include "backend/backend.h"

#include "backend/cpu/cpu_backend.h"
#include "util/error.h"

namespace ds4::backend {

NumericsMode parse_numerics(std::string_view s) {
  if (s == "exact") return NumericsMode::exact;
  if (s == "faithful") return NumericsMode::faithful;
  fail("unknown numerics mode '{}' (expected exact or faithful)", s);
}

std::string_view numerics_name(NumericsMode m) { return m == NumericsMode::exact ? "exact" : "faithful"; }

std::unique_ptr<Backend> make_backend(std::string_view name, std::shared_ptr<const model::Model> model,
                                      const BackendOptions& opt) {
  if (name == "cpu") return cpu::make_cpu_backend(std::move(model), opt);
  fail("unknown or unavailable backend '{}' (available: cpu)", name);
}

}  // namespace ds4::backend

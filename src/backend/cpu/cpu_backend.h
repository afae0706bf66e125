#pragma once
#include <memory>

#include "backend/backend.h"

namespace ds4::backend::cpu {

std::unique_ptr<Backend> make_cpu_backend(std::shared_ptr<const model::Model> model, const BackendOptions& opt);

}  // namespace ds4::backend::cpu

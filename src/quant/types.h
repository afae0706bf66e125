#pragma once
// Registration hooks of the type families; registry.cpp collects them.
#include <vector>

#include "quant/quant.h"

namespace ds4::quant {
void register_basic_types(std::vector<TypeOps>& out);
void register_legacy_types(std::vector<TypeOps>& out);
void register_k_types(std::vector<TypeOps>& out);
void register_iq_types(std::vector<TypeOps>& out);
}  // namespace ds4::quant

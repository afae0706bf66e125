#pragma once
// Float and integer-free types: F32, F16, BF16, and Q8_0.
#include <vector>

#include "quant/quant.h"

namespace ds4::quant {
void register_basic_types(std::vector<TypeOps>& out);
}

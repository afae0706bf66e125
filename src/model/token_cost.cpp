#include "model/token_cost.h"

#include <algorithm>
#include <string>

namespace ds4::model {

double prefill_macs_per_token(const Model& m) {
  const auto& c = m.config;
  double total = 0;
  for (const auto& t : m.file->tensors()) {
    if (t.ne.size() < 2 || t.name == "token_embd.weight" || t.name.rfind("output", 0) == 0 ||
        t.name.find("tid2eid") != std::string::npos)
      continue;
    double n = 1;
    for (const int64_t d : t.ne) n *= static_cast<double>(d);
    if (t.name.find("_exps") != std::string::npos) n *= static_cast<double>(c.n_expert_used) / std::max(1u, c.n_expert);
    total += n;
  }
  return total;
}

}  // namespace ds4::model

#pragma once
// What one token costs a model, for the benchmarks' figures (`ds4 bench`,
// bench_forward): the same count wherever a rate is printed.
#include "model/weights.h"

namespace ds4::model {

// Multiply-adds of one prefill token's weight products: every matrix once,
// n_expert_used of the routed experts, and neither the embedding (a lookup),
// the output head (a prefill wants its last token's logits only) nor tid2eid
// (a table). Attention's own products are not counted.
double prefill_macs_per_token(const Model& m);

}  // namespace ds4::model

#pragma once
// How fast the host's threads read memory (the decode bound `ds4 bench`
// prints, Backend::measure_read_rates): every 8 bytes of each range once,
// split over the pool, best of `reps` passes.
#include <cstddef>
#include <span>
#include <utility>
#include <vector>

#include "model/weights.h"

namespace ds4 {
class ThreadPool;
}

namespace ds4::backend::cpu {

double host_read_gbps(std::span<const std::pair<const void*, size_t>> ranges, ThreadPool& pool, int reps = 3);

// Where a layer's routed experts (gate, up, down, all experts each) lie in
// the file's mapping: what a decode step reads most of, and what a GPU whose
// layers' experts stay on the host pins for streaming.
std::vector<std::pair<const void*, size_t>> routed_expert_ranges(const model::LayerWeights& L);

}  // namespace ds4::backend::cpu

#pragma once
// How fast the host's threads read memory (the decode bound `ds4 bench`
// prints, Backend::measure_read_rates): every 8 bytes of each range once,
// split over the pool, best of `reps` passes.
#include <cstddef>
#include <span>
#include <utility>

namespace ds4 {
class ThreadPool;
}

namespace ds4::backend::cpu {

double host_read_gbps(std::span<const std::pair<const void*, size_t>> ranges, ThreadPool& pool, int reps = 3);

}  // namespace ds4::backend::cpu

#pragma once
// QAT simulations of `faithful` numerics (model-spec §4, §11): the values the
// model was trained to see in its KV cache and indexer.
#include <cstdint>
#include <span>

namespace ds4::backend::cpu {

// Nearest finite e4m3fn value (max 448, subnormal step 2^-9), ties to even code.
// Inputs beyond +-448 saturate.
float e4m3_round(float x);
// Nearest e2m1 value of {0, .5, 1, 1.5, 2, 3, 4, 6} (signed), ties to the even
// grid index; beyond +-6 saturates.
float e2m1_round(float x);
// Per block of 64 (the last block may be shorter): power-of-two scale with
// amax/scale <= 448, then e4m3 rounding.
void fp8_simulate_64(std::span<float> x);
// Per block of 32: power-of-two scale with amax/scale <= 6, then e2m1 rounding.
void fp4_simulate_32(std::span<float> x);
// Orthonormal Walsh-Hadamard transform (natural order, butterflies at strides
// 1, 2, ..., n/2, then 1/sqrt(n)); n must be a power of two.
void hadamard_inplace(std::span<float> x);
// Indexer QAT: Hadamard then FP4 (model-spec §4 IndexerQAT).
void indexer_qat(std::span<float> x);

}  // namespace ds4::backend::cpu

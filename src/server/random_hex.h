#pragma once
// Random lowercase hex for response and item ids (msg_, resp_, rs_, fc_, ...:
// reference-behavior §4.4). Ids only need to be unique, not secret.
#include <random>
#include <string>
#include <string_view>

namespace ds4::server {

inline std::string random_id(std::string_view prefix, size_t hex_digits) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(prefix);
  uint64_t bits = 0;
  for (size_t i = 0; i < hex_digits; ++i) {
    if (i % 16 == 0) bits = rng();
    out += kHex[bits & 15u];
    bits >>= 4;
  }
  return out;
}

}  // namespace ds4::server

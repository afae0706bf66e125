// Drives the quant library from Python tests:
//   quant_tool dequant TYPE in.bin out.f32          raw blocks -> float32
//   quant_tool quant TYPE in.f32 out.bin [imatrix.f32 [ROWLEN]]
// For `quant`, the input is split into rows of ROWLEN (default: whole file) so
// the per-column importance vector (ROWLEN floats) applies to every row.
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "quant/quant.h"
#include "util/error.h"

namespace {

std::vector<char> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) ds4::fail("cannot open '{}'", path);
  return {std::istreambuf_iterator<char>(f), {}};
}
void write_all(const std::string& path, const void* p, size_t n) {
  std::ofstream f(path, std::ios::binary);
  f.write(static_cast<const char*>(p), static_cast<std::streamsize>(n));
  if (!f) ds4::fail("cannot write '{}'", path);
}

int run(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: quant_tool dequant|quant TYPE IN OUT [IMATRIX [ROWLEN]]\n");
    return 2;
  }
  const std::string mode = argv[1];
  auto t = ds4::ggml_type_from_name(argv[2]);
  if (!t) ds4::fail("unknown type '{}'", argv[2]);
  const auto& ops = ds4::quant::require_ops(*t, argv[3]);
  const auto in = read_all(argv[3]);
  if (mode == "dequant") {
    if (in.size() % ops.block_bytes) ds4::fail("{}: size {} is not a multiple of {}", argv[3], in.size(), ops.block_bytes);
    const int64_t n = static_cast<int64_t>(in.size() / ops.block_bytes) * ops.block_size;
    std::vector<float> out(static_cast<size_t>(n));
    ds4::quant::dequantize_row(*t, in.data(), out.data(), n);
    write_all(argv[4], out.data(), out.size() * 4);
  } else if (mode == "quant") {
    const int64_t n = static_cast<int64_t>(in.size() / 4);
    std::vector<float> x(static_cast<size_t>(n));
    std::copy(in.begin(), in.end(), reinterpret_cast<char*>(x.data()));
    std::vector<float> imatrix;
    if (argc > 5) {
      const auto im = read_all(argv[5]);
      imatrix.resize(im.size() / 4);
      std::copy(im.begin(), im.end(), reinterpret_cast<char*>(imatrix.data()));
    }
    const int64_t rowlen = argc > 6 ? std::stoll(argv[6]) : n;
    if (rowlen <= 0 || n % rowlen) ds4::fail("row length {} does not divide {}", rowlen, n);
    if (!imatrix.empty() && static_cast<int64_t>(imatrix.size()) != rowlen)
      ds4::fail("imatrix has {} values, row length is {}", imatrix.size(), rowlen);
    const size_t rb = ds4::quant::row_bytes(*t, rowlen);
    std::vector<char> out(rb * static_cast<size_t>(n / rowlen));
    for (int64_t r = 0; r < n / rowlen; ++r)
      ds4::quant::quantize_row(*t, x.data() + r * rowlen, out.data() + static_cast<size_t>(r) * rb, rowlen,
                               imatrix.empty() ? nullptr : imatrix.data());
    write_all(argv[4], out.data(), out.size());
  } else {
    ds4::fail("unknown mode '{}'", mode);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const ds4::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}

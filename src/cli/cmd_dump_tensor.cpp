// `ds4 dump-tensor FILE.gguf NAME -o OUT`: the tensor as little-endian float32,
// dequantized through the type registry, ne0 fastest.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "cli/commands.h"
#include "gguf/gguf.h"
#include "quant/quant.h"
#include "util/error.h"

namespace ds4::cli {
namespace {

// Integer tensors (hash-routing tables) are dumped as float values; exact for
// magnitudes below 2^24.
bool convert_integer_row(const gguf::TensorInfo& t, const uint8_t* src, float* dst, int64_t n) {
  auto conv = [&](auto tag) {
    using T = decltype(tag);
    for (int64_t k = 0; k < n; ++k) {
      T v;
      std::memcpy(&v, src + k * static_cast<int64_t>(sizeof(T)), sizeof(T));
      dst[k] = static_cast<float>(v);
    }
  };
  switch (t.type) {
    case GgmlType::I8: conv(int8_t{}); return true;
    case GgmlType::I16: conv(int16_t{}); return true;
    case GgmlType::I32: conv(int32_t{}); return true;
    case GgmlType::I64: conv(int64_t{}); return true;
    case GgmlType::F64: conv(double{}); return true;
    default: return false;
  }
}

void run_dump(const std::string& path, const std::string& name, const std::string& out) {
  gguf::File f = gguf::File::open(path);
  const gguf::TensorInfo& t = f.tensor(name);
  const int64_t ne0 = t.ne.empty() ? 1 : t.ne[0];
  const int64_t rows = ne0 ? t.n_elements() / ne0 : 0;
  const size_t rb = ne0 ? t.nbytes / static_cast<size_t>(rows) : 0;
  const quant::TypeOps* ops = quant::find_ops(t.type);
  std::vector<float> row(static_cast<size_t>(ne0));
  if (!ops) {
    if (!convert_integer_row(t, t.data, row.data(), 0))
      fail("tensor '{}': type {} cannot be dequantized by this build", name, ggml_type_name(t.type));
  }
  const std::string tmp = out + ".tmp";
  FILE* fp = std::fopen(tmp.c_str(), "wb");
  if (!fp) fail("{}: cannot create: {}", tmp, std::strerror(errno));
  try {
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* src = t.data + static_cast<size_t>(r) * rb;
      if (ops)
        ops->dequantize_row(src, row.data(), ne0);
      else
        convert_integer_row(t, src, row.data(), ne0);
      if (std::fwrite(row.data(), sizeof(float), row.size(), fp) != row.size())
        fail("{}: write failed: {}", out, std::strerror(errno));
    }
    if (std::fclose(fp) != 0) {
      fp = nullptr;
      fail("{}: write failed: {}", out, std::strerror(errno));
    }
    fp = nullptr;
    if (std::rename(tmp.c_str(), out.c_str()) != 0) fail("{}: cannot rename from {}: {}", out, tmp, std::strerror(errno));
  } catch (...) {
    if (fp) std::fclose(fp);
    std::remove(tmp.c_str());
    throw;
  }
  std::fprintf(stderr, "ds4: wrote %s: %lld float32 values (%s %s)\n", out.c_str(),
               static_cast<long long>(t.n_elements()), std::string(ggml_type_name(t.type)).c_str(),
               t.shape_string().c_str());
}

}  // namespace

const Registration kRegistration{"dump-tensor", 110, [](CLI::App& app) {
  auto* sub = app.add_subcommand("dump-tensor", "Write one tensor as little-endian float32 (ne0 fastest)");
  static std::string path, name, out;
  sub->add_option("file", path, "GGUF file")->required();
  sub->add_option("name", name, "Tensor name")->required();
  sub->add_option("-o,--output", out, "Output file")->required();
  sub->callback([] { run_dump(path, name, out); });
}};

}  // namespace ds4::cli

// st_dump PATH                -> JSON {name: {dtype, shape, file}} of a checkpoint
// st_dump PATH NAME OUT.f32   -> that tensor converted to float32
// Used by tests/py/test_safetensors.py to check our reader against the
// safetensors package.
#include <nlohmann/json.hpp>

#include <cstdio>

#include "gguf/safetensors.h"
#include "util/error.h"

int main(int argc, char** argv) {
  if (argc != 2 && argc != 4) {
    std::fprintf(stderr, "usage: st_dump PATH [NAME OUT.f32]\n");
    return 2;
  }
  try {
    auto ck = ds4::safetensors::Checkpoint::open(argv[1]);
    if (argc == 2) {
      nlohmann::json j = nlohmann::json::object();
      for (const auto& n : ck.names()) {
        const auto& t = ck.get(n);
        j[n] = {{"dtype", ds4::safetensors::dtype_name(t.dtype)}, {"shape", t.shape}, {"file", t.file}};
      }
      std::printf("%s\n", j.dump().c_str());
      return 0;
    }
    auto v = ck.get(argv[2]).to_f32();
    FILE* f = std::fopen(argv[3], "wb");
    if (!f || std::fwrite(v.data(), 4, v.size(), f) != v.size()) {
      std::fprintf(stderr, "st_dump: cannot write %s\n", argv[3]);
      return 1;
    }
    std::fclose(f);
  } catch (const ds4::Error& e) {
    std::fprintf(stderr, "st_dump: %s\n", e.what());
    return 1;
  }
  return 0;
}

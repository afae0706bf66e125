// gguf_copy IN OUT: reads IN with our reader and writes it again with our writer
// (same metadata order and types, same alignment, same tensor order). The
// interop tests compare OUT against files written by gguf-py.
#include <cstdio>

#include "gguf/gguf.h"
#include "util/error.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: gguf_copy IN.gguf OUT.gguf\n");
    return 2;
  }
  try {
    ds4::gguf::File in = ds4::gguf::File::open(argv[1]);
    ds4::gguf::Writer out(32);
    for (const auto& [k, v] : in.metadata()) out.set(k, v);
    for (const auto& t : in.tensors()) out.add_tensor_info(t.name, t.type, t.ne);
    out.begin(argv[2]);
    for (const auto& t : in.tensors()) out.write_tensor_data(t.name, {t.data, t.nbytes});
    out.finish();
  } catch (const ds4::Error& e) {
    std::fprintf(stderr, "gguf_copy: %s\n", e.what());
    return 1;
  }
  return 0;
}

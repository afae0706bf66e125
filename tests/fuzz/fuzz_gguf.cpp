// libFuzzer target for the GGUF parser: any byte string must either parse into a
// File whose views stay inside the input, or raise ds4::Error. Anything else
// (crash, sanitizer report, other exception, hang) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "gguf/gguf.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    ds4::gguf::File f = ds4::gguf::parse({data, size}, "fuzz.gguf");
    volatile uint64_t sink = 0;
    for (const auto& [k, v] : f.metadata()) sink = sink + v.to_string().size() + k.size();
    for (const auto& t : f.tensors()) {
      if (t.nbytes == 0) continue;
      if (t.data < data || t.data + t.nbytes > data + size) std::abort();  // view escapes the input
      sink = sink + t.data[0] + t.data[t.nbytes - 1];
    }
    (void)sink;
  } catch (const ds4::Error&) {
  }
  return 0;
}

#include <algorithm>
#include <random>

#include "chat/chat.h"
#include "util/error.h"

namespace ds4::chat {

IdGenerator::IdGenerator(IdStyle style, std::function<void(uint8_t*)> random16,
                         std::function<bool(const std::string&)> taken)
    : style_(style), random16_(std::move(random16)), taken_(std::move(taken)) {
  if (!random16_) {
    random16_ = [](uint8_t* out) {
      std::random_device rd;  // /dev/urandom on Linux, as ds4 uses
      for (int i = 0; i < 16; i += 4) {
        uint32_t v = rd();
        for (int k = 0; k < 4; ++k) out[i + k] = static_cast<uint8_t>(v >> (8 * k));
      }
    };
  }
}

std::string IdGenerator::next() {
  static const char* hex = "0123456789abcdef";
  // A broken random source must not hang the server.
  for (int attempt = 0; attempt < 64; ++attempt) {
    uint8_t bytes[16];
    random16_(bytes);
    std::string id = style_ == IdStyle::OpenAI ? "call_" : "toolu_";
    for (uint8_t b : bytes) {
      id += hex[b >> 4];
      id += hex[b & 15];
    }
    bool dup = std::find(issued_.begin(), issued_.end(), id) != issued_.end() || (taken_ && taken_(id));
    if (dup) continue;
    issued_.push_back(id);
    return id;
  }
  fail("tool-call id generator: random source keeps repeating ids");
}

}  // namespace ds4::chat

#pragma once
// Hugging Face tokenizer.json -> GGUF tokenizer metadata, written the way
// llama.cpp's convert_hf_to_gguf.py writes it for DeepSeek models, so files made
// by `ds4 convert`/`ds4 synth` and by llama.cpp load the same way.
#include <string>
#include <utility>
#include <vector>

#include "gguf/gguf.h"

namespace ds4::tokenizer {
// GGUF metadata (tokenizer.ggml.*) for a Hugging Face tokenizer.json.
std::vector<std::pair<std::string, gguf::Value>> gguf_metadata_from_hf(const std::string& tokenizer_json_path);
}  // namespace ds4::tokenizer

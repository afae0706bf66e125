#pragma once
// Official DeepSeek V4 safetensors checkpoint (plus config.json) -> deepseek4 GGUF.
#include <cstdint>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "gguf/safetensors.h"
#include "model/config.h"
#include "util/ggml_type.h"

namespace ds4::model {

struct ConvertOptions {
  std::string hf_dir;          // holds config.json and the safetensors (sharded or not)
  std::string output;          // .gguf path
  std::string recipe = "f16";  // f32, f16, bf16, q8_0, ds4-q2, ds4-q4
  std::string tokenizer_json;  // optional: embed tokenizer.ggml.* metadata
};

void convert(const ConvertOptions& opt);

// config.json of the official release or of transformers' DeepseekV4Config.
ModelConfig config_from_hf_json(const std::string& config_json_path);

// Adds the tokenizer.ggml.* metadata of a Hugging Face tokenizer.json to `w`
// (used by convert and synth). Throws when the tokenizer has more tokens than
// the model's vocabulary: those ids would index past the embedding and output
// head. Fewer tokens is fine (a padded vocabulary, as in DeepSeek V3's 128815
// tokens for 129280 rows).
void embed_tokenizer(gguf::Writer& w, const ModelConfig& c, const std::string& tokenizer_json);

// The recipes `ds4 convert --recipe` knows, for --help and error messages.
const std::vector<std::string>& recipe_names();

// Tensor type a recipe picks for a GGUF tensor of shape `ne`, after falling back
// (with a log line) to a type whose block divides ne[0] and that can be produced.
GgmlType recipe_type(const std::string& recipe, const std::string& gguf_name, const std::vector<int64_t>& ne);

// A source tensor as float in torch order, applying block scales when the
// checkpoint stores FP8 e4m3 or FP4 e2m1 weights with a companion scale tensor
// (`<base>.scale` or `<base>.weight_scale_inv`): each scale covers a block of
// ceil(rows/scale_rows) x ceil(cols/scale_cols) elements (128x128 for FP8,
// 1x32 for FP4). FP4 may be packed as I8/U8 [rows, cols/2], low nibble first.
std::vector<float> load_source_f32(const safetensors::Checkpoint& ck, const std::string& name,
                                   std::vector<int64_t>* torch_shape);

}  // namespace ds4::model

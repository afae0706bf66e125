// `ds4 convert HF_DIR -o OUT.gguf --recipe R [--tokenizer tokenizer.json]`
#include <fmt/ranges.h>

#include "cli/commands.h"
#include "model/convert.h"

namespace ds4::cli {
namespace {

Registration reg("convert", 30, [](CLI::App& app) {
  auto opt = std::make_shared<model::ConvertOptions>();
  CLI::App* sub = app.add_subcommand("convert", "Convert a DeepSeek V4 safetensors checkpoint to GGUF");
  sub->add_option("hf_dir", opt->hf_dir, "Folder with config.json and the safetensors")->required();
  sub->add_option("-o,--output", opt->output, "Output .gguf")->required();
  sub->add_option("--recipe", opt->recipe,
                  fmt::format("Tensor types: {} (default f16)", fmt::join(model::recipe_names(), ", ")));
  sub->add_option("--tokenizer", opt->tokenizer_json, "tokenizer.json to embed");
  sub->callback([opt] { model::convert(*opt); });
});

}  // namespace
}  // namespace ds4::cli

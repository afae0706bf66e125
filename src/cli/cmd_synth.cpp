// `ds4 synth --shape tiny|flash|pro|CONFIG.json [--layers N] --recipe R
//  [--tokenizer F] [--seed S] [--header-only] -o OUT.gguf`
#include <fmt/ranges.h>

#include "cli/commands.h"
#include "model/convert.h"
#include "model/synth.h"

namespace ds4::cli {
namespace {

Registration reg("synth", 40, [](CLI::App& app) {
  auto o = std::make_shared<model::SynthOptions>();
  CLI::App* sub = app.add_subcommand("synth", "Write a random-weight model of any shape");
  sub->add_option("--shape", o->shape, "tiny, flash, pro, or a config.json");
  sub->add_option("--layers", o->layers, "Keep only the first N layers");
  sub->add_option("--recipe", o->recipe, fmt::format("Tensor types: {}", fmt::join(model::recipe_names(), ", ")));
  sub->add_option("--tokenizer", o->tokenizer_json, "tokenizer.json to embed");
  sub->add_option("--seed", o->seed, "Random seed");
  sub->add_option("-t,--threads", o->threads, "Generator threads (0: all cores); the file does not depend on it");
  sub->add_option("-o,--output", o->output, "Output .gguf")->required();
  sub->add_flag("--header-only", o->header_only,
                "Write only the metadata and tensor directory; the weights are a hole of zeros (for ds4 plan, ds4 info)");
  sub->callback([o] { model::synth(*o); });
});

}  // namespace
}  // namespace ds4::cli

// `ds4 logits -m MODEL.gguf --tokens 1,2,3 [--numerics exact|faithful] [--chunk N]
//  [--backend cpu|cuda] -o OUT.f32`: float32 logits of every position, [S, vocab] row-major.
#include <fmt/format.h>

#include <cstdio>
#include <memory>
#include <sstream>

#include "backend/backend.h"
#include "cli/placement_flags.h"
#include "cli/commands.h"
#include "util/error.h"

namespace ds4::cli {
namespace {

struct Opts {
  std::string model, tokens, output, numerics = "exact", backend = "cpu";
  int64_t chunk = 0;  // 0: the whole sequence in one call
  int threads = 0;
  ExpertFlags experts;
};

std::vector<int32_t> parse_tokens(const std::string& s) {
  std::vector<int32_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) fail("--tokens: empty entry in '{}'", s);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || v < 0 || v > 0x7fffffff) fail("--tokens: '{}' is not a token id", item);
    out.push_back(static_cast<int32_t>(v));
  }
  if (out.empty()) fail("--tokens: no token ids given");
  return out;
}

void run(const Opts& o) {
  const std::vector<int32_t> toks = parse_tokens(o.tokens);
  const backend::NumericsMode mode = backend::parse_numerics(o.numerics);
  if (o.chunk < 0) fail("--chunk must be >= 0");
  auto model = model::Model::load(o.model);
  backend::BackendOptions bo;
  bo.threads = o.threads;
  bo.device_expert_layers = device_expert_layers(o.experts);
  auto be = backend::make_backend(o.backend, model, bo);
  auto session = be->new_session({mode, static_cast<int64_t>(toks.size())});
  const size_t V = model->config.n_vocab, S = toks.size();
  std::vector<float> logits(S * V);
  const size_t chunk = o.chunk > 0 ? static_cast<size_t>(o.chunk) : S;
  for (size_t b = 0; b < S; b += chunk) {
    const size_t e = std::min(S, b + chunk);
    be->forward(*session, std::span<const int32_t>(toks.data() + b, e - b), std::span<float>(logits.data() + b * V, (e - b) * V));
  }
  std::FILE* f = std::fopen(o.output.c_str(), "wb");
  if (!f) fail("{}: cannot open for writing", o.output);
  const size_t wrote = std::fwrite(logits.data(), sizeof(float), logits.size(), f);
  if (std::fclose(f) != 0 || wrote != logits.size()) fail("{}: write failed", o.output);
}

Registration reg("logits", 50, [](CLI::App& app) {
  auto o = std::make_shared<Opts>();
  CLI::App* sub = app.add_subcommand("logits", "Write float32 logits [tokens, vocab] for a token sequence");
  sub->add_option("-m,--model", o->model, "Model .gguf")->required();
  sub->add_option("--tokens", o->tokens, "Comma-separated token ids")->required();
  sub->add_option("-o,--output", o->output, "Output file (float32, row-major [S, vocab])")->required();
  sub->add_option("--numerics", o->numerics, "exact (float reference) or faithful (FP8/FP4 QAT simulation)");
  sub->add_option("--chunk", o->chunk, "Feed the sequence in chunks of N tokens (1 = token-by-token decode)");
  sub->add_option("--backend", o->backend, "cpu (default) or cuda (builds with CUDA)");
  add_expert_flags(sub, o->experts);
  sub->add_option("-t,--threads", o->threads, "CPU threads (0: all)");
  sub->callback([o] { run(*o); });
});

}  // namespace
}  // namespace ds4::cli

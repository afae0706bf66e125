#include "engine/engine.h"

#include <cmath>
#include <filesystem>

#include "util/error.h"
#include "util/log.h"

namespace ds4::engine {
namespace {

std::shared_ptr<model::Model> load_model(const std::string& path) {
  // A clearer message than the GGUF reader's open() error for the most common
  // mistake: a wrong -m path.
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) fail("model file '{}' does not exist", path);
  return model::Model::load(path);
}

tokenizer::Tokenizer load_tokenizer(const model::Model& m, const std::string& path) {
  if (!m.file->find("tokenizer.ggml.tokens"))
    fail("{}: the GGUF has no tokenizer (tokenizer.ggml.* metadata); it cannot generate text", path);
  tokenizer::Tokenizer t = tokenizer::Tokenizer::from_gguf(*m.file);
  // A token id past the embedding table would read outside the weights.
  if (t.vocab_size() > m.config.n_vocab)
    fail("{}: the tokenizer has {} tokens but the model's vocabulary is {}", path, t.vocab_size(), m.config.n_vocab);
  return t;
}

}  // namespace

Engine::Engine(const EngineOptions& opt)
    : model_(load_model(opt.model_path)),
      backend_(backend::make_backend(opt.backend, model_, backend::BackendOptions{opt.threads})),
      tok_(load_tokenizer(*model_, opt.model_path)),
      numerics_(opt.numerics),
      steering_(opt.steering) {
  if (!std::isfinite(opt.steering.attn) || !std::isfinite(opt.steering.ffn))
    fail("steering scales must be finite (attn {}, ffn {})", opt.steering.attn, opt.steering.ffn);
  if (opt.steering_file.empty() && opt.steering.active())
    fail("a steering scale (attn {}, ffn {}) needs --dir-steering-file", opt.steering.attn, opt.steering.ffn);
  if (!opt.steering_file.empty()) {
    backend_->set_steering(std::make_shared<const model::SteeringVectors>(
        model::SteeringVectors::load(opt.steering_file, model_->config)));
    log::info("directional steering enabled: {} attn={} ffn={}", opt.steering_file, opt.steering.attn,
              opt.steering.ffn);
  }
  auto need = [&](std::string_view s) {
    auto id = tok_.find_special(s);
    if (!id) fail("{}: the tokenizer lacks the DS4 special token '{}'", opt.model_path, s);
    return static_cast<int32_t>(*id);
  };
  ids_.bos = need("<｜begin▁of▁sentence｜>");
  ids_.eos = need("<｜end▁of▁sentence｜>");
  ids_.user = need("<｜User｜>");
  ids_.assistant = need("<｜Assistant｜>");
  ids_.think_open = need("<think>");
  ids_.think_close = need("</think>");
}

}  // namespace ds4::engine

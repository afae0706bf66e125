#include "engine/engine.h"

#include <cctype>
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

bool valid_steering_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char ch : name)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '_' && ch != '-') return false;
  return true;
}

const SteeringSet* Engine::steering_set(std::string_view name) const {
  for (const auto& s : steering_sets_)
    if (s.name == name) return &s;
  return nullptr;
}

Engine::Engine(const EngineOptions& opt)
    : model_(load_model(opt.model_path)),
      backend_(backend::make_backend(opt.backend, model_, backend::BackendOptions{opt.threads, opt.profile, opt.device_expert_layers})),
      tok_(load_tokenizer(*model_, opt.model_path)),
      numerics_(opt.numerics),
      steering_(opt.steering) {
  if (!std::isfinite(opt.steering.attn) || !std::isfinite(opt.steering.ffn))
    fail("steering scales must be finite (attn {}, ffn {})", opt.steering.attn, opt.steering.ffn);
  if (opt.steering_file.empty() && opt.steering.active())
    fail("a steering scale (attn {}, ffn {}) needs --dir-steering-file", opt.steering.attn, opt.steering.ffn);
  if (!opt.steering_file.empty()) {
    auto v = std::make_shared<const model::SteeringVectors>(model::SteeringVectors::load(opt.steering_file, model_->config));
    backend_->set_steering(v);
    steering_.dirs = v.get();
    steering_sets_.push_back({"default", v, steering_});
    log::info("directional steering enabled: {} attn={} ffn={}", opt.steering_file, opt.steering.attn,
              opt.steering.ffn);
  }
  for (const auto& nv : opt.steering_vectors) {
    if (!valid_steering_name(nv.name))
      fail("steering vector name '{}' (for {}): use 1 to 64 letters, digits, '.', '_' or '-'", nv.name, nv.file);
    if (nv.name == "default")
      fail("steering vector name 'default' (for {}) is the --dir-steering-file set; choose another name", nv.file);
    if (steering_set(nv.name)) fail("steering vector '{}' is given twice", nv.name);
    auto v = std::make_shared<const model::SteeringVectors>(model::SteeringVectors::load(nv.file, model_->config));
    backend_->add_steering(v);
    std::optional<backend::Steering> scales;
    if (auto r = v->recommended_scales()) scales = backend::Steering{r->attn, r->ffn, v.get()};
    steering_sets_.push_back({nv.name, v, scales});
    if (scales)
      log::info("steering vector '{}': {} (recommended attn={} ffn={})", nv.name, nv.file, scales->attn, scales->ffn);
    else
      log::info("steering vector '{}': {} (no recommended scales: requests must give theirs)", nv.name, nv.file);
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

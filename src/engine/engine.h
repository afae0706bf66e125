#pragma once
// An Engine is one loaded model ready to generate: the mapped weights, the
// backend that runs them and the tokenizer stored in the same GGUF. Sessions
// (conversations) are created from it and borrow its backend.
#include <cstdint>
#include <memory>
#include <string>

#include "backend/backend.h"
#include "engine/session.h"
#include "model/weights.h"
#include "tokenizer/tokenizer.h"

namespace ds4::engine {

struct EngineOptions {
  std::string model_path;
  std::string backend = "cpu";
  int threads = 0;  // 0: hardware concurrency
  backend::NumericsMode numerics = backend::NumericsMode::faithful;
  // Directional steering (docs/steering.md): the direction file and the
  // scales every session starts with. Non-zero scales need a file.
  std::string steering_file;
  backend::Steering steering;
};

// Ids of the DS4 special tokens the generation loop and prompts need.
struct SpecialIds {
  int32_t bos = -1, eos = -1, user = -1, assistant = -1, think_open = -1, think_close = -1;
};

class Engine {
 public:
  // Throws ds4::Error for a missing/bad file, a GGUF without tokenizer, or a
  // tokenizer whose ids do not fit the model's vocabulary.
  explicit Engine(const EngineOptions& opt);

  const model::Model& model() const { return *model_; }
  const backend::Backend& backend() const { return *backend_; }
  const tokenizer::Tokenizer& tokenizer() const { return tok_; }
  const SpecialIds& specials() const { return ids_; }
  backend::NumericsMode numerics() const { return numerics_; }
  // A session that holds up to ctx_size tokens; its memory is taken now
  // (throws ds4::Error with the figures when the backend cannot hold it).
  std::unique_ptr<Session> new_session(int64_t ctx_size) const {
    auto s = std::make_unique<Session>(*backend_, backend::SessionOptions{numerics_, ctx_size});
    s->set_steering(steering_);
    return s;
  }
  const backend::Steering& default_steering() const { return steering_; }

 private:
  std::shared_ptr<model::Model> model_;
  std::unique_ptr<backend::Backend> backend_;
  tokenizer::Tokenizer tok_;
  SpecialIds ids_;
  backend::NumericsMode numerics_;
  backend::Steering steering_;
};

}  // namespace ds4::engine

#pragma once
// An Engine is one loaded model ready to generate: the mapped weights, the
// backend that runs them and the tokenizer stored in the same GGUF. Sessions
// (conversations) are created from it and borrow its backend.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "backend/backend.h"
#include "engine/session.h"
#include "model/weights.h"
#include "tokenizer/tokenizer.h"

namespace ds4::engine {

struct EngineOptions {
  std::string model_path;
  std::string backend = "cpu";
  int threads = 0;  // 0: hardware concurrency
  bool profile = false;  // backend::BackendOptions::profile
  int device_expert_layers = -1;  // backend::BackendOptions::device_expert_layers
  backend::NumericsMode numerics = backend::NumericsMode::faithful;
  // Directional steering (docs/steering.md): the direction file and the
  // scales every session starts with. Non-zero scales need a file.
  std::string steering_file;
  backend::Steering steering;
  // More direction sets, by name, that a server request may choose
  // (ds4 serve --dir-steering-vector NAME=FILE). `steering_file` is the set
  // named "default".
  struct NamedSteering {
    std::string name, file;
  };
  std::vector<NamedSteering> steering_vectors;
};

// A direction set requests may name (docs/steering.md), registered with the
// engine's backend.
struct SteeringSet {
  std::string name;  // "default" for EngineOptions::steering_file
  std::shared_ptr<const model::SteeringVectors> dirs;
  // What a request naming the set without scales gets: for "default" the
  // engine's own scales, for the others the scales their metadata recommends
  // (recommended_scales); none: the request must give its own. `dirs` set.
  std::optional<backend::Steering> scales;
};

// Names a request may use for a direction set: 1 to 64 of [A-Za-z0-9._-].
bool valid_steering_name(std::string_view name);

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
  // The scales every session starts with; `dirs` is the default set when
  // there is one (so it compares equal to a request naming "default").
  const backend::Steering& default_steering() const { return steering_; }
  // Every loaded direction set, "default" first when there is one.
  const std::vector<SteeringSet>& steering_sets() const { return steering_sets_; }
  const SteeringSet* steering_set(std::string_view name) const;

 private:
  std::shared_ptr<model::Model> model_;
  std::unique_ptr<backend::Backend> backend_;
  tokenizer::Tokenizer tok_;
  SpecialIds ids_;
  backend::NumericsMode numerics_;
  backend::Steering steering_;
  std::vector<SteeringSet> steering_sets_;
};

}  // namespace ds4::engine

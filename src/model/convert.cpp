// `ds4 convert`: plan every GGUF tensor from the config (the same list the
// loader binds), find its source in the official layout, and stream it out.
#include "model/convert.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "gguf/gguf.h"
#include "model/tensor_specs.h"
#include "quant/quant.h"
#include "util/error.h"
#include "util/log.h"

#include "tokenizer/hf_import.h"

namespace ds4::model {
namespace {

struct PlanTensor {
  std::string gguf_name;
  std::vector<int64_t> ne;           // GGUF order
  std::vector<std::string> sources;  // one, or one per expert (stacked on ne[2])
  bool int_table = false;            // tid2eid: I64/I32 ids -> I32
  GgmlType type = GgmlType::F32;
};

bool ends_with(const std::string& s, std::string_view suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

// Checkpoints name tensors `embed.weight` (official) or `model.embed_tokens.weight`
// (transformers' save of the same layout); match ignoring the `model.` prefix.
class SourceIndex {
 public:
  explicit SourceIndex(const safetensors::Checkpoint& ck) {
    for (const auto& n : ck.names()) by_stripped_[n.rfind("model.", 0) == 0 ? n.substr(6) : n] = n;
  }
  // First candidate present, or "" when none is.
  std::string find(const std::vector<std::string>& candidates) {
    for (const auto& c : candidates) {
      auto it = by_stripped_.find(c);
      if (it != by_stripped_.end()) {
        used_.insert(it->second);
        return it->second;
      }
    }
    return "";
  }
  std::vector<std::string> unused() const {
    std::vector<std::string> out;
    for (const auto& [k, n] : by_stripped_)
      if (!used_.count(n)) out.push_back(n);
    return out;
  }

 private:
  std::map<std::string, std::string> by_stripped_;
  std::set<std::string> used_;
};

bool is_vector_tensor(const std::string& n, const std::vector<int64_t>& ne) {
  return ne.size() == 1 || ends_with(n, "norm.weight") || ends_with(n, "_scale.weight") || ends_with(n, "_base.weight") ||
         ends_with(n, ".bias") || ends_with(n, "sinks.weight");
}

// Tensors ds4 keeps in F16 in its quantized files (model-spec §3 validated types).
bool is_f16_tensor(const std::string& n) {
  return n == "token_embd.weight" || n.find("hc_") != std::string::npos || n.find("compressor") != std::string::npos ||
         n.find("indexer") != std::string::npos || ends_with(n, "ffn_gate_inp.weight");
}

// The plan is the loader's tensor table (tensor_specs) with each tensor's
// source found in the checkpoint.
std::vector<PlanTensor> make_plan(const ModelConfig& c, SourceIndex& src) {
  std::vector<PlanTensor> plan;
  for (const TensorSpec& t : tensor_specs(c)) {
    PlanTensor p{t.name, t.ne, {}, t.role == TensorRole::tid2eid, GgmlType::F32};
    if (t.per_expert) {
      for (int64_t e = 0; e < t.ne[2]; ++e) {
        const std::string cand = fmt::format(fmt::runtime(t.sources[0]), e);
        std::string s = src.find({cand});
        if (s.empty()) fail("convert: checkpoint has no tensor '{}' for '{}'", cand, t.name);
        p.sources.push_back(s);
      }
    } else {
      std::string s = src.find(t.sources);
      if (s.empty()) {
        if (!t.required) continue;
        fail("convert: checkpoint has no tensor for '{}' (looked for: {})", t.name, fmt::join(t.sources, ", "));
      }
      p.sources.push_back(s);
    }
    plan.push_back(std::move(p));
  }
  return plan;
}

bool producible(GgmlType t, int64_t row) {
  const quant::TypeOps* o = quant::find_ops(t);
  return o && o->quantize_row && row % o->block_size == 0;
}

GgmlType fallback(GgmlType t) {
  switch (t) {
    case GgmlType::IQ2_XXS:
    case GgmlType::Q2_K:
    case GgmlType::Q4_K:
    case GgmlType::Q6_K: return GgmlType::Q8_0;
    case GgmlType::Q8_0: return GgmlType::F16;
    default: return GgmlType::F32;
  }
}

// Scale tensors of block-scaled weights are consumed with their weight.
bool is_scale_companion(const std::string& n) { return ends_with(n, ".scale") || ends_with(n, "_scale_inv"); }

std::vector<uint8_t> int_table_bytes(const safetensors::Checkpoint& ck, const PlanTensor& p) {
  const safetensors::Tensor& t = ck.get(p.sources[0]);
  const std::vector<int64_t> want = {p.ne[1], p.ne[0]};
  if (t.shape != want)
    fail("convert: tensor '{}' (for '{}') has shape {}, expected [{}]", t.name, p.gguf_name, t.shape_string(), fmt::join(want, ", "));
  const std::vector<float> ids = t.to_f32();  // ids < 2^24, exact in float
  std::vector<uint8_t> out(ids.size() * 4);
  for (size_t k = 0; k < ids.size(); ++k) {
    const auto v = static_cast<int32_t>(ids[k]);
    std::memcpy(out.data() + 4 * k, &v, 4);
  }
  return out;
}

// The GGUF bytes of source s of p: the whole tensor, or one expert's slice of
// a stacked expert tensor (so experts stream out one at a time and the whole
// stacked tensor, gigabytes at Flash size, is never held in memory).
std::vector<uint8_t> source_bytes(const safetensors::Checkpoint& ck, const PlanTensor& p, size_t s) {
  const int64_t cols = p.ne[0];
  const size_t rb = quant::row_bytes(p.type, cols);
  std::vector<int64_t> shape;
  std::vector<float> v = load_source_f32(ck, p.sources[s], &shape);
  // torch shape is the reverse of the GGUF shape (per expert for stacked ones).
  std::vector<int64_t> want(p.ne.begin(), p.ne.begin() + (p.sources.size() > 1 ? 2 : static_cast<long>(p.ne.size())));
  std::reverse(want.begin(), want.end());
  if (shape != want)
    fail("convert: tensor '{}' (for '{}') has shape [{}], expected [{}]", p.sources[s], p.gguf_name, fmt::join(shape, ", "),
         fmt::join(want, ", "));
  const int64_t rows = static_cast<int64_t>(v.size()) / cols;
  std::vector<uint8_t> out(rb * static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r)
    quant::quantize_row(p.type, v.data() + r * cols, out.data() + static_cast<size_t>(r) * rb, cols);
  return out;
}

}  // namespace

void embed_tokenizer(gguf::Writer& w, const ModelConfig& c, const std::string& source) {
  auto md = tokenizer::gguf_metadata_from_hf(source);
  for (const auto& [k, v] : md) {
    if (k != "tokenizer.ggml.tokens") continue;
    const size_t n = v.items.size();
    if (n > c.n_vocab)
      fail("tokenizer {} has {} tokens but the model's vocabulary (vocab_size) is {}: token ids {}..{} would have no "
           "embedding row", source, n, c.n_vocab, c.n_vocab, n - 1);
    if (n < c.n_vocab) log::info("tokenizer {} has {} tokens for a vocabulary of {} (padded rows unused)", source, n, c.n_vocab);
  }
  for (auto& [k, v] : md) w.set(k, std::move(v));
}

const std::vector<std::string>& recipe_names() {
  static const std::vector<std::string> r = {"f32", "f16", "bf16", "q8_0", "ds4-q2", "ds4-q4"};
  return r;
}

GgmlType recipe_type(const std::string& recipe, const std::string& n, const std::vector<int64_t>& ne) {
  if (std::find(recipe_names().begin(), recipe_names().end(), recipe) == recipe_names().end())
    fail("convert: unknown recipe '{}' (known: {})", recipe, fmt::join(recipe_names(), ", "));
  GgmlType t;
  const bool expert = n.find("_exps.") != std::string::npos;
  if (is_vector_tensor(n, ne) || recipe == "f32")
    t = GgmlType::F32;
  else if (recipe == "f16")
    t = GgmlType::F16;
  else if (recipe == "bf16")
    t = GgmlType::BF16;
  else if (is_f16_tensor(n))
    t = GgmlType::F16;
  else if (expert && recipe == "ds4-q2")
    t = n.find("down") != std::string::npos ? GgmlType::Q2_K : GgmlType::IQ2_XXS;
  else if (expert && recipe == "ds4-q4")
    t = GgmlType::Q4_K;
  else
    t = GgmlType::Q8_0;
  const GgmlType wanted = t;
  while (!producible(t, ne[0])) t = fallback(t);
  if (t != wanted)
    log::info("convert: {} {}: {} not possible here (row {} or no quantizer), using {}", n, fmt::format("[{}]", fmt::join(ne, ", ")),
              ggml_type_name(wanted), ne[0], ggml_type_name(t));
  return t;
}

void convert(const ConvertOptions& opt) {
  namespace fs = std::filesystem;
  const auto t0 = std::chrono::steady_clock::now();
  const std::string cfg_path = (fs::path(opt.hf_dir) / "config.json").string();
  if (!fs::exists(cfg_path)) fail("convert: {} has no config.json", opt.hf_dir);
  ModelConfig c = config_from_hf_json(cfg_path);
  safetensors::Checkpoint ck = safetensors::Checkpoint::open(opt.hf_dir);
  SourceIndex src(ck);
  std::vector<PlanTensor> plan = make_plan(c, src);
  for (auto& p : plan) p.type = p.int_table ? GgmlType::I32 : recipe_type(opt.recipe, p.gguf_name, p.ne);
  for (const auto& n : src.unused())
    if (!is_scale_companion(n)) log::info("convert: ignoring checkpoint tensor '{}'", n);

  gguf::Writer w;
  for (auto& [k, v] : c.to_metadata()) w.set(k, std::move(v));
  w.set("general.name", gguf::Value::str(fs::path(opt.hf_dir).filename().string()));
  w.set("general.file_type_recipe", gguf::Value::str(opt.recipe));
  if (!opt.tokenizer_json.empty()) embed_tokenizer(w, c, opt.tokenizer_json);
  for (const auto& p : plan) w.add_tensor_info(p.gguf_name, p.type, p.ne);
  w.begin(opt.output);
  size_t done = 0;
  for (const auto& p : plan) {
    if (p.int_table)
      w.write_tensor_data(p.gguf_name, int_table_bytes(ck, p));
    else
      for (size_t s = 0; s < p.sources.size(); ++s) w.write_tensor_chunk(p.gguf_name, source_bytes(ck, p, s));
    ++done;
    log::info("[{}/{}] {} {} {}", done, plan.size(), p.gguf_name, ggml_type_name(p.type), fmt::format("[{}]", fmt::join(p.ne, ", ")));
  }
  w.finish();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log::info("convert: wrote {} ({} tensors, recipe {}) in {:.1f} s", opt.output, plan.size(), opt.recipe, s);
}

}  // namespace ds4::model

#include "tokenizer/hf_import.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>

#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace ds4::tokenizer {

namespace {

using nlohmann::json;

json read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open tokenizer file '{}'", path);
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    fail("{}: invalid JSON: {}", path, e.what());
  }
}

// The regex list of a DeepSeek-style pre_tokenizer: Split(Isolated) steps
// followed by a ByteLevel step that does no splitting of its own.
std::vector<std::string> split_patterns(const json& pre, const std::string& path) {
  if (!pre.is_object()) fail("{}: 'pre_tokenizer' is missing", path);
  std::vector<json> steps;
  if (pre.value("type", "") == "Sequence")
    for (const auto& s : pre.at("pretokenizers")) steps.push_back(s);
  else
    steps.push_back(pre);
  std::vector<std::string> patterns;
  for (const auto& s : steps) {
    const std::string type = s.value("type", "");
    if (type == "Split" && s.value("behavior", "") == "Isolated" && !s.value("invert", false) &&
        s.contains("pattern") && s["pattern"].contains("Regex")) {
      patterns.push_back(s["pattern"]["Regex"].get<std::string>());
    } else if (type == "ByteLevel" && !s.value("use_regex", true) && !s.value("add_prefix_space", false)) {
      // maps bytes to the byte-level alphabet only; BPE does that itself
    } else {
      fail("{}: unsupported pre-tokenizer step {}", path, s.dump());
    }
  }
  return patterns;
}

// convert_hf_to_gguf.py marks added tokens that are not flagged special but
// are spelled like control tokens as CONTROL too (does_token_look_special).
bool looks_special(const std::string& t) {
  auto wrapped = [&](std::string_view open, std::string_view close) {
    return t.size() >= open.size() + close.size() && t.starts_with(open) && t.ends_with(close);
  };
  return wrapped("<|", "|>") || wrapped("<\xef\xbd\x9c", "\xef\xbd\x9c>");  // <| |> and <｜ ｜>
}

std::optional<std::string> config_token(const json& cfg, const char* key) {
  if (!cfg.contains(key)) return std::nullopt;
  const json& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return std::nullopt;
}

}  // namespace

std::vector<std::pair<std::string, gguf::Value>> gguf_metadata_from_hf(const std::string& tokenizer_json_path) {
  const std::string& path = tokenizer_json_path;
  const json j = read_json(path);
  try {
    const json& model = j.at("model");
    if (model.value("type", "") != "BPE") fail("{}: model type '{}' is not BPE", path, model.value("type", ""));
    if (model.value("byte_fallback", false)) fail("{}: byte_fallback BPE is not supported", path);
    if (model.value("ignore_merges", false)) fail("{}: ignore_merges BPE is not supported", path);
    if (j.contains("normalizer") && j["normalizer"].is_object()) {
      const json& n = j["normalizer"];
      if (!(n.value("type", "") == "Sequence" && n.value("normalizers", json::array()).empty()))
        fail("{}: normalizer {} is not supported", path, n.dump());
    }

    const std::vector<std::string> patterns = split_patterns(j.at("pre_tokenizer"), path);
    if (patterns != PreTokenizer::patterns_for("deepseek-v3"))
      fail("{}: the pre-tokenizer regexes are not DeepSeek's; no llama.cpp pre-tokenizer name fits them", path);

    std::map<int64_t, std::pair<std::string, TokenType>> by_id;
    for (const auto& [text, id] : model.at("vocab").items()) by_id[id.get<int64_t>()] = {text, TokenType::NORMAL};
    bool has_dsml = false;
    for (const auto& a : j.value("added_tokens", json::array())) {
      const std::string text = a.at("content").get<std::string>();
      const bool control = a.value("special", false) || looks_special(text);
      by_id[a.at("id").get<int64_t>()] = {text, control ? TokenType::CONTROL : TokenType::USER_DEFINED};
      if (text == "\xef\xbd\x9c" "DSML" "\xef\xbd\x9c") has_dsml = true;
    }
    if (by_id.empty() || by_id.begin()->first < 0) fail("{}: vocabulary is empty or has negative ids", path);
    const int64_t n = by_id.rbegin()->first + 1;
    std::vector<std::string> tokens;
    std::vector<int32_t> types;
    tokens.reserve(static_cast<size_t>(n));
    for (int64_t id = 0; id < n; ++id) {
      auto it = by_id.find(id);
      if (it == by_id.end()) {
        tokens.push_back(fmt::format("[PAD{}]", id));  // llama.cpp's filler for unused ids
        types.push_back(static_cast<int32_t>(TokenType::UNUSED));
      } else {
        tokens.push_back(it->second.first);
        types.push_back(static_cast<int32_t>(it->second.second));
      }
    }

    std::vector<std::string> merges;
    for (const auto& m : model.at("merges")) {
      if (m.is_string())
        merges.push_back(m.get<std::string>());
      else if (m.is_array() && m.size() == 2)
        merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
      else
        fail("{}: merge entry {} is neither \"a b\" nor [a, b]", path, m.dump());
    }

    // Shipped DeepSeek V4 GGUFs say "joyai-llm" (llama.cpp's hash of the V4
    // tokenizer matched JoyAI's); V3 conversions say "deepseek-v3". Both name
    // the same regexes.
    std::vector<std::pair<std::string, gguf::Value>> md;
    md.emplace_back("tokenizer.ggml.model", gguf::Value::str("gpt2"));
    md.emplace_back("tokenizer.ggml.pre", gguf::Value::str(has_dsml ? "joyai-llm" : "deepseek-v3"));
    md.emplace_back("tokenizer.ggml.tokens", gguf::Value::string_array(tokens));
    md.emplace_back("tokenizer.ggml.token_type", gguf::Value::i32_array(types));
    md.emplace_back("tokenizer.ggml.merges", gguf::Value::string_array(merges));

    json cfg = json::object();
    const auto cfg_path = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
    if (std::filesystem::exists(cfg_path)) cfg = read_json(cfg_path.string());
    auto id_of = [&](const std::optional<std::string>& text) -> std::optional<uint32_t> {
      if (!text) return std::nullopt;
      for (int64_t id = 0; id < n; ++id)
        if (tokens[static_cast<size_t>(id)] == *text) return static_cast<uint32_t>(id);
      fail("{}: special token '{}' named by tokenizer_config.json is not in the vocabulary", path, *text);
    };
    // Without a config, DeepSeek's spellings are the defaults.
    auto bos = config_token(cfg, "bos_token").value_or("<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>");
    auto eos = config_token(cfg, "eos_token").value_or("<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>");
    if (auto id = id_of(bos)) md.emplace_back("tokenizer.ggml.bos_token_id", gguf::Value::u32(*id));
    if (auto id = id_of(eos)) md.emplace_back("tokenizer.ggml.eos_token_id", gguf::Value::u32(*id));
    if (auto id = id_of(config_token(cfg, "pad_token")))
      md.emplace_back("tokenizer.ggml.padding_token_id", gguf::Value::u32(*id));
    if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean())
      md.emplace_back("tokenizer.ggml.add_bos_token", gguf::Value::boolean(cfg["add_bos_token"].get<bool>()));
    if (cfg.contains("add_eos_token") && cfg["add_eos_token"].is_boolean())
      md.emplace_back("tokenizer.ggml.add_eos_token", gguf::Value::boolean(cfg["add_eos_token"].get<bool>()));
    return md;
  } catch (const json::exception& e) {
    fail("{}: unexpected tokenizer.json layout: {}", path, e.what());
  }
}

}  // namespace ds4::tokenizer

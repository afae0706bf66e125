// `ds4 tokenize -m MODEL.gguf [--special] [TEXT|-]`: token ids as a JSON array.
// `ds4 detokenize -m MODEL.gguf [IDS...|-]`: the text of token ids (raw bytes).
// Text is tokenized as plain text unless --special is given, so control-token
// spellings in it stay text (the safe default for anything a user typed).
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>
#include <iterator>
#include <sstream>

#include "cli/commands.h"
#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace ds4::cli {
namespace {

std::string read_stdin() {
  return {std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
}

void run_tokenize(const std::string& model, const std::string& text, bool special) {
  const auto tok = tokenizer::Tokenizer::from_gguf(gguf::File::open(model));
  const auto ids = tok.encode(text == "-" ? read_stdin() : text, special);
  std::printf("%s\n", nlohmann::json(ids).dump().c_str());
}

// Ids may come as separate arguments, one JSON array, or whitespace/comma
// separated text on stdin.
std::vector<tokenizer::TokenId> parse_ids(const std::vector<std::string>& args) {
  std::string all;
  for (const auto& a : args) all += (a == "-" ? read_stdin() : a) + " ";
  for (char& c : all)
    if (c == '[' || c == ']' || c == ',') c = ' ';
  std::vector<tokenizer::TokenId> ids;
  std::istringstream in(all);
  std::string word;
  while (in >> word) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != word.size() || v < INT32_MIN || v > INT32_MAX) fail("detokenize: '{}' is not a token id", word);
    ids.push_back(static_cast<tokenizer::TokenId>(v));
  }
  return ids;
}

void run_detokenize(const std::string& model, const std::vector<std::string>& args) {
  const auto tok = tokenizer::Tokenizer::from_gguf(gguf::File::open(model));
  const std::string text = tok.decode(parse_ids(args.empty() ? std::vector<std::string>{"-"} : args));
  std::fwrite(text.data(), 1, text.size(), stdout);
}

}  // namespace

const Registration kTokenizeRegistration{"tokenize", 60, [](CLI::App& app) {
  auto* sub = app.add_subcommand("tokenize", "Print token ids for text as a JSON array");
  static std::string model, text = "-";
  static bool special = false;
  sub->add_option("-m,--model", model, "GGUF file with tokenizer metadata")->required();
  sub->add_flag("--special", special, "Match special-token spellings (e.g. <｜User｜>) as control tokens");
  sub->add_option("text", text, "Text to tokenize, or - for stdin (default)");
  sub->callback([] { run_tokenize(model, text, special); });
}};

const Registration kDetokenizeRegistration{"detokenize", 70, [](CLI::App& app) {
  auto* sub = app.add_subcommand("detokenize", "Print the text of token ids");
  static std::string model;
  static std::vector<std::string> ids;
  sub->add_option("-m,--model", model, "GGUF file with tokenizer metadata")->required();
  sub->add_option("ids", ids, "Token ids (separate, or a JSON array), or - for stdin (default)");
  sub->callback([] { run_detokenize(model, ids); });
}};

}  // namespace ds4::cli

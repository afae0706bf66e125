// tok_tool: drives the tokenizer for the Python tests against Hugging Face.
//   tok_tool make-gguf TOKENIZER.json OUT.gguf       embed the tokenizer (no tensors)
//   tok_tool encode MODEL.gguf FILE [--special] [--lines]
//       JSON token ids of FILE; with --lines, one array per '\n'-separated line
//   tok_tool decode MODEL.gguf IDS.json OUT          raw bytes of the ids (one JSON array)
//   tok_tool stream MODEL.gguf IDS.json OUT          the same through StreamDecoder, one token at a time;
//       exits 3 if any chunk is not valid UTF-8
#include <cstdio>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

#include "gguf/gguf.h"
#include "tokenizer/hf_import.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"
#include "util/error.h"

using namespace ds4;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open '{}'", path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!out) fail("cannot write '{}'", path);
}

std::vector<tokenizer::TokenId> read_ids(const std::string& path) {
  return nlohmann::json::parse(read_file(path)).get<std::vector<tokenizer::TokenId>>();
}

int run(int argc, char** argv) {
  const std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "make-gguf" && argc == 4) {
    gguf::Writer w;
    w.set("general.architecture", gguf::Value::str("deepseek4"));
    for (auto& [k, v] : tokenizer::gguf_metadata_from_hf(argv[2])) w.set(k, std::move(v));
    w.write(argv[3]);
    return 0;
  }
  if (argc < 4) {
    std::fprintf(stderr, "usage: see the comment at the top of tests/tools/tok_tool.cpp\n");
    return 2;
  }
  const auto tok = tokenizer::Tokenizer::from_gguf(gguf::File::open(argv[2]));
  if (cmd == "encode") {
    bool special = false, lines = false;
    for (int i = 4; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--special") special = true;
      else if (a == "--lines") lines = true;
      else fail("unknown flag '{}'", a);
    }
    const std::string text = read_file(argv[3]);
    nlohmann::json out;
    if (lines) {
      out = nlohmann::json::array();
      size_t start = 0;
      while (true) {
        const size_t nl = text.find('\n', start);
        const std::string_view line = std::string_view(text).substr(start, nl == std::string::npos ? std::string::npos : nl - start);
        out.push_back(tok.encode(line, special));
        if (nl == std::string::npos) break;
        start = nl + 1;
      }
    } else {
      out = tok.encode(text, special);
    }
    std::printf("%s\n", out.dump().c_str());
    return 0;
  }
  if ((cmd == "decode" || cmd == "stream") && argc == 5) {
    const auto ids = read_ids(argv[3]);
    if (cmd == "decode") {
      write_file(argv[4], tok.decode(ids));
      return 0;
    }
    tokenizer::StreamDecoder dec(tok);
    std::string all;
    for (auto id : ids) {
      const std::string chunk = dec.push(id);
      if (!tokenizer::utf8_valid(chunk)) return 3;
      all += chunk;
    }
    all += dec.flush();
    write_file(argv[4], all);
    return 0;
  }
  std::fprintf(stderr, "tok_tool: unknown command '%s'\n", cmd.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tok_tool: %s\n", e.what());
    return 1;
  }
}

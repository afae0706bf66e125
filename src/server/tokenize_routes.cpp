// POST /tokenize {"content": TEXT} -> {"tokens": [...]} and POST /detokenize
// {"tokens": [...]} -> {"content": TEXT} (llama.cpp's shapes). Text is encoded
// as user text: special-token spellings stay plain text.
#include "server/context.h"
#include "server/http_io.h"

namespace ds4::server {

void add_tokenize_routes(httplib::Server& s, ServerContext& ctx) {
  s.Post("/tokenize", [&ctx](const httplib::Request& req, httplib::Response& res) {
    guarded(res, openai_error_body, [&] {
      const Json body = parse_body(req.body);
      const auto content = get_string(body, "content", "");
      if (!content) throw ApiError(400, "missing content", "content");
      const bool pieces = get_bool(body, "with_pieces", "").value_or(false);
      const auto ids = ctx.runner.tokenizer().encode(*content);
      Json toks = Json::array();
      for (int32_t id : ids) {
        if (pieces)
          toks.push_back({{"id", id}, {"piece", ctx.runner.tokenizer().token_bytes(id)}});
        else
          toks.push_back(id);
      }
      send_json(res, 200, {{"tokens", toks}});
    });
  });
  s.Post("/detokenize", [&ctx](const httplib::Request& req, httplib::Response& res) {
    guarded(res, openai_error_body, [&] {
      const Json body = parse_body(req.body);
      const Json* toks = get_array(body, "tokens", "");
      if (!toks) throw ApiError(400, "missing tokens", "tokens");
      const auto vocab = static_cast<int64_t>(ctx.runner.tokenizer().vocab_size());
      std::vector<int32_t> ids;
      for (size_t i = 0; i < toks->size(); ++i) {
        const Json& t = (*toks)[i];
        if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= vocab ||
            (t.is_number_unsigned() && t.get<uint64_t>() >= static_cast<uint64_t>(vocab)))
          throw ApiError(400, "invalid JSON request: field 'tokens[" + std::to_string(i) +
                                  "]' must be a token id in [0, " + std::to_string(vocab - 1) + "]",
                         "tokens");
        ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
      }
      send_json(res, 200, {{"content", ctx.runner.tokenizer().decode(ids)}});
    });
  });
}

}  // namespace ds4::server

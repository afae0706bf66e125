#pragma once
// Typed reads of request JSON fields. Absent fields and JSON null read as
// "not given"; a present field of the wrong type is a 400 naming the field
// (reference-behavior §3.2: unknown fields are ignored, wrong types are not).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "chat/chat.h"
#include "server/api_error.h"

namespace ds4::server {

using chat::Json;

// Parses a request body: a 400 for invalid JSON (with the parser's reason), a
// body nested deeper than kMaxJsonDepth, or a top level that is not an object.
inline constexpr int kMaxJsonDepth = 256;
Json parse_body(std::string_view body);

// `path` names the field in messages, e.g. "messages[2].content".
const Json* field(const Json& obj, std::string_view key);  // nullptr when absent or null
std::optional<std::string> get_string(const Json& obj, std::string_view key, std::string_view path);
std::optional<double> get_number(const Json& obj, std::string_view key, std::string_view path);
// An integer in [lo, hi]; a fractional or out-of-range number is a 400.
std::optional<int64_t> get_int(const Json& obj, std::string_view key, std::string_view path, int64_t lo, int64_t hi);
std::optional<bool> get_bool(const Json& obj, std::string_view key, std::string_view path);
// The field must be an array / object when present.
const Json* get_array(const Json& obj, std::string_view key, std::string_view path);
const Json* get_object(const Json& obj, std::string_view key, std::string_view path);

// "a.b" joined for error messages.
std::string join_path(std::string_view base, std::string_view key);

}  // namespace ds4::server

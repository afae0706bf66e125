#include "server/json_fields.h"

#include <cmath>
#include <fmt/format.h>

namespace ds4::server {

namespace {

// Depth of brackets outside strings: nlohmann parses deep input fine, but a
// body nested thousands deep is an attack, not a request.
bool too_deep(std::string_view s) {
  int depth = 0;
  bool in_str = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (in_str) {
      if (c == '\\') ++i;
      else if (c == '"') in_str = false;
    } else if (c == '"') {
      in_str = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

[[noreturn]] void wrong_type(std::string_view path, std::string_view want, const Json& v) {
  throw ApiError(400, fmt::format("invalid JSON request: field '{}' must be {}, not {}", path, want, v.type_name()),
                 std::string(path));
}

}  // namespace

std::string join_path(std::string_view base, std::string_view key) {
  return base.empty() ? std::string(key) : fmt::format("{}.{}", base, key);
}

Json parse_body(std::string_view body) {
  if (body.empty()) throw ApiError(400, "invalid JSON request: empty body");
  if (too_deep(body)) throw ApiError(400, fmt::format("invalid JSON request: nested deeper than {} levels", kMaxJsonDepth));
  Json j;
  try {
    j = Json::parse(body);
  } catch (const Json::parse_error& e) {
    throw ApiError(400, fmt::format("invalid JSON request: {}", e.what()));
  }
  if (!j.is_object()) throw ApiError(400, fmt::format("invalid JSON request: the body must be an object, not {}", j.type_name()));
  return j;
}

const Json* field(const Json& obj, std::string_view key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<std::string> get_string(const Json& obj, std::string_view key, std::string_view path) {
  const Json* v = field(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) wrong_type(join_path(path, key), "a string", *v);
  return v->get<std::string>();
}

std::optional<double> get_number(const Json& obj, std::string_view key, std::string_view path) {
  const Json* v = field(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) wrong_type(join_path(path, key), "a number", *v);
  const double d = v->get<double>();
  if (!std::isfinite(d)) wrong_type(join_path(path, key), "a finite number", *v);
  return d;
}

std::optional<int64_t> get_int(const Json& obj, std::string_view key, std::string_view path, int64_t lo, int64_t hi) {
  const Json* v = field(obj, key);
  if (!v) return std::nullopt;
  const std::string p = join_path(path, key);
  if (!v->is_number()) wrong_type(p, "an integer", *v);
  if (v->is_number_integer()) {
    // Compare without overflow: unsigned values above int64 are out of range.
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(hi))
      throw ApiError(400, fmt::format("invalid JSON request: field '{}' must be in [{}, {}]", p, lo, hi), p);
    const auto i = v->get<int64_t>();
    if (i < lo || i > hi) throw ApiError(400, fmt::format("invalid JSON request: field '{}' must be in [{}, {}]", p, lo, hi), p);
    return i;
  }
  const double d = v->get<double>();
  if (!std::isfinite(d) || d != std::floor(d)) wrong_type(p, "an integer", *v);
  if (d < static_cast<double>(lo) || d > static_cast<double>(hi))
    throw ApiError(400, fmt::format("invalid JSON request: field '{}' must be in [{}, {}]", p, lo, hi), p);
  return static_cast<int64_t>(d);
}

std::optional<bool> get_bool(const Json& obj, std::string_view key, std::string_view path) {
  const Json* v = field(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) wrong_type(join_path(path, key), "a boolean", *v);
  return v->get<bool>();
}

const Json* get_array(const Json& obj, std::string_view key, std::string_view path) {
  const Json* v = field(obj, key);
  if (v && !v->is_array()) wrong_type(join_path(path, key), "an array", *v);
  return v;
}

const Json* get_object(const Json& obj, std::string_view key, std::string_view path) {
  const Json* v = field(obj, key);
  if (v && !v->is_object()) wrong_type(join_path(path, key), "an object", *v);
  return v;
}

}  // namespace ds4::server

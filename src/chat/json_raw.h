#pragma once
// A small tolerant JSON scanner over raw bytes. ds4 keeps client JSON as text
// (number spellings, key order and duplicate keys survive), so canonical DSML
// and parsed arguments are built from raw value spans, not re-serialized trees.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ds4::chat::detail {

// Skips one JSON value starting at pos (after optional whitespace); false if
// the text there is not a value. Numbers follow strtod, as ds4's do.
bool skip_value(std::string_view s, size_t& pos);
void skip_ws(std::string_view s, size_t& pos);

// Whitespace outside strings removed from the first value in raw; raw itself
// when it does not start with a value.
std::string minify_value(std::string_view raw);

struct Member {
  std::string key;
  std::string raw;    // value text as written
  bool is_string = false;
  std::string str;    // decoded value when is_string
};
// Members of a JSON object in written order; nullopt when text is not an object.
std::optional<std::vector<Member>> object_members(std::string_view text);

// JSON string literal for s the way ds4 writes it: only ", \, \n, \r, \t and
// other control characters are escaped; UTF-8 passes through.
std::string quote(std::string_view s);

}  // namespace ds4::chat::detail

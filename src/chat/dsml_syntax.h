#pragma once
// The three tool-block spellings the model is known to produce (§4.1):
// full DSML, DSML with the first bar dropped, and plain XML.
#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace ds4::chat::detail {

struct DsmlSyntax {
  std::string_view calls_start, calls_end, invoke_start, invoke_end, param_start, param_end;
};

inline constexpr std::array<DsmlSyntax, 3> kSyntaxes = {{
    {"<｜DSML｜tool_calls>", "</｜DSML｜tool_calls>", "<｜DSML｜invoke", "</｜DSML｜invoke>", "<｜DSML｜parameter",
     "</｜DSML｜parameter>"},
    {"<tool_calls>", "</tool_calls>", "<invoke", "</invoke>", "<parameter", "</parameter>"},
    {"<DSML｜tool_calls>", "</DSML｜tool_calls>", "<DSML｜invoke", "</DSML｜invoke>", "<DSML｜parameter",
     "</DSML｜parameter>"},
}};
inline constexpr int kStyleDsml = 0, kStylePlain = 1, kStyleShort = 2;

// Entity decoding of DSML text and attribute values: &amp; &lt; &gt; &quot; &apos;.
std::string unescape_entities(std::string_view s);
// Value of attr="..." inside a tag (entity-decoded), or nullopt.
std::optional<std::string> tag_attr(std::string_view tag, std::string_view name);

}  // namespace ds4::chat::detail

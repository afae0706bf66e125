#pragma once
// Private helpers shared by the renderer and DSML writer.
#include "chat/chat.h"

namespace ds4::chat::detail {

// Appends segments, merging adjacent text so each text run is BPE-encoded as
// one string (ds4 tokenizes the whole prompt at once; splitting a run would
// change pre-tokenizer boundaries).
class Builder {
 public:
  void special(std::string_view s);
  void text(std::string_view s);
  // Template text we wrote ourselves: its special spellings are real tokens.
  void trusted(std::string_view s);
  void append(const Segments& s);
  Segments take() { return std::move(out_); }

 private:
  Segments out_;
};

std::string escape_attr(std::string_view s);                // & < > "
std::string escape_param_text(std::string_view s);          // </｜DSML｜parameter> -> &lt;...
std::string escape_tool_result(std::string_view s);         // </tool_result> -> &lt;...

}  // namespace ds4::chat::detail

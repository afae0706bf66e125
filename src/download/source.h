#pragma once
// Turning `ds4 pull`'s argument into files to fetch (internal to download/).
#include <optional>
#include <string>
#include <string_view>

namespace ds4::download {

// The file name a URL names: its last path segment, percent-escapes kept,
// query and fragment dropped. Empty when the path ends in '/'.
std::string url_file_name(std::string_view url);

// NAME-00002-of-00005.gguf, the split naming of llama.cpp's gguf-split.
struct SplitName {
  std::string stem;  // "NAME"
  int index = 0;     // 2 (1-based)
  int count = 0;     // 5
  int width = 5;     // digits in the numbers
};
std::optional<SplitName> parse_split_name(std::string_view file);
std::string split_part_name(const SplitName& s, int index);

}  // namespace ds4::download

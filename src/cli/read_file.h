#pragma once
// A whole file as a string, for flags that name one (--prompt-file, ...).
#include <string>
#include <string_view>

namespace ds4::cli {

// Throws ds4::Error naming the flag and the path when it cannot be read.
std::string read_file(const std::string& path, std::string_view flag);

}  // namespace ds4::cli

#pragma once
// One exception type for every user-facing failure: a bad file, tensor, flag or
// request. The message is complete on its own (it names the file, tensor, field
// or byte offset), so callers print what() and nothing else.
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace ds4 {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace ds4

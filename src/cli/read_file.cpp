#include "cli/read_file.h"

#include <fstream>
#include <sstream>

#include "util/error.h"

namespace ds4::cli {

std::string read_file(const std::string& path, std::string_view flag) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("{} {}: cannot open for reading", flag, path);
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) fail("{} {}: read error", flag, path);
  return ss.str();
}

}  // namespace ds4::cli

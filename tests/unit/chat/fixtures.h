#pragma once
// Loads the chat fixtures written by tests/fixtures/chat/make_golden.py.
#include <fstream>
#include <sstream>
#include <string>

#include "chat/chat.h"

namespace ds4::chat::testing {

inline Json load_fixture(const std::string& name) {
  std::ifstream f(std::string(DS4_SOURCE_DIR) + "/tests/fixtures/chat/" + name);
  std::stringstream ss;
  ss << f.rdbuf();
  return Json::parse(ss.str());
}

}  // namespace ds4::chat::testing

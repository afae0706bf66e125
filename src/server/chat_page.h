#pragma once
// The chat page served at GET / (src/server/chat_page.html), compiled into the
// binary by src/server/embed_file.cmake.
#include <string_view>

namespace ds4::server {

std::string_view chat_page_html();

}  // namespace ds4::server

// GET /: the browser chat page (docs/server.md, "Chat page"). The page is
// static; everything it shows comes from the server's own API endpoints.
#include "server/chat_page.h"
#include "server/context.h"

namespace ds4::server {

void add_chat_page_route(httplib::Server& s) {
  s.Get("/", [](const httplib::Request&, httplib::Response& res) {
    const std::string_view page = chat_page_html();
    res.set_header("Cache-Control", "no-cache");
    // The page loads nothing from elsewhere; say so, so a browser enforces it.
    res.set_header("Content-Security-Policy",
                   "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
                   "img-src 'self' data:; base-uri 'none'; form-action 'none'");
    res.set_content(page.data(), page.size(), "text/html; charset=utf-8");
  });
}

}  // namespace ds4::server

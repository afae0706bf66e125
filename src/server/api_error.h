#pragma once
// The one error an API handler throws: an HTTP status and a message that names
// what is wrong (reference-behavior §3.13). Adapters render it in their API's
// error shape; anything else thrown in a handler becomes a 500.
#include <stdexcept>
#include <string>

#include "chat/chat.h"

namespace ds4::server {

class ApiError : public std::runtime_error {
 public:
  ApiError(int http_status, const std::string& message, std::string field = {})
      : std::runtime_error(message), status(http_status), param(std::move(field)) {}
  int status;
  std::string param;        // the request field at fault, when there is one
  std::string code;         // e.g. "context_length_exceeded"
  chat::Json extra = chat::Json::object();  // further fields of the error object (n_prompt_tokens, ...)
  std::string type() const {
    switch (status) {
      case 401: return "authentication_error";
      case 404: return "not_found_error";
      case 413: return "request_too_large";
      case 429: return "rate_limit_error";
      default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
  }
};

}  // namespace ds4::server

#pragma once
// One HTTP GET that brings FILE.part closer to the whole file (internal to
// download/): it resumes from the part's current size with a Range request.
#include <cstdint>
#include <optional>
#include <string>

namespace ds4::download {

struct TransferOptions {
  std::string token;  // Bearer token; empty: no Authorization header
  bool tty = false;   // progress drawn in place
  std::string label;  // the name shown in progress lines
};

struct TransferResult {
  bool complete = false;      // the part holds the whole file
  std::string cut_reason;     // !complete: why the transfer stopped (worth resuming)
  int64_t size = 0;           // bytes in the part now
  int64_t total = -1;         // the file's size as the server gave it; -1: not given
  std::optional<std::string> server_sha256;  // X-Linked-ETag / ETag when they carry one
};

// Throws ds4::Error for what resuming cannot fix: an HTTP error status, a
// refused connection, an unknown host, a write error or a full disk, a size
// that does not add up.
TransferResult transfer_once(const std::string& url, const std::string& part, const TransferOptions& opt);

// curl_global_init, once per process.
void init_curl();

}  // namespace ds4::download

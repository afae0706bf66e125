#pragma once
// SHA-256 through OpenSSL's EVP interface (internal to download/).
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace ds4::download {

// Lower-case hex digest of `data`.
std::string sha256_hex(std::string_view data);
// Lower-case hex digest of a file, read in large blocks; `progress(done,
// total)` is called now and then. Throws ds4::Error when the file cannot be read.
std::string sha256_file(const std::string& path, const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace ds4::download

#include "download/sha256.h"

#include <openssl/evp.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "util/error.h"

namespace ds4::download {

namespace {

struct Digest {
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx{EVP_MD_CTX_new(), &EVP_MD_CTX_free};
  Digest() {
    if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) fail("sha256: OpenSSL initialisation failed");
  }
  void update(const void* p, size_t n) {
    if (EVP_DigestUpdate(ctx.get(), p, n) != 1) fail("sha256: OpenSSL update failed");
  }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(ctx.get(), md, &len) != 1) fail("sha256: OpenSSL final failed");
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < len; ++i) {
      out += kHex[md[i] >> 4];
      out += kHex[md[i] & 15];
    }
    return out;
  }
};

}  // namespace

std::string sha256_hex(std::string_view data) {
  Digest d;
  d.update(data.data(), data.size());
  return d.hex();
}

std::string sha256_file(const std::string& path, const std::function<void(int64_t, int64_t)>& progress) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) fail("{}: cannot open for reading: {}", path, std::strerror(errno));
  std::fseek(f.get(), 0, SEEK_END);
  const int64_t total = std::ftell(f.get());
  std::fseek(f.get(), 0, SEEK_SET);
  Digest d;
  std::vector<char> buf(size_t{8} << 20);
  int64_t done = 0;
  for (;;) {
    const size_t n = std::fread(buf.data(), 1, buf.size(), f.get());
    if (n > 0) {
      d.update(buf.data(), n);
      done += static_cast<int64_t>(n);
      if (progress) progress(done, total);
    }
    if (n < buf.size()) break;
  }
  if (std::ferror(f.get())) fail("{}: read error: {}", path, std::strerror(errno));
  return d.hex();
}

}  // namespace ds4::download

// The HTTP side of `ds4 pull` with libcurl; docs/model-download.md gives the
// behaviour (resume by Range, which headers are trusted for size and hash).
#include "download/transfer.h"

#include <curl/curl.h>
#include <sys/statvfs.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>

#include "download/http_meta.h"
#include "download/transfer_progress.h"
#include "util/error.h"

namespace ds4::download {

void init_curl() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) fail("libcurl initialisation failed");
  });
}

namespace {

namespace fs = std::filesystem;

struct State {
  std::string part;
  int64_t offset = 0;  // bytes of the part this request continues from
  TransferProgress* progress = nullptr;
  // Of the latest response in the redirect chain.
  int status = 0;
  std::optional<int64_t> content_length;
  std::optional<ContentRange> range;
  std::optional<std::string> etag_sha;
  // Hugging Face puts these on the redirect from /resolve/ to its storage, so
  // they survive the following responses.
  std::optional<int64_t> linked_size;
  std::optional<std::string> linked_sha;
  // Body.
  std::FILE* out = nullptr;
  bool opened = false;
  int64_t total = -1;
  int64_t written = 0;  // bytes in the part file
  int write_errno = 0;
  std::string abort_msg;  // a hard error found while the body started
};

size_t on_header(char* buf, size_t size, size_t n, void* ud) {
  auto& st = *static_cast<State*>(ud);
  const std::string_view line(buf, size * n);
  if (const auto code = parse_status_line(line)) {
    st.status = *code;
    st.content_length.reset();
    st.range.reset();
    st.etag_sha.reset();
    return size * n;
  }
  const auto h = parse_header_line(line);
  if (!h) return size * n;
  if (h->name == "content-length") st.content_length = parse_size(h->value);
  else if (h->name == "content-range") st.range = parse_content_range(h->value);
  else if (h->name == "etag") st.etag_sha = sha256_from_etag(h->value);
  else if (h->name == "x-linked-etag") st.linked_sha = sha256_from_etag(h->value);
  else if (h->name == "x-linked-size") st.linked_size = parse_size(h->value);
  return size * n;
}

int64_t free_bytes(const std::string& dir) {
  struct statvfs s {};
  if (statvfs(dir.c_str(), &s) != 0) return -1;
  return static_cast<int64_t>(s.f_bavail) * static_cast<int64_t>(s.f_frsize);
}

// The first body bytes of the final response: decide where they go.
bool start_body(State& st) {
  st.opened = true;
  const char* mode = nullptr;
  if (st.status == 206) {
    if (!st.range || st.range->first != st.offset) {
      st.abort_msg = fmt::format("the server answered the request for bytes {}- with a different range", st.offset);
      return false;
    }
    st.total = st.range->total;
    mode = "ab";
  } else if (st.status == 200) {
    if (st.offset > 0)
      std::fprintf(stderr, "ds4: the server does not resume (no range support): downloading from the start\n");
    st.offset = 0;
    st.total = st.content_length.value_or(-1);
    mode = "wb";
  } else {
    return false;  // an error status: reported after the transfer
  }
  if (st.total >= 0) {
    const fs::path dir = fs::absolute(st.part).parent_path();
    const int64_t need = st.total - st.offset, avail = free_bytes(dir.string());
    if (avail >= 0 && need > avail) {
      st.abort_msg = fmt::format("disk full: {} needs {} more, {} has {} free", fs::path(st.part).stem().string(),
                                 human_bytes(static_cast<double>(need)), dir.string(), human_bytes(static_cast<double>(avail)));
      return false;
    }
  }
  st.out = std::fopen(st.part.c_str(), mode);
  if (!st.out) {
    st.write_errno = errno;
    return false;
  }
  st.written = st.offset;
  if (st.progress) st.progress->begin(st.offset);
  return true;
}

size_t on_body(char* buf, size_t size, size_t n, void* ud) {
  auto& st = *static_cast<State*>(ud);
  if (!st.opened && !start_body(st)) return 0;
  if (!st.out) return 0;
  const size_t put = std::fwrite(buf, 1, size * n, st.out);
  if (put != size * n) {
    st.write_errno = errno ? errno : EIO;
    return 0;
  }
  st.written += static_cast<int64_t>(put);
  if (st.progress) st.progress->update(st.written, st.total);
  return put;
}

int64_t file_size_or_zero(const std::string& path) {
  std::error_code ec;
  const auto s = fs::file_size(path, ec);  // follows links, so FILE.part may be one
  return ec ? 0 : static_cast<int64_t>(s);
}

std::string host_of(const std::string& url) {
  size_t b = url.find("://");
  b = b == std::string::npos ? 0 : b + 3;
  const size_t e = url.find_first_of("/?#", b);
  return url.substr(b, e == std::string::npos ? std::string::npos : e - b);
}

}  // namespace

TransferResult transfer_once(const std::string& url, const std::string& part, const TransferOptions& opt) {
  init_curl();
  State st;
  st.part = part;
  st.offset = file_size_or_zero(part);
  TransferProgress progress(opt.tty, opt.label);
  st.progress = &progress;

  std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), &curl_easy_cleanup);
  if (!curl) fail("libcurl: cannot create a handle");
  CURL* c = curl.get();
  char errbuf[CURL_ERROR_SIZE] = {};
  curl_slist* headers = nullptr;
  // libcurl sends a custom Authorization header to the first host only, never
  // to another host a redirect leads to (Hugging Face redirects to its storage
  // with a signed URL), unless CURLOPT_UNRESTRICTED_AUTH is set, which it is not.
  const std::string auth = "Authorization: Bearer " + opt.token;
  if (!opt.token.empty()) headers = curl_slist_append(headers, auth.c_str());
  std::unique_ptr<curl_slist, void (*)(curl_slist*)> header_guard(headers, &curl_slist_free_all);
  const std::string range = std::to_string(st.offset) + "-";

  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "ds4-pull/0.1");
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
  // A stalled transfer (under 1 KiB/s for a minute) ends as a cut one and is resumed.
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
  if (headers) curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  if (st.offset > 0) curl_easy_setopt(c, CURLOPT_RANGE, range.c_str());
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &st);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &st);

  const CURLcode rc = curl_easy_perform(c);
  progress.finish();
  if (st.out && std::fclose(st.out) != 0 && st.write_errno == 0) st.write_errno = errno ? errno : EIO;
  st.out = nullptr;

  // Errors the server states.
  if (st.status == 416) {
    // Nothing left to send from our offset: the part is whole when its size is
    // the file's size; otherwise it is not this file's prefix and starts over.
    if (st.range && st.range->total == st.offset)
      return {true, "", st.offset, st.offset, st.linked_sha ? st.linked_sha : st.etag_sha};
    std::error_code ec;
    fs::remove(part, ec);
    return {false, fmt::format("the server has no bytes after {} (HTTP 416): starting over", st.offset), 0, -1, {}};
  }
  if (st.status == 404) fail("{}: not found (HTTP 404)", url);
  if (st.status == 401 || st.status == 403)
    fail("{}: access denied (HTTP {}): {}", url, st.status,
         opt.token.empty() ? "a gated or private file needs a Hugging Face token (--token or HF_TOKEN)"
                           : "the token given was refused");
  if (st.status >= 300 && st.status != 416) fail("{}: the server answered HTTP {}", url, st.status);
  // Errors on our side.
  if (!st.abort_msg.empty()) fail("{}", st.abort_msg);
  if (st.write_errno != 0)
    fail("writing {}: {} ({} bytes are kept in it)", part, std::strerror(st.write_errno),
         file_size_or_zero(part));

  const std::string what = errbuf[0] ? errbuf : curl_easy_strerror(rc);
  switch (rc) {
    case CURLE_OK:
      break;
    case CURLE_COULDNT_CONNECT: {
      long os_errno = 0;
      curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &os_errno);
      fail("{}: cannot connect to {}: {}", url, host_of(url),
           os_errno ? std::strerror(static_cast<int>(os_errno)) : what);
    }
    case CURLE_COULDNT_RESOLVE_HOST:
      fail("{}: cannot resolve host {}", url, host_of(url));
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return {false, what, st.written, st.total, {}};
    default:
      fail("{}: {}", url, what);
  }
  if (st.status == 0 || !st.opened) {
    // An empty body: only a zero-length file is whole without any bytes.
    if (st.status == 200 && st.content_length.value_or(0) == 0) {
      start_body(st);
      if (st.out) std::fclose(st.out);
      st.out = nullptr;
      if (!st.abort_msg.empty()) fail("{}", st.abort_msg);
      if (st.write_errno) fail("writing {}: {}", part, std::strerror(st.write_errno));
      return {true, "", 0, 0, st.linked_sha ? st.linked_sha : st.etag_sha};
    }
    fail("{}: the server sent no data (HTTP {})", url, st.status);
  }
  if (st.linked_size && st.total >= 0 && *st.linked_size != st.total)
    fail("{}: the server gives two sizes for the file ({} and {} bytes)", url, *st.linked_size, st.total);
  if (st.total >= 0 && st.written > st.total)
    fail("{}: received {} bytes, more than the {} the server announced", url, st.written, st.total);
  if (st.total >= 0 && st.written < st.total)
    return {false, fmt::format("the connection ended at {} of {} bytes", st.written, st.total), st.written, st.total, {}};
  return {true, "", st.written, st.total, st.linked_sha ? st.linked_sha : st.etag_sha};
}

}  // namespace ds4::download

// `ds4 pull`'s whole procedure for each file of the plan: skip a file already
// there, resume FILE.part with retries, verify size and SHA-256, rename
// (docs/model-download.md).
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "download/download.h"
#include "download/http_meta.h"
#include "download/sha256.h"
#include "download/transfer.h"
#include "download/transfer_progress.h"
#include "util/error.h"

namespace ds4::download {

namespace {

namespace fs = std::filesystem;

void fetch_file(const FileJob& job, const fs::path& path, const std::string& expected_sha, const PullOptions& opt) {
  const std::string part = path.string() + ".part";
  TransferOptions t{opt.token, opt.tty, job.name};
  TransferResult r;
  for (int attempt = 0;; ++attempt) {
    r = transfer_once(job.url, part, t);
    if (r.complete) break;
    if (attempt >= opt.retries)
      fail("{}: transfer cut ({}); {} is kept: run the same command again to resume", job.name, r.cut_reason, part);
    const int wait = attempt < 5 ? 1 << attempt : 30;  // 1, 2, 4, 8, 16, then 30 s
    std::fprintf(stderr, "ds4: %s: %s; resuming in %ds (retry %d of %d)\n", job.name.c_str(), r.cut_reason.c_str(),
                 wait, attempt + 1, opt.retries);
    std::this_thread::sleep_for(std::chrono::seconds(wait));
  }
  const std::string want = !expected_sha.empty() ? expected_sha : r.server_sha256.value_or("");
  std::string verified = "size";
  if (r.total < 0) verified = "nothing: the server gave neither size nor checksum";
  if (!want.empty()) {
    TransferProgress progress(opt.tty, "verifying " + job.name);
    progress.begin(0);
    const std::string got = sha256_file(part, [&](int64_t done, int64_t total) { progress.update(done, total); });
    progress.finish();
    if (got != want) {
      std::error_code ec;
      fs::remove(part, ec);
      fail("{}: SHA-256 mismatch: expected {}, got {}; removed {} (its bytes are wrong, so resuming it cannot help)",
           job.name, want, got, part);
    }
    verified = r.total >= 0 ? "size and SHA-256" : "SHA-256";
  }
  std::error_code ec;
  fs::rename(part, path, ec);
  if (ec) fail("renaming {} to {}: {}", part, path.string(), ec.message());
  std::fprintf(stderr, "ds4: saved %s (%s; verified: %s)\n", path.string().c_str(),
               human_bytes(static_cast<double>(r.size)).c_str(), verified.c_str());
}

}  // namespace

PullResult pull(std::string_view source, const PullOptions& opt) {
  const Plan p = plan(source);
  std::string sha = opt.sha256;
  if (!sha.empty()) {
    if (!is_sha256_hex(sha)) fail("--sha256 {}: not 64 hex digits", sha);
    if (p.files.size() > 1) fail("--sha256 names one file's hash, but {} has {} parts", source, p.files.size());
    for (char& ch : sha) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  }
  if (opt.retries < 0) fail("invalid value for --retries: {} (must be >= 0)", opt.retries);
  std::error_code ec;
  fs::create_directories(opt.out_dir, ec);
  if (ec || !fs::is_directory(opt.out_dir)) fail("-o {}: cannot create the directory: {}", opt.out_dir, ec.message());
  PullResult res;
  res.main_model = p.main_model;
  for (const FileJob& job : p.files) {
    const fs::path path = fs::absolute(fs::path(opt.out_dir) / job.name).lexically_normal();
    res.paths.push_back(path.string());
    if (fs::is_regular_file(path, ec) && fs::file_size(path, ec) > 0) {
      std::fprintf(stderr, "ds4: %s is already there: not downloaded again\n", path.string().c_str());
      continue;
    }
    std::fprintf(stderr, "ds4: fetching %s\n", job.url.c_str());
    fetch_file(job, path, sha, opt);
  }
  return res;
}

std::string resolve_token(std::string_view flag) {
  if (!flag.empty()) return std::string(flag);
  if (const char* env = std::getenv("HF_TOKEN"); env && *env) return env;
  fs::path file;
  if (const char* hf_home = std::getenv("HF_HOME"); hf_home && *hf_home)
    file = fs::path(hf_home) / "token";
  else if (const char* home = std::getenv("HOME"); home && *home)
    file = fs::path(home) / ".cache" / "huggingface" / "token";
  if (file.empty()) return "";
  std::FILE* f = std::fopen(file.c_str(), "r");
  if (!f) return "";
  char buf[512] = {};
  const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  std::string t(buf, n);
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.pop_back();
  return t;
}

}  // namespace ds4::download

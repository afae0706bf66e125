#pragma once
// `ds4 pull`: fetch a model GGUF by short name or URL, resumably, verified by
// size and SHA-256 when the server gives them (docs/model-download.md).
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ds4::download {

// One file the project knows by a short name (the antirez/ds4 GGUFs,
// reference-behavior of its download script; docs/model-download.md).
struct KnownModel {
  std::string_view name;   // e.g. "q2-imatrix"
  std::string_view repo;   // Hugging Face repository, "owner/name"
  std::string_view file;   // file name in that repository
  std::string_view about;  // one line for the listing: size, memory needed
  bool main_model;         // false for the MTP draft file: never the default model
};
std::span<const KnownModel> known_models();
// "https://huggingface.co/<repo>/resolve/main/<file>"
std::string known_model_url(const KnownModel& m);

struct FileJob {
  std::string url;
  std::string name;  // local file name
};
// What one `ds4 pull SOURCE` fetches: a known name's file, or a URL's file; a
// multi-part GGUF (NAME-00001-of-00003.gguf, any of its parts named) expands
// to every part, first part first. Throws ds4::Error for an unknown name or a
// URL that is not http(s) or does not name a .gguf file.
struct Plan {
  std::vector<FileJob> files;
  bool main_model = true;
};
Plan plan(std::string_view source);

struct PullOptions {
  std::string out_dir = ".";
  std::string token;    // Bearer token; empty: none
  std::string sha256;   // expected hash of a single-file pull; empty: what the server says
  int retries = 3;      // in-process resumes after a cut transfer
  bool tty = false;     // progress bar in place (else plain lines)
};
struct PullResult {
  std::vector<std::string> paths;  // absolute, first part first
  bool main_model = true;
};
// Fetches every file of plan(source) into out_dir. Throws ds4::Error with one
// line naming what failed: HTTP status, connection, size, checksum, disk.
PullResult pull(std::string_view source, const PullOptions& opt);

// The token for gated repositories: `flag` when given, else $HF_TOKEN, else
// the file huggingface-cli writes ($HF_HOME/token, ~/.cache/huggingface/token).
std::string resolve_token(std::string_view flag);

}  // namespace ds4::download

#include "download/source.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "download/download.h"
#include "util/error.h"

namespace ds4::download {

std::string url_file_name(std::string_view url) {
  const size_t cut = url.find_first_of("?#");
  if (cut != std::string_view::npos) url = url.substr(0, cut);
  const size_t scheme = url.find("://");
  const size_t path = url.find('/', scheme == std::string_view::npos ? 0 : scheme + 3);
  if (path == std::string_view::npos) return "";
  const size_t slash = url.rfind('/');
  return std::string(url.substr(slash + 1));
}

std::optional<SplitName> parse_split_name(std::string_view file) {
  // stem "-" digits "-of-" digits ".gguf", both numbers the same width.
  constexpr std::string_view ext = ".gguf";
  if (!file.ends_with(ext)) return std::nullopt;
  file.remove_suffix(ext.size());
  const size_t of = file.rfind("-of-");
  if (of == std::string_view::npos) return std::nullopt;
  const std::string_view count = file.substr(of + 4);
  const std::string_view head = file.substr(0, of);
  const size_t dash = head.rfind('-');
  if (dash == std::string_view::npos || dash == 0) return std::nullopt;
  const std::string_view index = head.substr(dash + 1);
  auto digits = [](std::string_view s) {
    return !s.empty() && s.size() <= 5 &&
           std::all_of(s.begin(), s.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; });
  };
  if (!digits(index) || !digits(count) || index.size() != count.size()) return std::nullopt;
  SplitName s;
  s.stem = std::string(head.substr(0, dash));
  s.index = std::stoi(std::string(index));
  s.count = std::stoi(std::string(count));
  s.width = static_cast<int>(count.size());
  if (s.count < 1 || s.index < 1 || s.index > s.count) return std::nullopt;
  return s;
}

std::string split_part_name(const SplitName& s, int index) {
  return fmt::format("{}-{:0{}d}-of-{:0{}d}.gguf", s.stem, index, s.width, s.count, s.width);
}

namespace {

std::string known_names() {
  std::string out;
  for (const KnownModel& m : known_models()) out += (out.empty() ? "" : ", ") + std::string(m.name);
  return out;
}

bool safe_file_name(std::string_view f) {
  return !f.empty() && f != "." && f != ".." && f.find('/') == std::string_view::npos &&
         f.find('\\') == std::string_view::npos && f.find('%') == std::string_view::npos;
}

}  // namespace

Plan plan(std::string_view source) {
  if (source.empty()) fail("give a model name ({}) or an http(s) URL of a .gguf file", known_names());
  Plan p;
  std::string url, file;
  if (source.find("://") == std::string_view::npos) {
    const auto models = known_models();
    const auto it = std::find_if(models.begin(), models.end(), [&](const KnownModel& m) { return m.name == source; });
    if (it == models.end()) fail("unknown model name '{}': known names are {}, or give an http(s) URL", source, known_names());
    url = known_model_url(*it);
    file = std::string(it->file);
    p.main_model = it->main_model;
  } else {
    if (!source.starts_with("http://") && !source.starts_with("https://"))
      fail("{}: only http:// and https:// URLs can be pulled", source);
    url = std::string(source);
    file = url_file_name(source);
    if (!file.ends_with(".gguf")) fail("{}: the URL does not name a .gguf file", source);
    // The name becomes a local path: no separators, no escapes to decode.
    if (!safe_file_name(file)) fail("{}: the file name '{}' cannot be used as a local file name", source, file);
  }
  const auto split = parse_split_name(file);
  if (!split) {
    p.files.push_back({url, file});
    return p;
  }
  const size_t path_end = std::min(url.find_first_of("?#"), url.size());
  const std::string base = url.substr(0, path_end - file.size());
  const std::string tail = url.substr(path_end);  // query string, if any
  for (int i = 1; i <= split->count; ++i) {
    const std::string name = split_part_name(*split, i);
    p.files.push_back({base + name + tail, name});
  }
  return p;
}

}  // namespace ds4::download

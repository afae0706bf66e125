#include <algorithm>
#include <cstdio>
#include <exception>
#include <string_view>

#include "cli/commands.h"
#include "util/error.h"

namespace ds4::cli {
std::vector<CommandSpec>& command_registry() {
  static std::vector<CommandSpec> r;
  return r;
}
}  // namespace ds4::cli

int main(int argc, char** argv) {
  CLI::App app{"ds4: inference engine, server and tools for DeepSeek V4 GGUF models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "ds4 0.1.0");
  auto& reg = ds4::cli::command_registry();
  std::stable_sort(reg.begin(), reg.end(), [](const auto& a, const auto& b) { return a.order < b.order; });
  for (const auto& c : reg) c.setup(app);
  // antirez/ds4 spells the system flag "-sys"; CLI11 allows only one-letter
  // short options, so map that exact word to --system.
  for (int i = 1; i < argc; ++i)
    if (std::string_view(argv[i]) == "-sys") argv[i] = const_cast<char*>("--system");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const ds4::Error& e) {
    std::fprintf(stderr, "ds4: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ds4: internal error: %s\n", e.what());
    return 70;
  }
  return 0;
}

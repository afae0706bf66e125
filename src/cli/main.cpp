#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "util/error.h"

int main(int argc, char** argv) {
  CLI::App app{"ds4: inference engine, server and tools for DeepSeek V4 GGUF models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "ds4 0.1.0");
  ds4::cli::register_info(app);
  ds4::cli::register_dump_tensor(app);
  ds4::cli::register_planned(app);
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

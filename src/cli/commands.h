#pragma once
// Each subcommand lives in its own cmd_*.cpp and registers itself on the app.
// Callbacks report failure by throwing ds4::Error; main() prints it once.
#include <CLI/CLI.hpp>

namespace ds4::cli {

void register_info(CLI::App& app);
void register_dump_tensor(CLI::App& app);
void register_planned(CLI::App& app);

}  // namespace ds4::cli

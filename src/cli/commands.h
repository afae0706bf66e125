#pragma once
// Subcommand registry. Each subcommand lives in its own cmd_*.cpp and registers
// itself with a static Registration, so adding a command touches no shared file.
// Callbacks report failure by throwing ds4::Error; main() prints it once.
#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace ds4::cli {

struct CommandSpec {
  std::string name;
  int order;  // position in --help
  std::function<void(CLI::App&)> setup;  // adds the subcommand to the app
};

std::vector<CommandSpec>& command_registry();

struct Registration {
  Registration(std::string name, int order, std::function<void(CLI::App&)> setup) {
    command_registry().push_back({std::move(name), order, std::move(setup)});
  }
};

}  // namespace ds4::cli

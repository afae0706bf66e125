#pragma once
// The model `ds4 run` opens when no -m is given: a one-line file holding an
// absolute path, written by `ds4 pull` after a main model arrives and read by
// `ds4 run` and scripts/demo-model (docs/model-download.md).
#include <filesystem>
#include <optional>
#include <string>

namespace ds4 {

// $XDG_CONFIG_HOME/ds4/default-model, else $HOME/.config/ds4/default-model.
// Throws ds4::Error when neither variable is set.
std::filesystem::path default_model_record();

// The path the record holds; nullopt when there is no record.
std::optional<std::string> read_default_model();

// Replaces the record atomically (a reader never sees half a path).
void write_default_model(const std::string& model_path);

// `given` when not empty; else the recorded default, which must still exist.
// Throws ds4::Error saying how to get a model when there is none.
std::string resolve_model_path(const std::string& given);

}  // namespace ds4

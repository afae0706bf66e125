// The default-model record: where it lives, round trip, and the messages when
// there is no model to run.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "util/default_model.h"
#include "util/error.h"

namespace ds4 {
namespace {

namespace fs = std::filesystem;

class DefaultModel : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ds4_default_model_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    const char* old = std::getenv("XDG_CONFIG_HOME");
    had_ = old != nullptr;
    if (old) old_ = old;
    ::setenv("XDG_CONFIG_HOME", dir_.c_str(), 1);
  }
  void TearDown() override {
    if (had_) ::setenv("XDG_CONFIG_HOME", old_.c_str(), 1);
    else ::unsetenv("XDG_CONFIG_HOME");
    fs::remove_all(dir_);
  }
  fs::path dir_;
  bool had_ = false;
  std::string old_;
};

TEST_F(DefaultModel, RecordRoundTrip) {
  EXPECT_EQ(default_model_record(), dir_ / "ds4" / "default-model");
  EXPECT_FALSE(read_default_model());
  EXPECT_EQ(resolve_model_path("given.gguf"), "given.gguf");
  try {
    resolve_model_path("");
    FAIL() << "no model and no record must be an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ds4 pull q2-imatrix"), std::string::npos) << e.what();
  }
  const fs::path model = dir_ / "m.gguf";
  std::ofstream(model) << "x";
  write_default_model(model.string());
  EXPECT_EQ(read_default_model(), model.string());
  EXPECT_EQ(resolve_model_path(""), model.string());
  EXPECT_FALSE(fs::exists(dir_ / "ds4" / "default-model.tmp"));
  fs::remove(model);
  EXPECT_THROW(resolve_model_path(""), Error);
}

TEST_F(DefaultModel, FallsBackToHomeConfig) {
  ::unsetenv("XDG_CONFIG_HOME");
  const char* home = std::getenv("HOME");
  if (home && *home) {
    EXPECT_EQ(default_model_record(), fs::path(home) / ".config" / "ds4" / "default-model");
  }
}

}  // namespace
}  // namespace ds4

// SHA-256 against the FIPS 180-2 test vectors, and the progress line's text.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "download/sha256.h"
#include "download/transfer_progress.h"
#include "util/error.h"

namespace ds4::download {
namespace {

TEST(Sha256, Fips180Vectors) {
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256, FileOfOneMillionAs) {
  const auto path = std::filesystem::temp_directory_path() / ("ds4_sha_test_" + std::to_string(::getpid()));
  {
    std::ofstream f(path, std::ios::binary);
    f << std::string(1000000, 'a');
  }
  int64_t last = -1;
  EXPECT_EQ(sha256_file(path.string(), [&](int64_t done, int64_t total) {
              EXPECT_EQ(total, 1000000);
              last = done;
            }),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  EXPECT_EQ(last, 1000000);
  std::filesystem::remove(path);
  EXPECT_THROW(sha256_file(path.string()), Error);
}

TEST(Progress, Text) {
  EXPECT_EQ(human_bytes(17), "17 B");
  EXPECT_EQ(human_bytes(1536), "1.5 KiB");
  EXPECT_EQ(human_bytes(81.0 * (1 << 30)), "81.0 GiB");
  EXPECT_EQ(human_seconds(42), "42s");
  EXPECT_EQ(human_seconds(187), "3m07s");
  EXPECT_EQ(human_seconds(3720), "1h02m");
  EXPECT_EQ(human_seconds(-1), "?");
  EXPECT_EQ(progress_text("m.gguf", 512, 1024, 256, false), "m.gguf: 50% 512 B of 1.0 KiB, 256 B/s, ETA 2s");
  EXPECT_EQ(progress_text("m.gguf", 256, 1024, 0, true),
            "m.gguf: [######..................] 25% 256 B of 1.0 KiB");
  EXPECT_EQ(progress_text("m.gguf", 2048, -1, 1024, false), "m.gguf: 2.0 KiB, 1.0 KiB/s");
}

}  // namespace
}  // namespace ds4::download

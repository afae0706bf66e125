// What `ds4 pull SOURCE` resolves to: the known-name table, URL file names,
// and multi-part GGUFs named the way llama.cpp's gguf-split names them.
#include <gtest/gtest.h>

#include "download/download.h"
#include "download/source.h"
#include "util/error.h"

namespace ds4::download {
namespace {

TEST(Source, KnownNamesResolveToHuggingFaceUrls) {
  const Plan p = plan("q2-imatrix");
  ASSERT_EQ(p.files.size(), 1u);
  EXPECT_TRUE(p.main_model);
  EXPECT_EQ(p.files[0].name, "DeepSeek-V4-Flash-IQ2XXS-w2Q2K-AProjQ8-SExpQ8-OutQ8-chat-v2-imatrix.gguf");
  EXPECT_EQ(p.files[0].url, "https://huggingface.co/antirez/deepseek-v4-gguf/resolve/main/" + p.files[0].name);
  EXPECT_FALSE(plan("mtp").main_model);
  for (const KnownModel& m : known_models()) {
    EXPECT_TRUE(m.file.ends_with(".gguf")) << m.name;
    EXPECT_EQ(plan(m.name).files.at(0).name, m.file);
  }
}

TEST(Source, UrlFileName) {
  EXPECT_EQ(url_file_name("https://h/a/b/model.gguf?download=true#x"), "model.gguf");
  EXPECT_EQ(url_file_name("http://h:8080/m.gguf"), "m.gguf");
  EXPECT_EQ(url_file_name("http://h/dir/"), "");
  EXPECT_EQ(url_file_name("http://h"), "");
}

TEST(Source, SplitNames) {
  const auto s = parse_split_name("Model-Q2-00002-of-00003.gguf");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->stem, "Model-Q2");
  EXPECT_EQ(s->index, 2);
  EXPECT_EQ(s->count, 3);
  EXPECT_EQ(split_part_name(*s, 1), "Model-Q2-00001-of-00003.gguf");
  for (const char* not_split : {"model.gguf", "m-00004-of-00003.gguf", "m-0001-of-00003.gguf", "m-00000-of-00000.gguf",
                                "-00001-of-00002.gguf", "m-00001-of-00002.bin", "m-0000a-of-00002.gguf"})
    EXPECT_FALSE(parse_split_name(not_split)) << not_split;
}

TEST(Source, MultiPartUrlExpandsToEveryPart) {
  const Plan p = plan("http://127.0.0.1:9/x/M-00003-of-00003.gguf?token=1");
  ASSERT_EQ(p.files.size(), 3u);
  EXPECT_EQ(p.files[0].url, "http://127.0.0.1:9/x/M-00001-of-00003.gguf?token=1");
  EXPECT_EQ(p.files[0].name, "M-00001-of-00003.gguf");
  EXPECT_EQ(p.files[2].url, "http://127.0.0.1:9/x/M-00003-of-00003.gguf?token=1");
}

TEST(Source, BadSourcesAreErrors) {
  for (const char* bad : {"", "nosuch", "ftp://h/m.gguf", "http://h/m.bin", "http://h/", "http://h/%2e%2e.gguf"})
    EXPECT_THROW(plan(bad), Error) << bad;
}

}  // namespace
}  // namespace ds4::download

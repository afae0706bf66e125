// Header parsing that decides where a resumed download's bytes go and which
// hash it is checked against (RFC 9110 §14.4 Content-Range, §8.8.3 ETag).
#include <gtest/gtest.h>

#include "download/http_meta.h"

namespace ds4::download {
namespace {

TEST(HttpMeta, StatusLine) {
  EXPECT_EQ(parse_status_line("HTTP/1.1 206 Partial Content\r\n"), 206);
  EXPECT_EQ(parse_status_line("HTTP/2 302\r\n"), 302);
  EXPECT_EQ(parse_status_line("HTTP/1.0 404 Not Found"), 404);
  EXPECT_FALSE(parse_status_line("Content-Length: 5\r\n"));
  EXPECT_FALSE(parse_status_line("HTTP/1.1\r\n"));
  EXPECT_FALSE(parse_status_line("HTTP/1.1 abc\r\n"));
}

TEST(HttpMeta, HeaderLine) {
  const auto h = parse_header_line("X-Linked-ETag:  \"abc\" \r\n");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->name, "x-linked-etag");
  EXPECT_EQ(h->value, "\"abc\"");
  EXPECT_FALSE(parse_header_line("\r\n"));
  EXPECT_FALSE(parse_header_line(": novalue\r\n"));
}

TEST(HttpMeta, ContentRange) {
  auto r = parse_content_range("bytes 100-199/1000");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->first, 100);
  EXPECT_EQ(r->last, 199);
  EXPECT_EQ(r->total, 1000);
  r = parse_content_range("bytes 0-9/*");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->total, -1);
  r = parse_content_range("bytes */81000000000");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->first, -1);
  EXPECT_EQ(r->total, 81000000000);
  for (const char* bad : {"bytes */*", "bytes 5-4/10", "bytes 0-10/10", "items 0-1/2", "bytes 1-2", "bytes -1-2/5",
                          "bytes 0-1/99999999999999999999"})
    EXPECT_FALSE(parse_content_range(bad)) << bad;
}

TEST(HttpMeta, Size) {
  EXPECT_EQ(parse_size(" 42\r\n"), 42);
  EXPECT_EQ(parse_size("1000000000000000000"), 1000000000000000000);
  EXPECT_FALSE(parse_size("9223372036854775808"));  // INT64_MAX + 1
  EXPECT_FALSE(parse_size("-1"));
  EXPECT_FALSE(parse_size("12a"));
  EXPECT_FALSE(parse_size(""));
}

// Built with append: gcc 12 warns falsely (-Wrestrict) on "\"" + str.
std::string quoted(std::string_view prefix, std::string_view s) {
  std::string out(prefix);
  out += '"';
  out += s;
  out += '"';
  return out;
}

TEST(HttpMeta, Sha256FromEtag) {
  const std::string hex = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";
  EXPECT_EQ(sha256_from_etag(quoted("", hex)), "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
  EXPECT_TRUE(sha256_from_etag(quoted("W/", hex)));
  EXPECT_TRUE(sha256_from_etag(hex));
  // A git blob id (40 hex: Hugging Face's ETag of small files), an S3 multipart
  // MD5, anything else: not a SHA-256.
  EXPECT_FALSE(sha256_from_etag("\"a94a8fe5ccb19ba61c4c0873d391e987982fbbd3\""));
  EXPECT_FALSE(sha256_from_etag("\"d41d8cd98f00b204e9800998ecf8427e-12\""));
  EXPECT_FALSE(sha256_from_etag(quoted("", hex.substr(1) + "g")));
}

}  // namespace
}  // namespace ds4::download

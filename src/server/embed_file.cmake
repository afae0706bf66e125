# cmake -DINPUT=FILE -DOUTPUT=FILE.cpp -DFUNCTION=NAME -P embed_file.cmake
# Writes a C++ file defining `std::string_view ds4::server::NAME()` that returns
# INPUT's bytes. A byte array rather than a string literal: -Wpedantic refuses
# string literals over 4095 characters, and any byte survives unescaped.
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" hex_len)
math(EXPR size "${hex_len} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
# 16 bytes a line keeps the generated file readable in a debugger.
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){16})" "\\1\n    " bytes "${bytes}")
get_filename_component(name "${INPUT}" NAME)
file(WRITE "${OUTPUT}"
"// Generated at build time from ${name} by src/server/embed_file.cmake; do not edit.
#include <cstddef>
#include <string_view>

namespace ds4::server {

namespace {
const unsigned char kBytes[${size} + 1] = {
    ${bytes}0x00};
}  // namespace

std::string_view ${FUNCTION}() { return {reinterpret_cast<const char*>(kBytes), ${size}}; }

}  // namespace ds4::server
")

#include <cmath>
#include <limits>

#include "gguf/gguf.h"
#include "util/error.h"

namespace ds4::gguf {

std::string_view value_type_name(ValueType t) {
  switch (t) {
    case ValueType::UINT8: return "u8";
    case ValueType::INT8: return "i8";
    case ValueType::UINT16: return "u16";
    case ValueType::INT16: return "i16";
    case ValueType::UINT32: return "u32";
    case ValueType::INT32: return "i32";
    case ValueType::FLOAT32: return "f32";
    case ValueType::BOOL: return "bool";
    case ValueType::STRING: return "string";
    case ValueType::ARRAY: return "array";
    case ValueType::UINT64: return "u64";
    case ValueType::INT64: return "i64";
    case ValueType::FLOAT64: return "f64";
  }
  return "?";
}

Value Value::f32(float v) {
  Value x;
  x.type = ValueType::FLOAT32;
  x.f = v;
  return x;
}
Value Value::f64(double v) {
  Value x;
  x.type = ValueType::FLOAT64;
  x.f = v;
  return x;
}
Value Value::str(std::string v) {
  Value x;
  x.type = ValueType::STRING;
  x.s = std::move(v);
  return x;
}
Value Value::array(ValueType elem, std::vector<Value> items) {
  for (size_t k = 0; k < items.size(); ++k)
    if (items[k].type != elem)
      fail("gguf array element {} has type {}, array is declared {}", k, value_type_name(items[k].type),
           value_type_name(elem));
  Value x;
  x.type = ValueType::ARRAY;
  x.elem_type = elem;
  x.items = std::move(items);
  return x;
}
Value Value::string_array(const std::vector<std::string>& v) {
  std::vector<Value> items;
  items.reserve(v.size());
  for (const auto& s : v) items.push_back(str(s));
  return array(ValueType::STRING, std::move(items));
}
Value Value::f32_array(const std::vector<float>& v) {
  std::vector<Value> items;
  items.reserve(v.size());
  for (float f : v) items.push_back(f32(f));
  return array(ValueType::FLOAT32, std::move(items));
}
Value Value::i32_array(const std::vector<int32_t>& v) {
  std::vector<Value> items;
  items.reserve(v.size());
  for (int32_t k : v) items.push_back(i32(k));
  return array(ValueType::INT32, std::move(items));
}
Value Value::u32_array(const std::vector<uint32_t>& v) {
  std::vector<Value> items;
  items.reserve(v.size());
  for (uint32_t k : v) items.push_back(u32(k));
  return array(ValueType::UINT32, std::move(items));
}

bool Value::is_integer() const {
  switch (type) {
    case ValueType::UINT8: case ValueType::UINT16: case ValueType::UINT32: case ValueType::UINT64:
    case ValueType::INT8: case ValueType::INT16: case ValueType::INT32: case ValueType::INT64:
      return true;
    default:
      return false;
  }
}

static bool is_unsigned(ValueType t) {
  return t == ValueType::UINT8 || t == ValueType::UINT16 || t == ValueType::UINT32 || t == ValueType::UINT64;
}

uint64_t Value::as_u64(std::string_view what) const {
  if (is_unsigned(type)) return u;
  if (is_integer()) {
    if (i < 0) fail("{}: expected a non-negative integer, got {}", what, i);
    return static_cast<uint64_t>(i);
  }
  fail("{}: expected an integer, got {}", what, value_type_name(type));
}

int64_t Value::as_i64(std::string_view what) const {
  if (is_unsigned(type)) {
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) fail("{}: value {} out of range", what, u);
    return static_cast<int64_t>(u);
  }
  if (is_integer()) return i;
  fail("{}: expected an integer, got {}", what, value_type_name(type));
}

double Value::as_f64(std::string_view what) const {
  if (is_float()) return f;
  if (is_unsigned(type)) return static_cast<double>(u);
  if (is_integer()) return static_cast<double>(i);
  fail("{}: expected a number, got {}", what, value_type_name(type));
}

bool Value::as_bool(std::string_view what) const {
  if (type == ValueType::BOOL) return u != 0;
  fail("{}: expected a bool, got {}", what, value_type_name(type));
}

const std::string& Value::as_string(std::string_view what) const {
  if (type == ValueType::STRING) return s;
  fail("{}: expected a string, got {}", what, value_type_name(type));
}

std::vector<std::string> Value::as_string_array(std::string_view what) const {
  if (type != ValueType::ARRAY || elem_type != ValueType::STRING)
    fail("{}: expected an array of strings, got {}", what,
         type == ValueType::ARRAY ? fmt::format("array of {}", value_type_name(elem_type))
                                  : std::string(value_type_name(type)));
  std::vector<std::string> out;
  out.reserve(items.size());
  for (const auto& v : items) out.push_back(v.s);
  return out;
}

static std::string quote(const std::string& s, size_t max_len = 60) {
  std::string out = "\"";
  size_t n = 0;
  for (unsigned char c : s) {
    if (n++ >= max_len) {
      out += "...";
      break;
    }
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string Value::to_string(size_t max_items) const {
  switch (type) {
    case ValueType::BOOL: return u ? "true" : "false";
    case ValueType::STRING: return quote(s);
    case ValueType::FLOAT32: return fmt::format("{}", static_cast<float>(f));
    case ValueType::FLOAT64: return fmt::format("{}", f);
    case ValueType::ARRAY: {
      std::string out = "[";
      for (size_t k = 0; k < items.size() && k < max_items; ++k) {
        if (k) out += ", ";
        out += items[k].to_string(max_items);
      }
      if (items.size() > max_items) out += fmt::format(", ... ({} {} items)", items.size(), value_type_name(elem_type));
      return out + "]";
    }
    default:
      return is_unsigned(type) ? fmt::format("{}", u) : fmt::format("{}", i);
  }
}

bool Value::operator==(const Value& o) const {
  if (type != o.type) return false;
  switch (type) {
    case ValueType::STRING: return s == o.s;
    case ValueType::FLOAT32:
    case ValueType::FLOAT64: return f == o.f || (std::isnan(f) && std::isnan(o.f));
    case ValueType::ARRAY: return elem_type == o.elem_type && items == o.items;
    default: return is_unsigned(type) || type == ValueType::BOOL ? u == o.u : i == o.i;
  }
}

}  // namespace ds4::gguf

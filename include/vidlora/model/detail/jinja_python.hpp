#pragma once
// Python semantics of jinja::Value for the Jinja2 subset (model/jinja_template.hpp): UTF-8 character classes,
// printing (str / repr), truth, comparison, arithmetic, sandboxed attribute and item lookup, string methods and
// json.dumps as transformers' tojson calls it. Internal to vidlora::model::jinja; include <vidlora/model.hpp>.

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/model/detail/unicode.hpp>
#include <vidlora/model/jinja_value.hpp>

namespace vidlora::model::jinja::detail {

// An error raised while evaluating, before the position of the expression is attached.
struct EvalError : Error {
  using Error::Error;
};
template <class... Args>
[[noreturn]] void raise(fmt::format_string<Args...> format, Args&&... args) {
  throw EvalError(fmt::format(format, std::forward<Args>(args)...));
}

// ---- UTF-8 and Python character classes --------------------------------------------------------------------

// One code point of well-formed UTF-8 at s[i] (model::detail::decode_utf8), advancing i past it.
inline char32_t next_code_point(std::string_view s, std::size_t& i) {
  char32_t cp = 0;
  const std::size_t n = model::detail::decode_utf8(s, i, cp);
  if (n == 0) raise("invalid UTF-8 in template text or value");
  i += n;
  return cp;
}
inline std::u32string decode(std::string_view s) {
  std::u32string out;
  for (std::size_t i = 0; i < s.size();) out.push_back(next_code_point(s, i));
  return out;
}
using model::detail::append_utf8;
inline std::string encode(std::u32string_view cps) {
  std::string out;
  for (char32_t c : cps) append_utf8(out, c);
  return out;
}

// Python's str.isspace (also the `\s` of jinja2's lexer).
inline bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Blocks without letter case; a non-ASCII code point outside them makes case mapping an error (ASCII only here).
inline bool is_caseless(char32_t c) {
  static constexpr std::pair<char32_t, char32_t> kCaseless[] = {
      {0x80, 0xA9},     {0xAB, 0xB4},       {0xB6, 0xB9},       {0xBB, 0xBF},      {0xD7, 0xD7},     {0xF7, 0xF7},
      {0x0590, 0x08FF}, {0x0900, 0x0FFF},   {0x1000, 0x109F},   {0x1100, 0x11FF},  {0x2000, 0x206F}, {0x20A0, 0x20CF},
      {0x2190, 0x245F}, {0x2500, 0x2BFF},   {0x2E00, 0x33FF},   {0x3400, 0x4DBF},  {0x4DC0, 0x9FFF}, {0xA000, 0xA4CF},
      {0xAC00, 0xD7AF}, {0xE000, 0xF8FF},   {0xF900, 0xFAFF},   {0xFE10, 0xFE6F},  {0xFF01, 0xFF20}, {0xFF3B, 0xFF40},
      {0xFF5B, 0xFFEF}, {0x1F000, 0x1F0FF}, {0x1F200, 0x1FAFF}, {0x20000, 0x3134F}};
  return std::any_of(std::begin(kCaseless), std::end(kCaseless),
                     [c](const auto& r) { return c >= r.first && c <= r.second; });
}
inline bool is_upper_ascii(char32_t c) { return c >= 'A' && c <= 'Z'; }
inline bool is_lower_ascii(char32_t c) { return c >= 'a' && c <= 'z'; }
inline void check_caseless(char32_t c) {
  if (c >= 0x80 && !is_caseless(c))
    raise("case mapping of non-ASCII letter U+{:04X} is not supported (only ASCII letters change case)",
          static_cast<std::uint32_t>(c));
}
inline char32_t to_upper(char32_t c) {
  check_caseless(c);
  return is_lower_ascii(c) ? c - 32 : c;
}
inline char32_t to_lower(char32_t c) {
  check_caseless(c);
  return is_upper_ascii(c) ? c + 32 : c;
}
inline std::string map_case(std::string_view s, char32_t (*f)(char32_t)) {
  std::u32string cps = decode(s);
  for (char32_t& c : cps) c = f(c);
  return encode(cps);
}
// Python's str.capitalize and str.title (ASCII letters are the only cased characters here).
inline std::string capitalize(std::string_view s) {
  std::u32string cps = decode(s);
  for (std::size_t i = 0; i < cps.size(); ++i) cps[i] = i == 0 ? to_upper(cps[i]) : to_lower(cps[i]);
  return encode(cps);
}
inline std::string python_title(std::string_view s) {
  std::u32string cps = decode(s);
  bool previous_cased = false;
  for (char32_t& c : cps) {
    c = previous_cased ? to_lower(c) : to_upper(c);
    previous_cased = is_upper_ascii(c) || is_lower_ascii(c);
  }
  return encode(cps);
}
// Python's str.isprintable for one code point, which decides whether repr() escapes it. Known for ASCII, Latin,
// Greek, Cyrillic, Hangul, CJK, kana, common symbols and emoji, and for the invisible (format, separator, private)
// ones; anything else is an error rather than a guess at the Unicode database.
inline bool is_printable(char32_t c) {
  const auto in = [c](std::initializer_list<std::pair<char32_t, char32_t>> ranges) {
    return std::any_of(ranges.begin(), ranges.end(), [c](const auto& r) { return c >= r.first && c <= r.second; });
  };
  if (in({{0x00, 0x1F},       {0x7F, 0xA0},       {0xAD, 0xAD},     {0x600, 0x605},   {0x61C, 0x61C},
          {0x6DD, 0x6DD},     {0x70F, 0x70F},     {0x180E, 0x180E}, {0x1680, 0x1680}, {0x2000, 0x200F},
          {0x2028, 0x202F},   {0x205F, 0x2064},   {0x2066, 0x206F}, {0x3000, 0x3000}, {0xD800, 0xF8FF},
          {0xFDD0, 0xFDEF},   {0xFEFF, 0xFEFF},   {0xFFF9, 0xFFFB}, {0xFFFE, 0xFFFF}, {0x1D173, 0x1D17A},
          {0xE0001, 0xE007F}, {0xF0000, 0x10FFFF}}))
    return false;
  if (in({{0x20, 0x7E},     {0xA1, 0x36F},    {0x37A, 0x37F},     {0x384, 0x38A},    {0x38C, 0x38C},
          {0x38E, 0x3A1},   {0x3A3, 0x52F},   {0x1100, 0x11FF},   {0x2010, 0x2027},  {0x2030, 0x205E},
          {0x20A0, 0x20BF}, {0x2100, 0x214F}, {0x2190, 0x23FF},   {0x2460, 0x27BF},  {0x3001, 0x303F},
          {0x3041, 0x3096}, {0x3099, 0x30FF}, {0x3131, 0x318E},   {0x3400, 0x4DBF},  {0x4E00, 0x9FFF},
          {0xAC00, 0xD7A3}, {0xFF01, 0xFFBE}, {0x1F300, 0x1F64F}, {0x1F900, 0x1F9FF}}))
    return true;
  raise("repr() of U+{:04X} is not supported (whether Python escapes it depends on the Unicode database)",
        static_cast<std::uint32_t>(c));
}

// ---- Python printing ----------------------------------------------------------------------------------------

// float.__repr__: the shortest round-trip digits, positional for exponents in [-4, 16).
inline std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string s(buf, result.ptr);
  const std::string sign = s[0] == '-' ? "-" : "";
  if (!sign.empty()) s.erase(0, 1);
  const std::size_t e = s.find('e');
  const int exponent = std::stoi(s.substr(e + 1));
  std::string digits;
  for (char c : s.substr(0, e))
    if (c != '.') digits += c;
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) return sign + "0." + std::string(static_cast<std::size_t>(-exponent - 1), '0') + digits;
    const auto point = static_cast<std::size_t>(exponent) + 1;
    if (digits.size() <= point) return sign + digits + std::string(point - digits.size(), '0') + ".0";
    return sign + digits.substr(0, point) + "." + digits.substr(point);
  }
  std::string mantissa = digits.substr(0, 1) + (digits.size() > 1 ? "." + digits.substr(1) : "");
  const int magnitude = std::abs(exponent);
  return sign + mantissa + (exponent < 0 ? "e-" : "e+") + (magnitude < 10 ? "0" : "") + std::to_string(magnitude);
}

inline std::string string_repr(std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const char quote = has_single && s.find('"') == std::string_view::npos ? '"' : '\'';
  std::string out(1, quote);
  for (char32_t c : decode(s)) {
    if (c == static_cast<char32_t>(quote) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (!is_printable(c)) {
      const auto v = static_cast<std::uint32_t>(c);
      out += c < 0x100     ? fmt::format("\\x{:02x}", v)
             : c < 0x10000 ? fmt::format("\\u{:04x}", v)
                           : fmt::format("\\U{:08x}", v);
    } else {
      append_utf8(out, c);
    }
  }
  return out + quote;
}

// The value of a namespace / loop attribute that is always present.
inline const Value& get(const Object& attrs, std::string_view name) {
  for (const auto& [key, value] : attrs)
    if (key.as_string() == name) return value;
  raise("missing attribute '{}'", name);
}

inline std::string type_name(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::undefined: return "Undefined";
    case Value::Kind::none: return "NoneType";
    case Value::Kind::boolean: return "bool";
    case Value::Kind::integer: return "int";
    case Value::Kind::floating: return "float";
    case Value::Kind::string: return "str";
    case Value::Kind::list: return "list";
    case Value::Kind::tuple: return "tuple";
    case Value::Kind::dict: return "dict";
    case Value::Kind::namespace_object: return "Namespace";
    case Value::Kind::loop: return "LoopContext";
    case Value::Kind::range: return "range";
    case Value::Kind::dict_view:
    case Value::Kind::iterator: return v.as_string();
    case Value::Kind::callable: return "function";
  }
  return "object";
}

inline std::string repr(const Value& v);

// Python's str(): what {{ }} and ~ print.
inline std::string to_str(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::undefined: return "";
    case Value::Kind::string: return v.as_string();
    default: return repr(v);
  }
}

inline std::string repr(const Value& v) {
  const auto join_items = [](const Array& items) {
    std::string out;
    for (std::size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + repr(items[i]);
    return out;
  };
  const auto dict_repr = [](const Object& entries) {
    std::string out = "{";
    for (std::size_t i = 0; i < entries.size(); ++i)
      out += (i ? ", " : "") + repr(entries[i].first) + ": " + repr(entries[i].second);
    return out + "}";
  };
  switch (v.kind()) {
    case Value::Kind::undefined: return "Undefined";
    case Value::Kind::none: return "None";
    case Value::Kind::boolean: return v.as_bool() ? "True" : "False";
    case Value::Kind::integer: return std::to_string(v.as_int());
    case Value::Kind::floating: return float_repr(v.as_double());
    case Value::Kind::string:
      return v.is_markup() ? "Markup(" + string_repr(v.as_string()) + ")" : string_repr(v.as_string());
    case Value::Kind::list: return "[" + join_items(v.items()) + "]";
    case Value::Kind::tuple: return "(" + join_items(v.items()) + (v.items().size() == 1 ? ",)" : ")");
    case Value::Kind::dict: return dict_repr(v.entries());
    case Value::Kind::dict_view: return v.as_string() + "([" + join_items(v.items()) + "])";
    case Value::Kind::namespace_object: return "<Namespace " + dict_repr(*v.attributes()) + ">";
    case Value::Kind::range: {
      const auto& [start, stop, step] = v.range_arguments();
      return fmt::format("range({}, {}{})", start, stop, step == 1 ? "" : fmt::format(", {}", step));
    }
    case Value::Kind::loop: {
      const Value& i = get(*v.attributes(), "index");
      return fmt::format("<LoopContext {}/{}>", i.as_int(), get(*v.attributes(), "length").as_int());
    }
    case Value::Kind::iterator: break;
    case Value::Kind::callable:
      if (v.as_string() == "macro") return fmt::format("<Macro '{}'>", v.self().items()[1].as_string());
      break;
  }
  raise("printing a {} object is not supported (Python prints its address)", type_name(v));
}

// ---- Python semantics of values -----------------------------------------------------------------------------

[[noreturn]] inline void undefined_error(const Value& v) {
  if (v.as_string().starts_with("SecurityError")) raise("{}", v.as_string());
  raise("UndefinedError: {}", v.as_string().empty() ? "value is undefined" : v.as_string());
}

inline bool truthy(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::undefined:
    case Value::Kind::none: return false;
    case Value::Kind::boolean:
    case Value::Kind::integer: return v.as_int() != 0;
    case Value::Kind::floating: return v.as_double() != 0;
    case Value::Kind::string: return !v.as_string().empty();
    case Value::Kind::list:
    case Value::Kind::tuple:
    case Value::Kind::dict_view:
    case Value::Kind::range: return !v.items().empty();
    case Value::Kind::dict: return !v.entries().empty();
    default: return true;
  }
}

inline Value make_str_list(const std::u32string& cps) {
  Array out;
  for (char32_t c : cps) out.emplace_back(encode(std::u32string(1, c)));
  return Value::list(std::move(out));
}

// iter(v) drained into a vector (consumes an iterator).
inline Array iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::undefined: return {};
    case Value::Kind::string: {
      const Value chars = make_str_list(decode(v.as_string()));
      return chars.items();
    }
    case Value::Kind::list:
    case Value::Kind::tuple:
    case Value::Kind::dict_view:
    case Value::Kind::range: return v.items();
    case Value::Kind::dict: {
      Array keys;
      for (const auto& entry : v.entries()) keys.push_back(entry.first);
      return keys;
    }
    case Value::Kind::iterator: {
      std::size_t& pos = *v.iterator_position();
      Array rest(v.items().begin() + static_cast<std::ptrdiff_t>(pos), v.items().end());
      pos = v.items().size();
      return rest;
    }
    default: raise("TypeError: '{}' object is not iterable", type_name(v));
  }
}

inline std::int64_t length(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::undefined: return 0;
    case Value::Kind::string: return static_cast<std::int64_t>(decode(v.as_string()).size());
    case Value::Kind::list:
    case Value::Kind::tuple:
    case Value::Kind::dict_view:
    case Value::Kind::range: return static_cast<std::int64_t>(v.items().size());
    case Value::Kind::dict: return static_cast<std::int64_t>(v.entries().size());
    case Value::Kind::loop: return get(*v.attributes(), "length").as_int();
    default: raise("TypeError: object of type '{}' has no len()", type_name(v));
  }
}

inline bool is_int_like(const Value& v) { return v.kind() == Value::Kind::integer || v.kind() == Value::Kind::boolean; }

inline bool hashable(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::list:
    case Value::Kind::dict:
    case Value::Kind::dict_view: return false;
    case Value::Kind::tuple: return std::all_of(v.items().begin(), v.items().end(), hashable);
    default: return true;
  }
}

// Python ==.
inline bool equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (is_int_like(a) && is_int_like(b)) return a.as_int() == b.as_int();
    return a.as_double() == b.as_double();
  }
  if (a.kind() == Value::Kind::dict_view || b.kind() == Value::Kind::dict_view) {
    if (a.kind() != b.kind()) return false;  // a view never equals a list, a dict, ...
    if (a.as_string() == "dict_values" || b.as_string() == "dict_values" || a.as_string() != b.as_string())
      raise("comparing {} and {} views is not supported", a.as_string(), b.as_string());
    const auto in_b = [&](const Value& x) {
      return std::any_of(b.items().begin(), b.items().end(), [&](const Value& y) { return equals(x, y); });
    };
    return a.items().size() == b.items().size() && std::all_of(a.items().begin(), a.items().end(), in_b);
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::undefined:
    case Value::Kind::none: return true;
    case Value::Kind::string: return a.as_string() == b.as_string();
    case Value::Kind::list:
    case Value::Kind::tuple:
    case Value::Kind::range:
      return std::equal(a.items().begin(), a.items().end(), b.items().begin(), b.items().end(), equals);
    case Value::Kind::dict: {
      if (a.entries().size() != b.entries().size()) return false;
      for (const auto& entry : a.entries()) {  // (no structured binding: clang 14 cannot capture one)
        auto it = std::find_if(b.entries().begin(), b.entries().end(),
                               [&](const auto& e) { return equals(e.first, entry.first); });
        if (it == b.entries().end() || !equals(it->second, entry.second)) return false;
      }
      return true;
    }
    case Value::Kind::namespace_object:
    case Value::Kind::loop: return a.attributes() == b.attributes();
    case Value::Kind::iterator: return a.iterator_position() == b.iterator_position();
    default: raise("comparing {} objects is not supported", type_name(a));
  }
}

// Python <; TypeError across unordered types.
inline bool less(const Value& a, const Value& b) {
  if (a.is_undefined()) undefined_error(a);
  if (b.is_undefined()) undefined_error(b);
  if (a.is_number() && b.is_number()) {
    if (is_int_like(a) && is_int_like(b)) return a.as_int() < b.as_int();
    return a.as_double() < b.as_double();
  }
  if (a.is_string() && b.is_string()) return a.as_string() < b.as_string();  // UTF-8 bytes order as code points
  if (a.kind() == b.kind() && (a.kind() == Value::Kind::list || a.kind() == Value::Kind::tuple)) {
    const Array &x = a.items(), &y = b.items();
    for (std::size_t i = 0; i < x.size() && i < y.size(); ++i)
      if (!equals(x[i], y[i])) return less(x[i], y[i]);
    return x.size() < y.size();
  }
  raise("TypeError: '<' not supported between instances of '{}' and '{}'", type_name(a), type_name(b));
}

inline bool contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::string:
      if (!item.is_string()) raise("TypeError: 'in <string>' requires string as left operand, not {}", type_name(item));
      return container.as_string().find(item.as_string()) != std::string::npos;
    case Value::Kind::dict_view:  // keys and items views are sets
      if (container.as_string() != "dict_values" && !hashable(item))
        raise("TypeError: unhashable type: '{}'", type_name(item));
      return std::any_of(container.items().begin(), container.items().end(),
                         [&](const Value& x) { return equals(x, item); });
    case Value::Kind::dict:
      if (!hashable(item)) raise("TypeError: unhashable type: '{}'", type_name(item));
      return std::any_of(container.entries().begin(), container.entries().end(),
                         [&](const auto& e) { return equals(e.first, item); });
    case Value::Kind::iterator: {
      std::size_t& pos = *container.iterator_position();
      while (pos < container.items().size())
        if (equals(container.items()[pos++], item)) return true;
      return false;
    }
    default: {
      const Array items = iterate(container);
      return std::any_of(items.begin(), items.end(), [&](const Value& x) { return equals(x, item); });
    }
  }
}

// ---- Python arithmetic --------------------------------------------------------------------------------------

// Integer arithmetic with Python's results where they fit in int64, an error where they do not.
inline std::int64_t checked(char op, std::int64_t a, std::int64_t b) {
  std::int64_t r = 0;
  const bool overflow = op == '+'   ? __builtin_add_overflow(a, b, &r)
                        : op == '-' ? __builtin_sub_overflow(a, b, &r)
                                    : __builtin_mul_overflow(a, b, &r);
  if (overflow) raise("integer overflow (Python integers are unbounded, this interpreter's are int64)");
  return r;
}
inline Value repeat(const Value& seq, std::int64_t n) {
  const std::size_t unit = seq.is_string() ? seq.as_string().size() : seq.items().size();
  if (n > 0 && unit > 0 && static_cast<std::uint64_t>(n) > (std::uint64_t{1} << 28) / unit)
    raise("MemoryError: repeating a {} of {} elements {} times", type_name(seq), unit, n);
  if (unit == 0) n = 0;
  if (seq.is_string()) {
    std::string out;
    for (std::int64_t i = 0; i < n; ++i) out += seq.as_string();
    return Value(out);
  }
  Array out;
  for (std::int64_t i = 0; i < n; ++i) out.insert(out.end(), seq.items().begin(), seq.items().end());
  return Value::sequence(seq.kind(), std::move(out));
}
inline double python_fmod(double a, double b) {
  double mod = std::fmod(a, b);
  if (mod != 0) {
    if ((b < 0) != (mod < 0)) mod += b;
  } else {
    mod = std::copysign(0.0, b);
  }
  return mod;
}

inline Value binary(std::string_view op, const Value& a, const Value& b) {
  if (a.is_undefined()) undefined_error(a);
  if (b.is_undefined()) undefined_error(b);
  if (a.is_markup() || b.is_markup())
    raise("'{}' with a |safe or |escape (Markup) string is not supported (Markup escapes the other operand)", op);
  const bool ints = is_int_like(a) && is_int_like(b);
  const bool numbers = a.is_number() && b.is_number();
  const auto seq_kind = [](const Value& v) { return v.kind() == Value::Kind::list || v.kind() == Value::Kind::tuple; };
  if (op == "+") {
    if (ints) return Value(checked('+', a.as_int(), b.as_int()));
    if (numbers) return Value(a.as_double() + b.as_double());
    if (a.is_string() && b.is_string()) return Value(a.as_string() + b.as_string());
    if (seq_kind(a) && a.kind() == b.kind()) {
      Array out = a.items();
      out.insert(out.end(), b.items().begin(), b.items().end());
      return Value::sequence(a.kind(), std::move(out));
    }
    if (a.is_string()) raise("TypeError: can only concatenate str (not \"{}\") to str", type_name(b));
  } else if (op == "-") {
    if (ints) return Value(checked('-', a.as_int(), b.as_int()));
    if (numbers) return Value(a.as_double() - b.as_double());
  } else if (op == "*") {
    if (ints) return Value(checked('*', a.as_int(), b.as_int()));
    if (numbers) return Value(a.as_double() * b.as_double());
    if ((a.is_string() || seq_kind(a)) && is_int_like(b)) return repeat(a, b.as_int());
    if ((b.is_string() || seq_kind(b)) && is_int_like(a)) return repeat(b, a.as_int());
  } else if (op == "/") {
    if (numbers) {
      if (b.as_double() == 0) raise("ZeroDivisionError: division by zero");
      return Value(a.as_double() / b.as_double());
    }
  } else if (op == "//" || op == "%") {
    if (numbers && (ints ? b.as_int() == 0 : b.as_double() == 0))
      raise("ZeroDivisionError: integer division or modulo by zero");
    if (ints) {
      const std::int64_t x = a.as_int(), y = b.as_int();
      if (y == -1) return Value(op == "//" ? checked('-', 0, x) : std::int64_t{0});
      std::int64_t q = x / y, m = x % y;
      if (m != 0 && ((m < 0) != (y < 0))) --q, m += y;
      return Value(op == "//" ? q : m);
    }
    if (numbers) {
      const double x = a.as_double(), y = b.as_double();
      if (op == "%") return Value(python_fmod(x, y));
      const double mod = std::fmod(x, y);  // CPython's float_floor_div
      double div = (x - mod) / y;
      if (mod != 0 && ((y < 0) != (mod < 0))) div -= 1.0;
      if (div == 0) return Value(std::copysign(0.0, x / y));
      double floor_div = std::floor(div);
      if (div - floor_div > 0.5) floor_div += 1.0;
      return Value(floor_div);
    }
    if (op == "%" && a.is_string()) raise("printf-style string formatting ('...' % value) is not supported");
  } else if (op == "**") {
    if (ints && b.as_int() >= 0) {  // exponentiation by squaring
      std::int64_t result = 1, base = a.as_int(), e = b.as_int();
      if (base == 0 || base == 1) return Value(e == 0 ? std::int64_t{1} : base);
      if (base == -1) return Value(e % 2 == 0 ? std::int64_t{1} : std::int64_t{-1});
      for (; e > 0; e >>= 1) {
        if (e & 1) result = checked('*', result, base);
        if (e > 1) base = checked('*', base, base);
      }
      return Value(result);
    }
    if (numbers) {
      const double x = a.as_double(), y = b.as_double();
      if (x == 0 && y < 0) raise("ZeroDivisionError: zero to a negative power");
      if (x < 0 && y != std::floor(y)) raise("a negative number to a fractional power is complex: not supported");
      const double r = std::pow(x, y);
      if (std::isinf(r) && std::isfinite(x) && std::isfinite(y))
        raise("OverflowError: (34, 'Numerical result out of range')");
      return Value(r);
    }
  }
  raise("TypeError: unsupported operand type(s) for {}: '{}' and '{}'", op, type_name(a), type_name(b));
}

// ---- attribute and item lookup, as jinja2's sandboxed getattr / getitem ------------------------------------

inline bool one_of(std::string_view name, std::initializer_list<std::string_view> names) {
  return std::find(names.begin(), names.end(), name) != names.end();
}
inline Value unsafe_attribute(const Value& obj, std::string_view name) {
  return Value::undefined(
      fmt::format("SecurityError: access to attribute '{}' of '{}' object is unsafe.", name, type_name(obj)));
}
inline Value missing(const Value& obj, const Value& key) {
  if (key.is_string())
    return Value::undefined(fmt::format("'{} object' has no attribute {}", type_name(obj), repr(key)));
  return Value::undefined(fmt::format("'{} object' has no element {}", type_name(obj), repr(key)));
}

// getattr(obj, name): Python attributes (methods) only.
inline std::optional<Value> python_attribute(const Value& obj, std::string_view name) {
  if (name.starts_with("__")) raise("access to the special attribute '{}' is not supported", name);
  switch (obj.kind()) {
    case Value::Kind::undefined: undefined_error(obj);
    case Value::Kind::string:
      if (one_of(name,
                 {"capitalize", "casefold",     "center",       "count",   "encode",     "endswith",    "expandtabs",
                  "find",       "format",       "format_map",   "index",   "isalnum",    "isalpha",     "isascii",
                  "isdecimal",  "isdigit",      "isidentifier", "islower", "isnumeric",  "isprintable", "isspace",
                  "istitle",    "isupper",      "join",         "ljust",   "lower",      "lstrip",      "maketrans",
                  "partition",  "removeprefix", "removesuffix", "replace", "rfind",      "rindex",      "rjust",
                  "rpartition", "rsplit",       "rstrip",       "split",   "splitlines", "startswith",  "strip",
                  "swapcase",   "title",        "translate",    "upper",   "zfill"}))
        return Value::callable("str." + std::string(name), obj);
      return std::nullopt;
    case Value::Kind::dict:
      if (one_of(name, {"clear", "pop", "popitem", "setdefault", "update"})) return unsafe_attribute(obj, name);
      if (one_of(name, {"copy", "fromkeys", "get", "items", "keys", "values"}))
        return Value::callable("dict." + std::string(name), obj);
      return std::nullopt;
    case Value::Kind::list:
    case Value::Kind::tuple:
      if (obj.kind() == Value::Kind::list &&
          one_of(name, {"append", "clear", "extend", "insert", "pop", "remove", "reverse", "sort"}))
        return unsafe_attribute(obj, name);
      if (one_of(name, {"copy", "count", "index"}) && !(name == "copy" && obj.kind() == Value::Kind::tuple))
        return Value::callable(std::string(name == "copy"    ? "list.copy"
                                           : name == "count" ? "sequence.count"
                                                             : "sequence.index"),
                               obj);
      return std::nullopt;
    case Value::Kind::namespace_object:
    case Value::Kind::loop:
      for (const auto& [key, value] : *obj.attributes())
        if (key.as_string() == name) return value;
      if (obj.kind() == Value::Kind::loop && one_of(name, {"changed"})) raise("loop.{} is not supported", name);
      return std::nullopt;
    case Value::Kind::boolean:
    case Value::Kind::integer:
    case Value::Kind::floating:
      if (one_of(name, {"real", "imag", "numerator", "denominator", "conjugate", "bit_length", "bit_count", "to_bytes",
                        "from_bytes", "as_integer_ratio", "is_integer", "hex", "fromhex"}))
        raise("the {} attribute '{}' is not supported", type_name(obj), name);
      return std::nullopt;
    case Value::Kind::none: return std::nullopt;
    default:  // dict views, ranges, generators, functions: their Python attributes are not modelled
      if (one_of(name, {"mapping", "isdisjoint", "start", "stop", "step", "count", "index", "send", "throw", "close",
                        "gi_code", "gi_frame", "gi_running", "gi_yieldfrom", "gi_suspended"}) ||
          obj.kind() == Value::Kind::callable)
        raise("the {} attribute '{}' is not supported", type_name(obj), name);
      return std::nullopt;
  }
}

// Slicing with Python's rules (negative steps included).
inline std::vector<std::size_t> slice_indices(std::int64_t n, const Value& start, const Value& stop,
                                              const Value& step) {
  const auto as_index = [](const Value& v) {
    if (!is_int_like(v)) raise("TypeError: slice indices must be integers or None, not {}", type_name(v));
    return v.as_int();
  };
  const std::int64_t s = step.is_none() ? 1 : as_index(step);
  if (s == 0) raise("ValueError: slice step cannot be zero");
  const auto clamp = [&](const Value& v, std::int64_t fallback) {
    if (v.is_none()) return fallback;
    std::int64_t i = as_index(v);
    if (i < 0) i += n;
    return s > 0 ? std::clamp<std::int64_t>(i, 0, n) : std::clamp<std::int64_t>(i, -1, n - 1);
  };
  const std::int64_t lo = clamp(start, s > 0 ? 0 : n - 1), hi = clamp(stop, s > 0 ? n : -1);
  std::vector<std::size_t> out;
  for (std::int64_t i = lo; s > 0 ? i < hi : i > hi; i += s) out.push_back(static_cast<std::size_t>(i));
  return out;
}

// obj[key] without the attribute fallback; nullopt where Python raises TypeError or LookupError.
inline std::optional<Value> python_item(const Value& obj, const Value& key) {
  switch (obj.kind()) {
    case Value::Kind::undefined: undefined_error(obj);
    case Value::Kind::list:
    case Value::Kind::tuple:
    case Value::Kind::range:
    case Value::Kind::string: {
      if (!is_int_like(key)) return std::nullopt;
      const bool is_str = obj.is_string();
      const std::u32string cps = is_str ? decode(obj.as_string()) : std::u32string();
      const auto n = static_cast<std::int64_t>(is_str ? cps.size() : obj.items().size());
      const std::int64_t i = key.as_int() < 0 ? key.as_int() + n : key.as_int();
      if (i < 0 || i >= n) return std::nullopt;
      const auto at = static_cast<std::size_t>(i);
      return is_str ? Value(encode(cps.substr(at, 1))) : obj.items()[at];
    }
    case Value::Kind::dict:
      if (!hashable(key)) return std::nullopt;
      for (const auto& [k, v] : obj.entries())
        if (equals(k, key)) return v;
      return std::nullopt;
    default: return std::nullopt;
  }
}

// jinja2's environment.getattr (x.name): the attribute first, then the item.
inline Value get_attribute(const Value& obj, const std::string& name) {
  if (auto v = python_attribute(obj, name)) return *v;
  if (auto v = python_item(obj, Value(name))) return *v;
  return missing(obj, Value(name));
}
// jinja2's environment.getitem (x[key]): the item first, then the attribute for a string key.
inline Value get_item(const Value& obj, const Value& key) {
  if (auto v = python_item(obj, key)) return *v;
  if (key.is_string())
    if (auto v = python_attribute(obj, key.as_string())) return *v;
  return missing(obj, key);
}

// ---- string methods -----------------------------------------------------------------------------------------

inline std::u32string strip(const std::u32string& s, const Value& chars, bool left, bool right) {
  if (!chars.is_none() && !chars.is_string()) raise("TypeError: strip arg must be None or str");
  const std::u32string set = chars.is_none() ? std::u32string() : decode(chars.as_string());
  const auto strip_it = [&](char32_t c) { return chars.is_none() ? is_space(c) : set.find(c) != std::u32string::npos; };
  std::size_t b = 0, e = s.size();
  if (left)
    while (b < e && strip_it(s[b])) ++b;
  if (right)
    while (e > b && strip_it(s[e - 1])) --e;
  return s.substr(b, e - b);
}

inline Value split(const std::string& text, const Value& sep, std::int64_t maxsplit) {
  Array out;
  if (sep.is_none()) {
    const std::u32string s = decode(text);
    std::size_t i = 0;
    while (true) {
      while (i < s.size() && is_space(s[i])) ++i;
      if (i == s.size()) break;
      if (maxsplit >= 0 && static_cast<std::int64_t>(out.size()) == maxsplit) {
        out.emplace_back(encode(s.substr(i)));
        break;
      }
      std::size_t j = i;
      while (j < s.size() && !is_space(s[j])) ++j;
      out.emplace_back(encode(s.substr(i, j - i)));
      i = j;
    }
    return Value::list(std::move(out));
  }
  if (!sep.is_string()) raise("TypeError: must be str or None, not {}", type_name(sep));
  const std::string& d = sep.as_string();
  if (d.empty()) raise("ValueError: empty separator");
  std::size_t start = 0;
  for (std::size_t hit; (maxsplit < 0 || static_cast<std::int64_t>(out.size()) < maxsplit) &&
                        (hit = text.find(d, start)) != std::string::npos;
       start = hit + d.size())
    out.emplace_back(text.substr(start, hit - start));
  out.emplace_back(text.substr(start));
  return Value::list(std::move(out));
}

inline std::string replace(const std::string& s, const std::string& old, const std::string& with, std::int64_t count) {
  std::string out;
  if (old.empty()) {  // Python inserts `with` around every code point
    const std::u32string cps = decode(s);
    std::int64_t done = 0;
    for (std::size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || done < count) out += with, ++done;
      if (i < cps.size()) append_utf8(out, cps[i]);
    }
    return out;
  }
  std::size_t start = 0;
  for (std::int64_t done = 0; count < 0 || done < count; ++done) {
    const std::size_t hit = s.find(old, start);
    if (hit == std::string::npos) break;
    out += s.substr(start, hit - start) + with;
    start = hit + old.size();
  }
  return out + s.substr(start);
}

// Python's str.splitlines() (no keepends).
inline std::vector<std::u32string> splitlines(const std::u32string& s) {
  std::vector<std::u32string> lines;
  std::size_t start = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char32_t c = s[i];
    if (c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || (c >= 0x1C && c <= 0x1E) || c == 0x85 || c == 0x2028 ||
        c == 0x2029) {
      lines.push_back(s.substr(start, i - start));
      if (c == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
      start = i + 1;
    }
  }
  if (start < s.size()) lines.push_back(s.substr(start));
  return lines;
}

// ---- json.dumps, as transformers' tojson filter calls it ----------------------------------------------------

struct JsonOptions {
  bool ensure_ascii = false;
  std::optional<std::string> indent;
  std::string item_separator = ", ", key_separator = ": ";
  bool sort_keys = false;
};

inline std::string json_string(std::string_view s, bool ensure_ascii) {
  std::string out = "\"";
  for (char32_t c : decode(s)) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20 || (ensure_ascii && c > 0x7E)) {
          if (c >= 0x10000) {
            const char32_t v = c - 0x10000;
            out += fmt::format("\\u{:04x}\\u{:04x}", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
          } else {
            out += fmt::format("\\u{:04x}", static_cast<std::uint32_t>(c));
          }
        } else {
          append_utf8(out, c);
        }
    }
  }
  return out + "\"";
}

inline std::string json_float(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  return float_repr(d);
}

inline void to_json(const Value& v, const JsonOptions& options, int level, std::string& out) {
  const auto newline = [&](int depth) {
    if (options.indent) {
      out += '\n';
      for (int i = 0; i < depth; ++i) out += *options.indent;
    }
  };
  switch (v.kind()) {
    case Value::Kind::none: out += "null"; return;
    case Value::Kind::boolean: out += v.as_bool() ? "true" : "false"; return;
    case Value::Kind::integer: out += std::to_string(v.as_int()); return;
    case Value::Kind::floating: out += json_float(v.as_double()); return;
    case Value::Kind::string: out += json_string(v.as_string(), options.ensure_ascii); return;
    case Value::Kind::list:
    case Value::Kind::tuple: {
      if (v.items().empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (std::size_t i = 0; i < v.items().size(); ++i) {
        if (i) out += options.item_separator;
        newline(level + 1);
        to_json(v.items()[i], options, level + 1, out);
      }
      newline(level);
      out += ']';
      return;
    }
    case Value::Kind::dict: {
      if (v.entries().empty()) {
        out += "{}";
        return;
      }
      Object entries = v.entries();
      if (options.sort_keys)
        std::stable_sort(entries.begin(), entries.end(),
                         [](const auto& a, const auto& b) { return less(a.first, b.first); });
      out += '{';
      for (std::size_t i = 0; i < entries.size(); ++i) {
        const Value& key = entries[i].first;
        if (i) out += options.item_separator;
        newline(level + 1);
        if (key.is_string())
          out += json_string(key.as_string(), options.ensure_ascii);
        else if (key.kind() == Value::Kind::integer)
          out += '"' + std::to_string(key.as_int()) + '"';
        else if (key.kind() == Value::Kind::floating)
          out += '"' + json_float(key.as_double()) + '"';
        else if (key.kind() == Value::Kind::boolean)
          out += key.as_bool() ? "\"true\"" : "\"false\"";
        else if (key.is_none())
          out += "\"null\"";
        else
          raise("TypeError: keys must be str, int, float, bool or None, not {}", type_name(key));
        out += options.key_separator;
        to_json(entries[i].second, options, level + 1, out);
      }
      newline(level);
      out += '}';
      return;
    }
    default: raise("TypeError: Object of type {} is not JSON serializable", type_name(v));
  }
}

}  // namespace vidlora::model::jinja::detail

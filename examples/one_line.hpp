#pragma once
// caption's stdout is one line per video, path<TAB>caption: a field's characters that would end the line or the
// field are escaped. A backslash, newline, carriage return and tab are written \\, \n, \r, \t; the other characters
// Python's str.splitlines() breaks at (vertical tab \v, form feed \f, 0x1C-0x1E as \x1c..\x1e, and in UTF-8
// U+0085, U+2028, U+2029 as \u0085, \u2028, \u2029), so that `for line in sys.stdout` and line-based shell tools
// both see one line per video. Every other byte is kept (the text is UTF-8 and stays so).

#include <string>
#include <string_view>

namespace demo {

inline std::string one_line(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    const std::string_view rest = text.substr(i);
    switch (c) {
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '\v': out += "\\v"; continue;
      case '\f': out += "\\f"; continue;
      case '\x1c': out += "\\x1c"; continue;
      case '\x1d': out += "\\x1d"; continue;
      case '\x1e': out += "\\x1e"; continue;
      default: break;
    }
    if (rest.starts_with("\xC2\x85")) {
      out += "\\u0085";
      i += 1;
    } else if (rest.starts_with("\xE2\x80\xA8") || rest.starts_with("\xE2\x80\xA9")) {
      out += rest[2] == '\xA8' ? "\\u2028" : "\\u2029";
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace demo

#include <catch2/catch.hpp>

#include <string>

#include "../../examples/one_line.hpp"

TEST_CASE("caption's stdout fields escape every character that ends a line", "[programs][caption]") {
  using demo::one_line;
  CHECK(one_line("노란 배경에서 흰 원이 움직인다.") == "노란 배경에서 흰 원이 움직인다.");
  CHECK(one_line("a\\b\nc\rd\te") == "a\\\\b\\nc\\rd\\te");
  CHECK(one_line("\v\f\x1c\x1d\x1e") == "\\v\\f\\x1c\\x1d\\x1e");
  // U+0085, U+2028, U+2029 (UTF-8), which str.splitlines() also breaks at; their neighbours are kept.
  CHECK(one_line("a\xC2\x85z") == "a\\u0085z");
  CHECK(one_line("a\xE2\x80\xA8z\xE2\x80\xA9") == "a\\u2028z\\u2029");
  CHECK(one_line("\xC2\xA9\xE2\x80\xA7\xE2\x80\xAA") == "\xC2\xA9\xE2\x80\xA7\xE2\x80\xAA");  // ©, U+2027, U+202A
  CHECK(one_line("\xC2") == "\xC2");                                                          // a cut sequence stays
  CHECK(one_line("") == "");
  // The same break set as Python's str.splitlines() (its documentation's table), and none left in the output.
  const std::string breakers = "\n\r\v\f\x1c\x1d\x1e\xC2\x85\xE2\x80\xA8\xE2\x80\xA9";
  const std::string escaped = one_line("x" + breakers + "y");
  CHECK(escaped == "x\\n\\r\\v\\f\\x1c\\x1d\\x1e\\u0085\\u2028\\u2029y");
  for (const char c : std::string("\n\r\v\f\x1c\x1d\x1e")) CHECK(escaped.find(c) == std::string::npos);
  CHECK(escaped.find("\xE2\x80") == std::string::npos);
}

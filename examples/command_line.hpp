#pragma once
// The example programs' command line: every option is declared once (name, kind, help), which gives the
// usage text, and anything else is an error naming it. `--name value`, `--name=value`, `-h`/`--help`,
// and `--` before positional arguments that start with '-'. A value given as the next argument never starts with "--"
// (`--out --resume` is an error, not a directory named --resume); `--name=--value` gives one that does.

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include <vidlora/core/error.hpp>

namespace demo {

struct Option {
  enum class Kind { Flag, Integer, Real, Text };
  std::string name;  // without the leading "--"
  Kind kind = Kind::Text;
  std::string help;
  std::string value_name = {};                            // shown in the usage text: --frames N
  double min = -std::numeric_limits<double>::infinity();  // numbers below are an error naming the option
  bool above_min = false;                                 // true: min itself is an error too (a value must exceed it)
};

inline Option flag(std::string name, std::string help) {
  return {std::move(name), Option::Kind::Flag, std::move(help)};
}
inline Option integer(std::string name, std::string value, std::string help, double min = 0) {
  return {std::move(name), Option::Kind::Integer, std::move(help), std::move(value), min};
}
inline Option real(std::string name, std::string value, std::string help, double min = 0) {
  return {std::move(name), Option::Kind::Real, std::move(help), std::move(value), min};
}
// A real number that must be greater than `above` (e.g. a penalty that divides: > 0).
inline Option real_above(std::string name, std::string value, std::string help, double above) {
  return {std::move(name), Option::Kind::Real, std::move(help), std::move(value), above, true};
}
inline Option text(std::string name, std::string value, std::string help) {
  return {std::move(name), Option::Kind::Text, std::move(help), std::move(value)};
}

// A usage error: the programs print it with a pointer to --help and exit 2.
struct UsageError : vidlora::Error {
  using vidlora::Error::Error;
};

class CommandLine {
 public:
  // synopsis: the lines after "usage:"; options: every option the program reads.
  CommandLine(std::string program, std::string synopsis, std::vector<Option> options)
      : program_(std::move(program)), synopsis_(std::move(synopsis)), options_(std::move(options)) {}

  // Parses argv; throws UsageError naming the offending option or value. After it, help_requested()
  // tells whether -h/--help was given (then nothing else is checked).
  void parse(int argc, char** argv) {
    std::vector<std::string_view> args(argv + 1, argv + argc);
    const auto end_of_options = std::find(args.begin(), args.end(), "--");
    if (std::any_of(args.begin(), end_of_options, [](std::string_view a) { return a == "-h" || a == "--help"; })) {
      help_ = true;
      return;
    }
    bool positional_only = false;
    for (std::size_t i = 0; i < args.size(); ++i) {
      const std::string_view a = args[i];
      if (positional_only || a == "-" || a.empty() || a[0] != '-') {
        rest.emplace_back(a);
        continue;
      }
      if (a == "--") {
        positional_only = true;
        continue;
      }
      if (a.substr(0, 2) != "--") throw UsageError(fmt::format("unknown option {}", a));
      std::string name(a.substr(2));
      std::optional<std::string> value;
      if (const auto eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name.resize(eq);
      }
      const Option& o = find(name);
      if (o.kind == Option::Kind::Flag) {
        if (value) throw UsageError(fmt::format("option --{} takes no value (got '{}')", name, *value));
        values_[name] = "1";
        continue;
      }
      if (!value) {
        if (i + 1 >= args.size()) throw UsageError(fmt::format("option --{} needs a value ({})", name, o.value_name));
        value = std::string(args[++i]);
        // `--out --resume`: the next option is not this one's value (a negative number still is)
        if (looks_like_option(*value))
          throw UsageError(
              fmt::format("option --{} needs a value (got {}; a value that starts with -- is given as "
                          "--{}=VALUE)",
                          name, *value, name));
      }
      check_value(o, *value);
      values_[name] = *value;
    }
  }

  bool help_requested() const { return help_; }

  std::string usage() const {
    std::string u = fmt::format("usage: {}\n\noptions:\n", synopsis_);
    std::size_t width = 0;
    for (const auto& o : options_) width = std::max(width, label(o).size());
    for (const auto& o : options_) u += fmt::format("  {:<{}}  {}\n", label(o), width, o.help);
    u += fmt::format("  {:<{}}  {}\n", "-h, --help", width, "print this text and exit");
    return u;
  }

  bool has(const std::string& name) const {
    declared(name);
    return values_.count(name) > 0;
  }
  // The options given, by name (without "--"), in name order.
  std::vector<std::string> given() const {
    std::vector<std::string> names;
    for (const auto& [name, value] : values_) names.push_back(name);
    return names;
  }
  std::string str(const std::string& name, const std::string& def) const {
    declared(name);
    return has(name) ? values_.at(name) : def;
  }
  int integer(const std::string& name, int def) const {
    require_kind(name, Option::Kind::Integer);
    return has(name) ? static_cast<int>(parse_integer(values_.at(name))) : def;
  }
  double real(const std::string& name, double def) const {
    require_kind(name, Option::Kind::Real);
    return has(name) ? parse_real(values_.at(name)) : def;
  }

  std::vector<std::string> rest;  // positional arguments

 private:
  static std::string label(const Option& o) {
    return o.kind == Option::Kind::Flag ? "--" + o.name : fmt::format("--{} {}", o.name, o.value_name);
  }

  const Option& find(const std::string& name) const {
    for (const auto& o : options_)
      if (o.name == name) return o;
    std::string hint;
    std::size_t best = 3;  // suggest only close names (at most 2 edits)
    for (const auto& o : options_)
      if (const auto d = edit_distance(name, o.name); d < best) {
        best = d;
        hint = fmt::format(" (did you mean --{}?)", o.name);
      }
    throw UsageError(fmt::format("unknown option --{}{}", name, hint));
  }

  const Option& declared(const std::string& name) const {
    for (const auto& o : options_)
      if (o.name == name) return o;
    vidlora::fail("{}: the program reads option --{} but does not declare it", program_, name);
  }
  void require_kind(const std::string& name, Option::Kind k) const {
    if (declared(name).kind != k) vidlora::fail("{}: option --{} is read with the wrong kind", program_, name);
  }

  static long long parse_integer(std::string_view s) {
    long long v = 0;
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || p != s.data() + s.size() || v > std::numeric_limits<int>::max() ||
        v < std::numeric_limits<int>::min())
      throw UsageError("not an integer");
    return v;
  }
  static double parse_real(std::string_view s) {
    double v = 0;
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || p != s.data() + s.size() || !std::isfinite(v)) throw UsageError("not a number");
    return v;
  }
  static void check_value(const Option& o, const std::string& v) {
    double x = 0;
    try {
      if (o.kind == Option::Kind::Integer)
        x = static_cast<double>(parse_integer(v));
      else if (o.kind == Option::Kind::Real)
        x = parse_real(v);
      else
        return;
    } catch (const UsageError& e) {
      throw UsageError(fmt::format("option --{}: '{}' is {}", o.name, v, e.what()));
    }
    if (x < o.min) throw UsageError(fmt::format("option --{}: {} is below its minimum {}", o.name, v, o.min));
    if (o.above_min && x == o.min)
      throw UsageError(fmt::format("option --{}: {} must be greater than {}", o.name, v, o.min));
  }

  // "--", "--name" or "--name=value" (not "-5" or "-0.5", not "-"): what a value given as the next argument must not be.
  static bool looks_like_option(std::string_view v) { return v.substr(0, 2) == "--"; }

  static std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
      cur[0] = i;
      for (std::size_t j = 1; j <= b.size(); ++j)
        cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      std::swap(prev, cur);
    }
    return prev[b.size()];
  }

  std::string program_, synopsis_;
  std::vector<Option> options_;
  std::map<std::string, std::string> values_;
  bool help_ = false;
};

}  // namespace demo

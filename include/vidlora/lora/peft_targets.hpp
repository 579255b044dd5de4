#pragma once
// Which modules a PEFT LoraConfig adapts, resolved as PEFT 0.21 resolves it
// (peft.tuners.tuners_utils.check_target_module_exists) for one module name `key`:
//   - exclude_modules: a regex string that fully matches key, or a list entry equal to key or a
//     ".<entry>" suffix of it: excluded;
//   - target_modules as a string: a regular expression that must match the whole key (re.fullmatch);
//   - target_modules as a list: an entry equal to key or a ".<entry>" suffix of it; then, when
//     layers_to_transform is set, the layer index (the first number after "<layers_pattern>." or, with
//     no pattern, the first ".<name>.<digits>." segment) must be one of layers_to_transform.
// Regular expressions are ECMAScript (std::regex); a Python-only construct is an error naming the pattern.

#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/lora/target_modules.hpp>

namespace vidlora::lora {

class PeftTargets {
 public:
  PeftTargets() = default;

  // target_modules as a regular expression (PEFT writes this form for LLaVA).
  static PeftTargets regex(const std::string& pattern) {
    PeftTargets t;
    t.regex_text_ = pattern;
    t.regex_ = compile(pattern, "target_modules");
    return t;
  }
  // target_modules as a list of names or name suffixes.
  static PeftTargets names(std::vector<std::string> names) {
    PeftTargets t;
    t.names_ = std::move(names);
    return t;
  }
  PeftTargets& exclude_regex(const std::string& pattern) {
    exclude_text_ = pattern;
    exclude_ = compile(pattern, "exclude_modules");
    return *this;
  }
  PeftTargets& exclude_names(std::vector<std::string> names) {
    exclude_names_ = std::move(names);
    return *this;
  }
  // layers_to_transform (list targets only, as in PEFT) and layers_pattern.
  PeftTargets& layers(std::vector<int> layers_to_transform, std::vector<std::string> layers_pattern = {}) {
    layers_ = std::move(layers_to_transform);
    layer_patterns_.clear();
    for (const auto& p : layers_pattern) {
      layer_patterns_.push_back(compile("(?:^|.*?\\.)" + p + "\\.(\\d+)\\.[^]*", "layers_pattern"));
    }
    layer_pattern_text_ = std::move(layers_pattern);
    return *this;
  }

  bool is_regex() const { return regex_.has_value(); }
  const std::optional<std::string>& regex_text() const { return regex_text_; }
  const std::vector<std::string>& target_names() const { return names_; }

  // True when PEFT would put a LoRA layer on the module named `key` ("model.layers.0.self_attn.q_proj").
  bool matches(const std::string& key) const {
    if (exclude_ && std::regex_match(key, *exclude_)) return false;
    for (const auto& e : exclude_names_)
      if (matches_target(key, e)) return false;
    if (regex_) return std::regex_match(key, *regex_);
    bool found = false;
    for (const auto& n : names_) found = found || matches_target(key, n);
    if (!found || layers_.empty()) return found;
    const std::optional<int> index = layer_index(key);
    if (!index) return false;
    for (const int l : layers_)
      if (l == *index) return true;
    return false;
  }

 private:
  static std::regex compile(const std::string& pattern, const char* field) {
    try {
      return std::regex(pattern, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      fail("PEFT adapter config: {} \"{}\" is not a regular expression vidlora can run (ECMAScript syntax: {})", field,
           pattern, e.what());
    }
  }

  std::optional<int> layer_index(const std::string& key) const {
    std::smatch m;
    if (layer_patterns_.empty()) {
      static const std::regex first_index(R"(.*?\.[^.]*\.(\d+)\.[^]*)");
      if (std::regex_match(key, m, first_index)) return std::stoi(m[1].str());
      return std::nullopt;
    }
    for (const auto& p : layer_patterns_)
      if (std::regex_match(key, m, p)) return std::stoi(m[1].str());
    return std::nullopt;
  }

  std::optional<std::string> regex_text_, exclude_text_;
  std::optional<std::regex> regex_, exclude_;
  std::vector<std::string> names_, exclude_names_;
  std::vector<int> layers_;
  std::vector<std::regex> layer_patterns_;
  std::vector<std::string> layer_pattern_text_;
};

}  // namespace vidlora::lora

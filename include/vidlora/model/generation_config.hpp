#pragma once
// A Hugging Face directory's generation settings, read as transformers' generate() reads them: they are
// generate()'s defaults (over transformers' global ones, which GenerationOptions' defaults are, but for
// max_new_tokens: the programs' own), the caller's options override them.
//
// From generation_config.json when the directory has one; else from config.json, as GenerationConfig.from_model_config
// builds it: its top-level generation fields, then its text_config's where still unset (in practice the EOS id).
// Used: do_sample, temperature, top_k, top_p, min_p, repetition_penalty, no_repeat_ngram_size,
// encoder_repetition_penalty and encoder_no_repeat_ngram_size (over the prompt: generate() gives a decoder-only
// model's input_ids to them), num_beams, length_penalty, max_new_tokens, max_length (the prompt and the new tokens together, where max_new_tokens is not
// given), min_new_tokens, min_length and eos_token_id (an id or a list). A null value is unset. With the file, its
// eos_token_id only (a file without one stops at no EOS in transformers; vidlora's programs always stop at the end
// of the assistant's turn too, model::GenerationOptions::eos_token_id).
// Fields of transformers' GenerationConfig that change nothing for one caption generated here are accepted and
// listed (`not_used`): the token ids generate() does not stop at (bos, pad, decoder_start, forced_bos: it acts
// only on a one-id prompt), caching (but a quantized cache, refused) and output switches, assisted decoding (the same tokens), diversity_penalty
// (only with beam groups, refused), version stamps; so are keys GenerationConfig does not have (transformers keeps
// them as custom entries that change nothing). The fields that would change the result and that vidlora's
// generate() does not do are refused by check_supported, naming the field and its value, where they would act under
// the final options (transformers builds their processor): typical_p < 1, epsilon_cutoff / eta_cutoff in (0, 1) and
// top_h only when sampling; early_stopping (true / "never"), renormalize_logits and low_memory only with beams;
// num_return_sequences > 1 without beams (transformers raises; with beams the first returned is the best); the
// others (bad_words_ids, suppress_tokens, forced_eos_token_id, sequence_bias, guidance_scale, contrastive
// search, DoLa, stop strings, beam groups, watermarking, a quantized cache_implementation, ...) always.
// Tested against transformers' own reading (tools/reference/generation_config_cases.py).

#include <algorithm>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <vidlora/core/error.hpp>
#include <vidlora/model/config.hpp>
#include <vidlora/model/generation.hpp>

namespace vidlora::model {

struct GenerationConfigFile {
  std::filesystem::path file;  // the file read: generation_config.json, or config.json without it; empty: neither
  std::optional<bool> do_sample;
  std::optional<int> max_new_tokens, max_length, num_beams, no_repeat_ngram_size, top_k, min_new_tokens, min_length;
  std::optional<int> encoder_no_repeat_ngram_size;
  std::optional<double> temperature, top_p, min_p, repetition_penalty, length_penalty, encoder_repetition_penalty;
  std::vector<int> eos_token_ids;     // the file's
  std::vector<std::string> not_used;  // fields present that change nothing here, by name (config.json: none listed)
  struct Unsupported {
    enum class When { Always, Sampling, Beams, OneBeam };
    std::string field, value;  // the value as JSON
    When when = When::Always;
  };
  std::vector<Unsupported> unsupported;  // set to what vidlora's generate() does not do

  // Every used field the file sets, onto `o` (the caller's own options go on top afterwards). The EOS ids join
  // o.extra_eos_token_ids (but for o.eos_token_id).
  void apply(GenerationOptions& o) const;

  // Throws naming the first unsupported field that would act under `o` (the options as they will run).
  void check_supported(const GenerationOptions& o) const {
    for (const Unsupported& u : unsupported) {
      if (u.when == Unsupported::When::Sampling && !o.do_sample) continue;
      if (u.when == Unsupported::When::Beams && o.num_beams == 1) continue;
      if (u.when == Unsupported::When::OneBeam && o.num_beams > 1) continue;
      fail("{}: {} = {} is not supported by vidlora's generation{}", file.string(), u.field, u.value,
           u.when == Unsupported::When::Sampling  ? " when sampling"
           : u.when == Unsupported::When::Beams   ? " with beam search"
           : u.when == Unsupported::When::OneBeam ? " without beam search"
                                                  : "");
    }
  }

  // One line: what the file sets, for a program's report ("do_sample true, temperature 0.7, ...").
  std::string summary() const;
};

namespace detail {

// The EOS ids of an "eos_token_id" value: an id or a list of ids (null: none).
inline std::vector<int> eos_ids_of(const nlohmann::json& v, const std::filesystem::path& file) {
  std::vector<int> ids;
  const auto one = [&](const nlohmann::json& x) {
    require(x.is_number_integer() && x.get<long long>() >= 0 && x.get<long long>() <= 0x7fffffff,
            "{}: eos_token_id must be a token id or a list of token ids (got {})", file.string(), v.dump());
    ids.push_back(x.get<int>());
  };
  if (v.is_null()) return ids;
  if (v.is_array()) {
    for (const auto& x : v) one(x);
  } else {
    one(v);
  }
  return ids;
}

// The used fields other than eos_token_id, in the order summary() names them: the member that holds each, and the
// GenerationOptions member it sets (none: a length, set with transformers' precedence rule by apply()).
template <class T>
using FileMember = std::optional<T> GenerationConfigFile::*;
template <class T>
using OptionsMember = T GenerationOptions::*;
struct UsedGenerationField {
  const char* name;
  std::variant<FileMember<bool>, FileMember<int>, FileMember<double>> in_file;
  std::variant<std::monostate, OptionsMember<bool>, OptionsMember<int>, OptionsMember<double>> in_options{};
  int min = 0;  // an integer's least value
};
inline const std::vector<UsedGenerationField>& used_generation_fields() {
  using G = GenerationConfigFile;
  using O = GenerationOptions;
  static const std::vector<UsedGenerationField> kFields{
      {"do_sample", &G::do_sample, &O::do_sample},
      {"temperature", &G::temperature, &O::temperature},
      {"top_k", &G::top_k, &O::top_k},
      {"top_p", &G::top_p, &O::top_p},
      {"min_p", &G::min_p, &O::min_p},
      {"repetition_penalty", &G::repetition_penalty, &O::repetition_penalty},
      {"no_repeat_ngram_size", &G::no_repeat_ngram_size, &O::no_repeat_ngram_size},
      {"num_beams", &G::num_beams, &O::num_beams, 1},
      {"length_penalty", &G::length_penalty, &O::length_penalty},
      {"encoder_repetition_penalty", &G::encoder_repetition_penalty, &O::encoder_repetition_penalty},
      {"encoder_no_repeat_ngram_size", &G::encoder_no_repeat_ngram_size, &O::encoder_no_repeat_ngram_size},
      {"max_new_tokens", &G::max_new_tokens, {}, 1},  // transformers' validate refuses 0
      {"max_length", &G::max_length, {}, 1},
      {"min_new_tokens", &G::min_new_tokens},
      {"min_length", &G::min_length},
  };
  return kFields;
}

inline const UsedGenerationField* used_generation_field(std::string_view name) {
  for (const auto& f : used_generation_fields())
    if (name == f.name) return &f;
  return nullptr;
}

}  // namespace detail

inline void GenerationConfigFile::apply(GenerationOptions& o) const {
  for (const auto& f : detail::used_generation_fields())
    std::visit(
        [&](auto file_member) {
          using T = typename std::remove_cvref_t<decltype(this->*file_member)>::value_type;
          if (const auto* option = std::get_if<detail::OptionsMember<T>>(&f.in_options); option && this->*file_member)
            o.** option = *(this->*file_member);
        },
        f.in_file);
  // transformers: max_new_tokens takes precedence over max_length, which counts the prompt too
  if (max_new_tokens) {
    o.max_new_tokens = *max_new_tokens;
    o.max_length = 0;
  } else if (max_length) {
    o.max_length = *max_length;
    o.max_new_tokens = *max_length;  // at most; the prompt's length takes its share
  }
  // transformers: min_new_tokens takes precedence over min_length (_prepare_generated_length)
  if (min_new_tokens) {
    o.min_new_tokens = *min_new_tokens;
    o.min_length = 0;
  } else if (min_length) {
    o.min_length = *min_length;
  }
  for (const int id : eos_token_ids)
    if (id != o.eos_token_id &&
        std::find(o.extra_eos_token_ids.begin(), o.extra_eos_token_ids.end(), id) == o.extra_eos_token_ids.end())
      o.extra_eos_token_ids.push_back(id);
}

inline std::string GenerationConfigFile::summary() const {
  std::vector<std::string> parts;
  for (const auto& f : detail::used_generation_fields())
    std::visit(
        [&](auto file_member) {
          if (const auto& value = this->*file_member; value) {
            if constexpr (std::is_same_v<std::remove_cvref_t<decltype(*value)>, double>)
              parts.push_back(fmt::format("{} {:g}", f.name, *value));
            else
              parts.push_back(fmt::format("{} {}", f.name, *value));
          }
        },
        f.in_file);
  if (!eos_token_ids.empty()) parts.push_back(fmt::format("eos_token_id {}", fmt::join(eos_token_ids, ", ")));
  return parts.empty() ? std::string("nothing generate() uses") : fmt::format("{}", fmt::join(parts, ", "));
}

namespace detail {

// How generate() takes a GenerationConfig field (transformers 5.24's fields, every one of them).
enum class GenerationField { Used, NotUsed, Refused };
using GenerationWhen = GenerationConfigFile::Unsupported::When;
struct GenerationFieldRule {
  const char* name;
  GenerationField kind;
  GenerationWhen when = GenerationWhen::Always;   // Refused: when it would act
  bool (*acts)(const nlohmann::json&) = nullptr;  // Refused: whether this value builds its processor (null: inert)
};

inline bool acts_unless_null(const nlohmann::json& v) { return !v.is_null(); }
inline bool acts_when_true(const nlohmann::json& v) { return v.is_boolean() && v.get<bool>(); }
inline bool acts_unless_false(const nlohmann::json& v) { return !v.is_null() && v != false; }
inline bool acts_unless_one(const nlohmann::json& v) {
  return !v.is_null() && !(v.is_number() && v.get<double>() == 1.0);
}
inline bool acts_above_one(const nlohmann::json& v) { return v.is_number() && v.get<double>() > 1.0; }
inline bool acts_below_one(const nlohmann::json& v) { return v.is_number() && v.get<double>() < 1.0; }
inline bool acts_in_open_unit(const nlohmann::json& v) {
  return v.is_number() && v.get<double>() > 0.0 && v.get<double>() < 1.0;
}
inline bool acts_unless_empty(const nlohmann::json& v) { return !v.is_null() && !(v.is_array() && v.empty()); }
inline bool acts_when_quantized(const nlohmann::json& v) {
  return v.is_string() && v.get<std::string>().find("quantized") != std::string::npos;
}

inline const GenerationFieldRule* generation_field_rule(std::string_view name) {
  using F = GenerationField;
  using W = GenerationWhen;
  static const GenerationFieldRule kRules[] = {
      {"eos_token_id", F::Used},  // and used_generation_fields()
      {"_from_model_config", F::NotUsed},
      {"transformers_version", F::NotUsed},
      {"_commit_hash", F::NotUsed},
      {"bos_token_id", F::NotUsed},
      {"pad_token_id", F::NotUsed},
      {"decoder_start_token_id", F::NotUsed},
      {"forced_bos_token_id", F::NotUsed},
      {"diversity_penalty", F::NotUsed},
      {"use_cache", F::NotUsed},
      {"cache_implementation", F::Refused, W::Always, acts_when_quantized},  // a quantized KV cache
      {"cache_config", F::NotUsed},
      {"max_cache_len", F::NotUsed},
      {"compile_config", F::NotUsed},
      {"disable_compile", F::NotUsed},
      {"prefill_chunk_size", F::NotUsed},
      {"continuous_batching_config", F::NotUsed},
      {"output_attentions", F::NotUsed},
      {"output_hidden_states", F::NotUsed},
      {"output_scores", F::NotUsed},
      {"output_logits", F::NotUsed},
      {"return_dict_in_generate", F::NotUsed},
      {"is_assistant", F::NotUsed},
      {"num_assistant_tokens", F::NotUsed},
      {"num_assistant_tokens_schedule", F::NotUsed},
      {"assistant_confidence_threshold", F::NotUsed},
      {"prompt_lookup_num_tokens", F::NotUsed},
      {"max_matching_ngram_size", F::NotUsed},
      {"assistant_early_exit", F::NotUsed},
      {"assistant_lookbehind", F::NotUsed},
      {"target_lookbehind", F::NotUsed},
      {"assistant_ensemble_weight", F::NotUsed},
      {"typical_p", F::Refused, W::Sampling, acts_below_one},
      {"epsilon_cutoff", F::Refused, W::Sampling, acts_in_open_unit},
      {"eta_cutoff", F::Refused, W::Sampling, acts_in_open_unit},
      {"top_h", F::Refused, W::Sampling, acts_unless_null},
      {"early_stopping", F::Refused, W::Beams, acts_unless_false},
      {"renormalize_logits", F::Refused, W::Beams, acts_when_true},
      {"low_memory", F::Refused, W::Beams, acts_when_true},

      {"num_return_sequences", F::Refused, W::OneBeam, acts_above_one},  // with beams the first is the best
      {"num_beam_groups", F::Refused, W::Always, acts_above_one},
      {"guidance_scale", F::Refused, W::Always, acts_unless_one},
      {"max_time", F::Refused, W::Always, acts_unless_null},
      {"stop_strings", F::Refused, W::Always, acts_unless_null},
      {"bad_words_ids", F::Refused, W::Always, acts_unless_null},
      {"force_words_ids", F::Refused, W::Always, acts_unless_null},
      {"constraints", F::Refused, W::Always, acts_unless_null},
      {"suppress_tokens", F::Refused, W::Always, acts_unless_empty},
      {"begin_suppress_tokens", F::Refused, W::Always, acts_unless_empty},
      {"forced_eos_token_id", F::Refused, W::Always, acts_unless_null},
      {"sequence_bias", F::Refused, W::Always, acts_unless_null},
      {"exponential_decay_length_penalty", F::Refused, W::Always, acts_unless_null},
      {"remove_invalid_values", F::Refused, W::Always, acts_when_true},
      {"penalty_alpha", F::Refused, W::Always, acts_unless_null},
      {"dola_layers", F::Refused, W::Always, acts_unless_null},
      {"token_healing", F::Refused, W::Always, acts_when_true},
      {"watermarking_config", F::Refused, W::Always, acts_unless_null},
      {"use_mtp", F::Refused, W::Always, acts_when_true},
      {"speculation_type", F::Refused, W::Always, acts_unless_null},
  };
  static const GenerationFieldRule kUsed{"", F::Used};
  for (const auto& r : kRules)
    if (name == r.name) return &r;
  return used_generation_field(name) != nullptr ? &kUsed : nullptr;
}

// One field `key` = `v` of `file` into `g`: a used field's value (type-checked), a refused one that would act, and,
// when `list_not_used`, the name of one that changes nothing: a GenerationConfig field without effect here, or a key
// GenerationConfig does not have (generation_config.json's custom entries; config.json's reader passes only fields).
inline void take_generation_field(GenerationConfigFile& g, const std::filesystem::path& file, const std::string& key,
                                  const nlohmann::json& v, bool list_not_used) {
  const auto wrong = [&](std::string_view what) {
    fail("{}: {} must be {} (got {})", file.string(), key, what, v.dump());
  };
  const GenerationFieldRule* rule = generation_field_rule(key);
  if (rule == nullptr || rule->kind == GenerationField::NotUsed) {
    if (list_not_used) g.not_used.push_back(key);
    return;
  }
  if (rule->kind == GenerationField::Refused) {
    if (rule->acts(v)) g.unsupported.push_back({key, v.dump(), rule->when});
    return;
  }
  if (key == "eos_token_id") {
    g.eos_token_ids = eos_ids_of(v, file);
    return;
  }
  if (v.is_null()) return;  // a used field left unset
  const UsedGenerationField& f = *used_generation_field(key);
  std::visit(
      [&](auto file_member) {
        using T = typename std::remove_cvref_t<decltype(g.*file_member)>::value_type;
        if constexpr (std::is_same_v<T, bool>) {
          if (!v.is_boolean()) wrong("true or false");
        } else if constexpr (std::is_same_v<T, int>) {
          if (!v.is_number_integer() || v.get<long long>() < f.min || v.get<long long>() > 0x7fffffff)
            wrong(fmt::format("an integer >= {}", f.min));
        } else {
          if (!v.is_number()) wrong("a number");
        }
        g.*file_member = v.get<T>();
      },
      f.in_file);
}

}  // namespace detail

// Whether `name` is one of transformers' GenerationConfig fields that vidlora sorts (used, not used, refused).
inline bool is_generation_config_field(std::string_view name) { return detail::generation_field_rule(name) != nullptr; }

// The generation settings of the Hugging Face directory `dir`: its generation_config.json, else the generation fields
// of its config.json (top level, then text_config). Errors name the file and the field (a value of the wrong type).
inline GenerationConfigFile read_generation_config(const std::filesystem::path& dir) {
  GenerationConfigFile g;
  const std::filesystem::path file = dir / "generation_config.json";
  if (std::filesystem::exists(file)) {
    g.file = file;
    const nlohmann::json j = detail::read_json_file(file);
    require(j.is_object(), "{}: expected a JSON object", file.string());
    for (const auto& [key, v] : j.items()) detail::take_generation_field(g, file, key, v, true);
    return g;
  }
  const std::filesystem::path config = dir / "config.json";
  if (!std::filesystem::exists(config)) return g;
  g.file = config;
  const nlohmann::json c = detail::read_json_file(config);
  require(c.is_object(), "{}: expected a JSON object", config.string());
  std::vector<std::string> set;  // the fields the top level gave (not null)
  for (const auto& [key, v] : c.items()) {
    if (!is_generation_config_field(key)) continue;
    detail::take_generation_field(g, config, key, v, false);
    if (!v.is_null()) set.push_back(key);
  }
  if (c.contains("text_config") && c["text_config"].is_object())
    for (const auto& [key, v] : c["text_config"].items())
      if (is_generation_config_field(key) && std::find(set.begin(), set.end(), key) == set.end())
        detail::take_generation_field(g, config, key, v, false);
  return g;
}

}  // namespace vidlora::model

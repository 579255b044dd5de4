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
  void apply(GenerationOptions& o) const {
    if (do_sample) o.do_sample = *do_sample;
    // transformers: max_new_tokens takes precedence over max_length, which counts the prompt too
    if (max_new_tokens) {
      o.max_new_tokens = *max_new_tokens;
      o.max_length = 0;
    } else if (max_length) {
      o.max_length = *max_length;
      o.max_new_tokens = *max_length;  // at most; the prompt's length takes its share
    }
    if (num_beams) o.num_beams = *num_beams;
    if (no_repeat_ngram_size) o.no_repeat_ngram_size = *no_repeat_ngram_size;
    if (top_k) o.top_k = *top_k;
    if (temperature) o.temperature = *temperature;
    if (top_p) o.top_p = *top_p;
    if (min_p) o.min_p = *min_p;
    if (repetition_penalty) o.repetition_penalty = *repetition_penalty;
    if (length_penalty) o.length_penalty = *length_penalty;
    if (encoder_repetition_penalty) o.encoder_repetition_penalty = *encoder_repetition_penalty;
    if (encoder_no_repeat_ngram_size) o.encoder_no_repeat_ngram_size = *encoder_no_repeat_ngram_size;
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
  std::string summary() const {
    std::vector<std::string> parts;
    if (do_sample) parts.push_back(fmt::format("do_sample {}", *do_sample));
    if (temperature) parts.push_back(fmt::format("temperature {:g}", *temperature));
    if (top_k) parts.push_back(fmt::format("top_k {}", *top_k));
    if (top_p) parts.push_back(fmt::format("top_p {:g}", *top_p));
    if (min_p) parts.push_back(fmt::format("min_p {:g}", *min_p));
    if (repetition_penalty) parts.push_back(fmt::format("repetition_penalty {:g}", *repetition_penalty));
    if (no_repeat_ngram_size) parts.push_back(fmt::format("no_repeat_ngram_size {}", *no_repeat_ngram_size));
    if (num_beams) parts.push_back(fmt::format("num_beams {}", *num_beams));
    if (length_penalty) parts.push_back(fmt::format("length_penalty {:g}", *length_penalty));
    if (encoder_repetition_penalty)
      parts.push_back(fmt::format("encoder_repetition_penalty {:g}", *encoder_repetition_penalty));
    if (encoder_no_repeat_ngram_size)
      parts.push_back(fmt::format("encoder_no_repeat_ngram_size {}", *encoder_no_repeat_ngram_size));
    if (max_new_tokens) parts.push_back(fmt::format("max_new_tokens {}", *max_new_tokens));
    if (max_length) parts.push_back(fmt::format("max_length {}", *max_length));
    if (min_new_tokens) parts.push_back(fmt::format("min_new_tokens {}", *min_new_tokens));
    if (min_length) parts.push_back(fmt::format("min_length {}", *min_length));
    if (!eos_token_ids.empty()) parts.push_back(fmt::format("eos_token_id {}", fmt::join(eos_token_ids, ", ")));
    return parts.empty() ? std::string("nothing generate() uses") : fmt::format("{}", fmt::join(parts, ", "));
  }
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

}  // namespace detail

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
      {"do_sample", F::Used},
      {"temperature", F::Used},
      {"top_k", F::Used},
      {"top_p", F::Used},
      {"min_p", F::Used},
      {"repetition_penalty", F::Used},
      {"no_repeat_ngram_size", F::Used},
      {"num_beams", F::Used},
      {"length_penalty", F::Used},
      {"max_new_tokens", F::Used},
      {"max_length", F::Used},
      {"min_new_tokens", F::Used},
      {"min_length", F::Used},
      {"eos_token_id", F::Used},
      {"encoder_repetition_penalty", F::Used},
      {"encoder_no_repeat_ngram_size", F::Used},
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
  for (const auto& r : kRules)
    if (name == r.name) return &r;
  return nullptr;
}

// One field `key` = `v` of `file` into `g`: a used field's value (type-checked), a refused one that would act, and,
// when `list_not_used`, the name of one that changes nothing: a GenerationConfig field without effect here, or a key
// GenerationConfig does not have (generation_config.json's custom entries; config.json's reader passes only fields).
inline void take_generation_field(GenerationConfigFile& g, const std::filesystem::path& file, const std::string& key,
                                  const nlohmann::json& v, bool list_not_used) {
  const auto wrong = [&](std::string_view what) {
    fail("{}: {} must be {} (got {})", file.string(), key, what, v.dump());
  };
  const auto integer = [&](long long lo) {
    if (!v.is_number_integer() || v.get<long long>() < lo || v.get<long long>() > 0x7fffffff)
      wrong(fmt::format("an integer >= {}", lo));
    return v.get<int>();
  };
  const auto number = [&] {
    if (!v.is_number()) wrong("a number");
    return v.get<double>();
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
  if (key == "do_sample") {
    if (!v.is_boolean()) wrong("true or false");
    g.do_sample = v.get<bool>();
  } else if (key == "max_new_tokens") {
    g.max_new_tokens = integer(1);  // transformers' validate refuses 0
  } else if (key == "max_length") {
    g.max_length = integer(1);
  } else if (key == "num_beams") {
    g.num_beams = integer(1);
  } else if (key == "no_repeat_ngram_size") {
    g.no_repeat_ngram_size = integer(0);
  } else if (key == "top_k") {
    g.top_k = integer(0);
  } else if (key == "min_new_tokens") {
    g.min_new_tokens = integer(0);
  } else if (key == "min_length") {
    g.min_length = integer(0);
  } else if (key == "temperature") {
    g.temperature = number();
  } else if (key == "top_p") {
    g.top_p = number();
  } else if (key == "min_p") {
    g.min_p = number();
  } else if (key == "repetition_penalty") {
    g.repetition_penalty = number();
  } else if (key == "length_penalty") {
    g.length_penalty = number();
  } else if (key == "encoder_repetition_penalty") {
    g.encoder_repetition_penalty = number();
  } else if (key == "encoder_no_repeat_ngram_size") {
    g.encoder_no_repeat_ngram_size = integer(0);
  }
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

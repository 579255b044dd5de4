#pragma once
// A Hugging Face directory's generation_config.json, read as transformers' generate() reads it: its values are
// generate()'s defaults (over transformers' global ones, which GenerationOptions' defaults are), the caller's
// options override them.
//
// Used: do_sample, temperature, top_k, top_p, min_p, repetition_penalty, no_repeat_ngram_size, num_beams,
// length_penalty, max_new_tokens, min_new_tokens, min_length, eos_token_id (an id or a list). A null value is unset.
// Without the file, transformers builds the config from config.json (GenerationConfig.from_model_config): its EOS
// id is config.json's eos_token_id, else its text_config's; nothing else. With the file, its eos_token_id only (a
// file without one stops at no EOS in transformers; vidlora's programs always stop at the end of the assistant's
// turn too, model::GenerationOptions::eos_token_id).
// Fields that change nothing for one caption generated here are accepted and listed (`not_used`): the token ids
// generate() does not stop at (bos, pad, decoder_start), caching and output switches, assisted decoding (the same
// tokens), max_length (vidlora always passes max_new_tokens, which transformers prefers), encoder_* (an
// encoder-decoder's; transformers ignores them for a decoder-only model), version stamps.
// Fields that would change the result and that vidlora's generate() does not do (typical_p, bad_words_ids,
// suppress_tokens, forced ids, guidance, contrastive search, stop strings, beam sampling ...) and any field
// transformers' GenerationConfig does not have are refused by check_supported, naming the field and its value,
// when they would act under the final options: the sampling-only ones (typical_p, epsilon_cutoff, eta_cutoff,
// top_h) only when sampling, early_stopping (true / "never") only with beams.
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
  std::filesystem::path file;  // the generation_config.json read; empty when the directory has none
  std::optional<bool> do_sample;
  std::optional<int> max_new_tokens, num_beams, no_repeat_ngram_size, top_k, min_new_tokens, min_length;
  std::optional<double> temperature, top_p, min_p, repetition_penalty, length_penalty;
  std::vector<int> eos_token_ids;     // the file's, or config.json's where there is no file
  std::vector<std::string> not_used;  // fields present that change nothing here, by name
  struct Unsupported {
    enum class When { Always, Sampling, Beams };
    std::string field, value;  // the value as JSON
    When when = When::Always;
    bool known = true;  // false: not a field of transformers' GenerationConfig that vidlora knows
  };
  std::vector<Unsupported> unsupported;  // set to what vidlora's generate() does not do

  // Every used field the file sets, onto `o` (the caller's own options go on top afterwards). The EOS ids join
  // o.extra_eos_token_ids (but for o.eos_token_id).
  void apply(GenerationOptions& o) const {
    if (do_sample) o.do_sample = *do_sample;
    if (max_new_tokens) o.max_new_tokens = *max_new_tokens;
    if (num_beams) o.num_beams = *num_beams;
    if (no_repeat_ngram_size) o.no_repeat_ngram_size = *no_repeat_ngram_size;
    if (top_k) o.top_k = *top_k;
    if (temperature) o.temperature = *temperature;
    if (top_p) o.top_p = *top_p;
    if (min_p) o.min_p = *min_p;
    if (repetition_penalty) o.repetition_penalty = *repetition_penalty;
    if (length_penalty) o.length_penalty = *length_penalty;
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
      if (!u.known)
        fail("{}: {} = {}: not a generation setting vidlora knows (transformers' GenerationConfig fields are)",
             file.string(), u.field, u.value);
      fail("{}: {} = {} is not supported by vidlora's generation{}", file.string(), u.field, u.value,
           u.when == Unsupported::When::Sampling ? " when sampling"
           : u.when == Unsupported::When::Beams  ? " with beam search"
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
    if (max_new_tokens) parts.push_back(fmt::format("max_new_tokens {}", *max_new_tokens));
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

// Whether a JSON value is transformers' "nothing set" for a field whose default is `unset` (null, false, 0, ...).
inline bool is_default(const nlohmann::json& v, const nlohmann::json& unset) {
  return v.is_null() || v == unset || (v.is_array() && v.empty()) ||
         (v.is_number() && unset.is_number() && v.get<double>() == unset.get<double>());
}

}  // namespace detail

// The generation settings of the Hugging Face directory `dir`: its generation_config.json, else the EOS id of its
// config.json. Errors name the file and the field (a value of the wrong type, an unknown field).
inline GenerationConfigFile read_generation_config(const std::filesystem::path& dir) {
  GenerationConfigFile g;
  const std::filesystem::path file = dir / "generation_config.json";
  if (!std::filesystem::exists(file)) {
    const std::filesystem::path config = dir / "config.json";
    if (!std::filesystem::exists(config)) return g;
    const nlohmann::json c = detail::read_json_file(config);
    if (c.contains("eos_token_id") && !c["eos_token_id"].is_null()) {
      g.eos_token_ids = detail::eos_ids_of(c["eos_token_id"], config);
    } else if (c.contains("text_config") && c["text_config"].is_object() && c["text_config"].contains("eos_token_id")) {
      g.eos_token_ids = detail::eos_ids_of(c["text_config"]["eos_token_id"], config);
    }
    return g;
  }
  g.file = file;
  const nlohmann::json j = detail::read_json_file(file);
  require(j.is_object(), "{}: expected a JSON object", file.string());
  const auto wrong = [&](const std::string& key, const nlohmann::json& v, std::string_view what) {
    fail("{}: {} must be {} (got {})", file.string(), key, what, v.dump());
  };
  const auto integer = [&](const std::string& key, const nlohmann::json& v, long long lo) {
    if (!v.is_number_integer() || v.get<long long>() < lo || v.get<long long>() > 0x7fffffff)
      wrong(key, v, lo > 0 ? fmt::format("an integer >= {}", lo) : "an integer >= 0");
    return v.get<int>();
  };
  const auto number = [&](const std::string& key, const nlohmann::json& v) {
    if (!v.is_number()) wrong(key, v, "a number");
    return v.get<double>();
  };
  using When = GenerationConfigFile::Unsupported::When;
  // transformers' fields that change nothing here (see the header's comment)
  static const char* const kNotUsed[] = {"_from_model_config",
                                         "transformers_version",
                                         "_commit_hash",
                                         "bos_token_id",
                                         "pad_token_id",
                                         "decoder_start_token_id",
                                         "max_length",
                                         "use_cache",
                                         "cache_implementation",
                                         "cache_config",
                                         "max_cache_len",
                                         "compile_config",
                                         "disable_compile",
                                         "prefill_chunk_size",
                                         "low_memory",
                                         "output_attentions",
                                         "output_hidden_states",
                                         "output_scores",
                                         "output_logits",
                                         "return_dict_in_generate",
                                         "encoder_repetition_penalty",
                                         "encoder_no_repeat_ngram_size",
                                         "is_assistant",
                                         "num_assistant_tokens",
                                         "num_assistant_tokens_schedule",
                                         "assistant_confidence_threshold",
                                         "prompt_lookup_num_tokens",
                                         "max_matching_ngram_size",
                                         "assistant_early_exit",
                                         "assistant_lookbehind",
                                         "target_lookbehind",
                                         "assistant_ensemble_weight",
                                         "continuous_batching_config"};
  // transformers' fields vidlora's generate() does not do, with the value that does nothing and when they act
  struct Refused {
    const char* field;
    nlohmann::json unset;
    When when;
  };
  static const Refused kRefused[] = {
      {"typical_p", 1.0, When::Sampling},
      {"epsilon_cutoff", 0.0, When::Sampling},
      {"eta_cutoff", 0.0, When::Sampling},
      {"top_h", nullptr, When::Sampling},
      {"early_stopping", false, When::Beams},
      {"num_return_sequences", 1, When::Always},
      {"max_time", nullptr, When::Always},
      {"stop_strings", nullptr, When::Always},
      {"bad_words_ids", nullptr, When::Always},
      {"force_words_ids", nullptr, When::Always},
      {"constraints", nullptr, When::Always},
      {"suppress_tokens", nullptr, When::Always},
      {"begin_suppress_tokens", nullptr, When::Always},
      {"forced_bos_token_id", nullptr, When::Always},
      {"forced_eos_token_id", nullptr, When::Always},
      {"sequence_bias", nullptr, When::Always},
      {"exponential_decay_length_penalty", nullptr, When::Always},
      {"guidance_scale", 1.0, When::Always},
      {"renormalize_logits", false, When::Always},
      {"remove_invalid_values", false, When::Always},
      {"penalty_alpha", nullptr, When::Always},
      {"dola_layers", nullptr, When::Always},
      {"diversity_penalty", 0.0, When::Always},
      {"num_beam_groups", 1, When::Always},
      {"token_healing", false, When::Always},
      {"watermarking_config", nullptr, When::Always},
      {"use_mtp", false, When::Always},
      {"speculation_type", nullptr, When::Always},
  };
  for (const auto& [key, v] : j.items()) {
    if (key == "eos_token_id") {
      g.eos_token_ids = detail::eos_ids_of(v, file);
      continue;
    }
    if (std::find(std::begin(kNotUsed), std::end(kNotUsed), key) != std::end(kNotUsed)) {
      g.not_used.push_back(key);
      continue;
    }
    if (const auto* r =
            std::find_if(std::begin(kRefused), std::end(kRefused), [&](const Refused& x) { return key == x.field; });
        r != std::end(kRefused)) {
      if (!detail::is_default(v, r->unset)) g.unsupported.push_back({key, v.dump(), r->when, true});
      continue;
    }
    if (v.is_null()) continue;  // a used field left unset
    if (key == "do_sample") {
      if (!v.is_boolean()) wrong(key, v, "true or false");
      g.do_sample = v.get<bool>();
    } else if (key == "max_new_tokens") {
      g.max_new_tokens = integer(key, v, 0);
    } else if (key == "num_beams") {
      g.num_beams = integer(key, v, 1);
    } else if (key == "no_repeat_ngram_size") {
      g.no_repeat_ngram_size = integer(key, v, 0);
    } else if (key == "top_k") {
      g.top_k = integer(key, v, 0);
    } else if (key == "min_new_tokens") {
      g.min_new_tokens = integer(key, v, 0);
    } else if (key == "min_length") {
      g.min_length = integer(key, v, 0);
    } else if (key == "temperature") {
      g.temperature = number(key, v);
    } else if (key == "top_p") {
      g.top_p = number(key, v);
    } else if (key == "min_p") {
      g.min_p = number(key, v);
    } else if (key == "repetition_penalty") {
      g.repetition_penalty = number(key, v);
    } else if (key == "length_penalty") {
      g.length_penalty = number(key, v);
    } else {
      g.unsupported.push_back({key, v.dump(), When::Always, false});
    }
  }
  return g;
}

}  // namespace vidlora::model

#pragma once
// CaptionMetrics described once. caption_scores lists its scores by name (the names the training log
// writes and early stopping accepts, with the direction that is better); caption_metrics_to_json /
// caption_metrics_from_json are the whole record as checkpoints keep it (non-finite numbers as null,
// since JSON has no NaN). Every place that names or stores a metric goes through here.

#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <map>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include <vidlora/core/error.hpp>
#include <vidlora/eval/caption_metrics.hpp>

namespace vidlora::eval {

// Where a score lives: a corpus score, a field of CaptionMetrics::diversity, or the morpheme METEOR
// (only computed when CaptionMetricsOptions::morpheme_tokenizer was set; NaN otherwise).
enum class ScoreGroup { Corpus, Diversity, Morphemes };

// One named score of CaptionMetrics.
struct CaptionScore {
  std::string_view name;
  double (*get)(const CaptionMetrics&);
  void (*set)(CaptionMetrics&, double);
  bool higher_is_better;
  ScoreGroup group;
};

inline constexpr std::array<CaptionScore, 8> caption_scores{{
    {"bleu4", [](const CaptionMetrics& m) { return m.bleu4; }, [](CaptionMetrics& m, double v) { m.bleu4 = v; }, true,
     ScoreGroup::Corpus},
    {"meteor", [](const CaptionMetrics& m) { return m.meteor; }, [](CaptionMetrics& m, double v) { m.meteor = v; },
     true, ScoreGroup::Corpus},
    {"cider_d", [](const CaptionMetrics& m) { return m.cider_d; }, [](CaptionMetrics& m, double v) { m.cider_d = v; },
     true, ScoreGroup::Corpus},
    {"rouge_l", [](const CaptionMetrics& m) { return m.rouge_l; }, [](CaptionMetrics& m, double v) { m.rouge_l = v; },
     true, ScoreGroup::Corpus},
    {"unique_ratio", [](const CaptionMetrics& m) { return m.diversity.unique_ratio; },
     [](CaptionMetrics& m, double v) { m.diversity.unique_ratio = v; }, true, ScoreGroup::Diversity},
    {"distinct_1", [](const CaptionMetrics& m) { return m.diversity.distinct_1; },
     [](CaptionMetrics& m, double v) { m.diversity.distinct_1 = v; }, true, ScoreGroup::Diversity},
    {"distinct_2", [](const CaptionMetrics& m) { return m.diversity.distinct_2; },
     [](CaptionMetrics& m, double v) { m.diversity.distinct_2 = v; }, true, ScoreGroup::Diversity},
    {"meteor_morphemes", [](const CaptionMetrics& m) { return m.meteor_morphemes; },
     [](CaptionMetrics& m, double v) { m.meteor_morphemes = v; }, true, ScoreGroup::Morphemes},
}};

// The score called `name`, or nullptr.
inline const CaptionScore* find_caption_score(std::string_view name) {
  for (const auto& s : caption_scores)
    if (s.name == name) return &s;
  return nullptr;
}

// "bleu4, meteor, ..." for messages.
inline std::string caption_score_names() {
  std::string out;
  for (const auto& s : caption_scores) out += (out.empty() ? "" : ", ") + std::string(s.name);
  return out;
}

// The scores by name, as the training log writes them (meteor_morphemes only when it was computed).
inline std::map<std::string, double> caption_score_values(const CaptionMetrics& m) {
  std::map<std::string, double> out;
  for (const auto& s : caption_scores)
    if (s.group != ScoreGroup::Morphemes || !m.meteor_morphemes_tokenizer.empty()) out.emplace(s.name, s.get(m));
  return out;
}

namespace detail {
inline nlohmann::json number_or_null(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}
inline double number_or_nan(const nlohmann::json& v) {
  return v.is_null() ? std::numeric_limits<double>::quiet_NaN() : v.get<double>();
}
}  // namespace detail

// The whole record: the four corpus scores and the morpheme METEOR at the top level, the diversity
// (counts, the most common caption) under "diversity".
inline nlohmann::json caption_metrics_to_json(const CaptionMetrics& m) {
  nlohmann::json j = nlohmann::json::object();
  nlohmann::json d = {{"captions", m.diversity.captions},
                      {"unique_captions", m.diversity.unique_captions},
                      {"most_common", m.diversity.most_common},
                      {"most_common_count", m.diversity.most_common_count}};
  for (const auto& s : caption_scores)
    (s.group == ScoreGroup::Diversity ? d : j)[std::string(s.name)] = detail::number_or_null(s.get(m));
  j["meteor_morphemes_tokenizer"] = m.meteor_morphemes_tokenizer;
  j["diversity"] = std::move(d);
  return j;
}

// Reads caption_metrics_to_json's record (a missing meteor_morphemes, from records written before it
// existed, reads as not computed); a missing or mistyped field is an Error naming it.
inline CaptionMetrics caption_metrics_from_json(const nlohmann::json& j) {
  CaptionMetrics m;
  try {
    const auto& d = j.at("diversity");
    for (const auto& s : caption_scores) {
      const auto& holder = s.group == ScoreGroup::Diversity ? d : j;
      const std::string key(s.name);
      if (s.group == ScoreGroup::Morphemes && !holder.contains(key)) continue;
      s.set(m, detail::number_or_nan(holder.at(key)));
    }
    if (j.contains("meteor_morphemes_tokenizer"))
      m.meteor_morphemes_tokenizer = j.at("meteor_morphemes_tokenizer").get<std::string>();
    m.diversity.captions = d.at("captions").get<std::size_t>();
    m.diversity.unique_captions = d.at("unique_captions").get<std::size_t>();
    m.diversity.most_common = d.at("most_common").get<std::string>();
    m.diversity.most_common_count = d.at("most_common_count").get<std::size_t>();
  } catch (const nlohmann::json::exception& e) {
    fail("caption metrics record: {}", e.what());
  }
  return m;
}

}  // namespace vidlora::eval

#pragma once
// Diversity of generated captions, the guard against mode collapse (one caption for every video):
// unique-caption ratio = distinct captions / captions (captions compared as token sequences),
// distinct-n = distinct n-grams / n-grams over all captions (Li et al. 2016), and a check that flags
// a unique ratio under a threshold.

#include <algorithm>
#include <cstddef>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <vidlora/eval/corpus.hpp>

namespace vidlora::eval {

struct Diversity {
  std::size_t captions = 0;
  std::size_t unique_captions = 0;
  double unique_ratio = 0.0;  // unique_captions / captions; 0 for no captions
  double distinct_1 = 0.0;    // distinct unigrams / unigrams; 0 when there are none
  double distinct_2 = 0.0;    // distinct bigrams / bigrams; 0 when there are none
  std::string most_common;    // the most frequent caption (its first spelling), tokens joined by spaces
  std::size_t most_common_count = 0;
};

inline Diversity diversity(std::span<const std::string> captions, Tokenization mode = Tokenization::Whitespace) {
  Diversity out;
  out.captions = captions.size();
  std::map<std::vector<std::string>, std::size_t> seen;
  std::set<std::string> unigrams;
  std::set<std::pair<std::string, std::string>> bigrams;
  std::size_t total_1 = 0, total_2 = 0;
  for (const auto& c : captions) {
    auto tokens = tokenize(c, mode);
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      unigrams.insert(tokens[i]);
      if (i + 1 < tokens.size()) bigrams.emplace(tokens[i], tokens[i + 1]);
    }
    total_1 += tokens.size();
    total_2 += tokens.empty() ? 0 : tokens.size() - 1;
    const std::size_t count = ++seen[std::move(tokens)];
    if (count > out.most_common_count) {
      out.most_common_count = count;
      out.most_common.clear();
      for (const auto& t : tokenize(c, mode)) out.most_common += (out.most_common.empty() ? "" : " ") + t;
    }
  }
  out.unique_captions = seen.size();
  if (out.captions) out.unique_ratio = static_cast<double>(out.unique_captions) / static_cast<double>(out.captions);
  if (total_1) out.distinct_1 = static_cast<double>(unigrams.size()) / static_cast<double>(total_1);
  if (total_2) out.distinct_2 = static_cast<double>(bigrams.size()) / static_cast<double>(total_2);
  return out;
}

struct ModeCollapseCheck {
  bool collapsed = false;  // unique_ratio < threshold
  double unique_ratio = 0.0;
  double threshold = 0.0;
  std::string message;  // empty unless collapsed
};

// Flags mode collapse when the unique-caption ratio falls under `threshold` (in (0, 1]).
inline ModeCollapseCheck check_mode_collapse(const Diversity& d, double threshold = 0.5) {
  require(threshold > 0 && threshold <= 1, "check_mode_collapse: threshold must be in (0, 1], got {}", threshold);
  ModeCollapseCheck out{.collapsed = d.captions > 0 && d.unique_ratio < threshold,
                        .unique_ratio = d.unique_ratio,
                        .threshold = threshold,
                        .message = {}};
  if (out.collapsed)
    out.message = fmt::format(
        "mode collapse: {} unique captions for {} clips (ratio {:.3f} < {:.3f}); most frequent ({}x): \"{}\"",
        d.unique_captions, d.captions, d.unique_ratio, threshold, d.most_common_count, d.most_common);
  return out;
}

}  // namespace vidlora::eval

#pragma once
// MecabKoTokenizer: Korean morpheme tokens from the MeCab analyser (Debian's libmecab) with the
// mecab-ko-dic dictionary, as a CaptionTokenizer for the caption metrics. Needs <mecab.h> and -lmecab:
// link the vidlora::mecab target (CMake defines it when libmecab-dev is installed). Everything else in
// vidlora::eval works without it.
//
// Two granularities:
//  - MecabKoUnits::Morphemes: every morpheme MeCab outputs (빌딩 들 이 높 은 걸어가 고 있 다).
//  - MecabKoUnits::OktUnits: the same analysis, grouped into the units KoNLPy's Okt morphs() returns,
//    so that METEOR on them tracks the Okt METEOR users report (docs/eval.md measures how closely):
//    a predicate stem (VV, VA, VX, VCP, VCN, or a derivational XSV/XSA) keeps the endings (E*) that
//    follow it inside the same word (높은, 걸어가고, 있다, 하고); an adjective root XR keeps its XSA
//    (화려하게); a run of particles in one word is one token (에는, 에서는). Nouns, noun suffixes (들),
//    particles after nouns and punctuation stay separate, as Okt separates them. Only MeCab's POS tags
//    and the word boundaries of the text decide the grouping; no word lists.
//
// The dictionary: mecab-ko-dic 2.1.1 (Apache-2.0, the Eunjeon project), as compiled in PyPI's
// python-mecab-ko-dic 2.1.1.post2 wheel, which Debian's MeCab 0.996 loads as it is.
// tools/install-deps.sh puts it in /usr/local/lib/mecab/dic/mecab-ko-dic (default_mecab_ko_dictionary()).
//
// Speed: MeCab costs ~50 µs per caption; with MecabKoAnalysis::EojeolMemo (the default) a word seen before
// costs ~1 µs and a new one ~20 µs, with the same tokens (docs/eval.md, bench_eval_mecab).
//
// One tokenizer is for one thread at a time (it owns a MeCab lattice and a memo); copies share the loaded
// model and the connection matrix, each with its own lattice and an empty memo.

#include <mecab.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/eval/caption_tokenizer.hpp>
#include <vidlora/eval/mecab_eojeol_memo.hpp>

namespace vidlora::eval {

enum class MecabKoUnits {
  Morphemes,  // MeCab's morphemes as they are
  OktUnits,   // grouped as KoNLPy Okt's morphs() groups them (see above)
};

// How a caption is analysed; both give MeCab's one-best morphemes of the whole caption.
enum class MecabKoAnalysis {
  EojeolMemo,     // from memoised per-word analyses (eval/mecab_eojeol_memo.hpp), MeCab on the whole
                  // caption where that cannot decide (ties) or this MeCab does not allow it; 2x faster
                  // when most words were seen before (docs/eval.md, "Speed")
  WholeSentence,  // MeCab on every caption
};

// $VIDLORA_MECAB_KO_DIC when set, else where tools/install-deps.sh installs mecab-ko-dic.
inline std::filesystem::path default_mecab_ko_dictionary() {
  if (const char* env = std::getenv("VIDLORA_MECAB_KO_DIC"); env != nullptr && *env != '\0') return env;
  return "/usr/local/lib/mecab/dic/mecab-ko-dic";
}

namespace detail {

// VV, VA, VX, VCP, VCN, XSV or XSA (by characters: this runs for every morpheme)
inline bool ko_is_predicate(std::string_view tag) {
  if (tag.size() == 2) return tag[0] == 'V' && (tag[1] == 'V' || tag[1] == 'A' || tag[1] == 'X');
  if (tag.size() != 3) return false;
  if (tag[0] == 'V') return tag[1] == 'C' && (tag[2] == 'P' || tag[2] == 'N');
  return tag[0] == 'X' && tag[1] == 'S' && (tag[2] == 'V' || tag[2] == 'A');
}
inline bool ko_is_tag(std::string_view tag, char a, char b) { return tag.size() == 2 && tag[0] == a && tag[1] == b; }
inline bool ko_is_tag(std::string_view tag, char a, char b, char c) {
  return tag.size() == 3 && tag[0] == a && tag[1] == b && tag[2] == c;
}
inline bool ko_is_ending(std::string_view tag) { return !tag.empty() && tag.front() == 'E'; }
inline bool ko_is_particle(std::string_view tag) { return !tag.empty() && tag.front() == 'J'; }

}  // namespace detail

class MecabKoTokenizer {
 public:
  explicit MecabKoTokenizer(const std::filesystem::path& dictionary = default_mecab_ko_dictionary(),
                            MecabKoUnits units = MecabKoUnits::OktUnits,
                            MecabKoAnalysis analysis = MecabKoAnalysis::EojeolMemo)
      : units_(units), analysis_(analysis), dictionary_(dictionary) {
    namespace fs = std::filesystem;
    require(fs::is_directory(dictionary),
            "MecabKoTokenizer: mecab-ko-dic dictionary directory '{}' not found (install it with "
            "tools/install-deps.sh, or set VIDLORA_MECAB_KO_DIC)",
            dictionary.string());
    for (const char* file : {"sys.dic", "matrix.bin", "char.bin", "unk.dic", "dicrc"})
      require(fs::is_regular_file(dictionary / file),
              "MecabKoTokenizer: '{}' is not a compiled mecab-ko-dic dictionary: {} is missing", dictionary.string(),
              file);
    // -r /dev/null: no mecabrc (Debian's points at a Japanese dictionary); -d: this dictionary.
    std::string program = "vidlora", rc = "-r", rc_path = "/dev/null", d = "-d", dic = dictionary.string();
    char* argv[] = {program.data(), rc.data(), rc_path.data(), d.data(), dic.data()};
    std::shared_ptr<MeCab::Model> model(MeCab::createModel(5, argv), [](MeCab::Model* m) { delete m; });
    require(model != nullptr, "MecabKoTokenizer: MeCab cannot load the dictionary '{}': {}", dictionary.string(),
            MeCab::getLastError());
    model_ = model;
    tagger_.reset(model_->createTagger());
    lattice_.reset(model_->createLattice());
    require(tagger_ && lattice_, "MecabKoTokenizer: MeCab cannot create a tagger for '{}': {}", dictionary.string(),
            MeCab::getLastError());
    if (analysis_ == MecabKoAnalysis::EojeolMemo) memo_.emplace(dictionary, model_);
  }

  MecabKoTokenizer(const MecabKoTokenizer& other)
      : units_(other.units_),
        analysis_(other.analysis_),
        dictionary_(other.dictionary_),
        model_(other.model_),
        tagger_(model_ ? model_->createTagger() : nullptr),
        lattice_(model_ ? model_->createLattice() : nullptr),
        memo_(other.memo_) {
    require(tagger_ && lattice_, "MecabKoTokenizer: cannot copy a moved-from tokenizer or create a tagger for '{}'",
            dictionary_.string());
  }
  MecabKoTokenizer& operator=(const MecabKoTokenizer& other) {
    if (this != &other) *this = MecabKoTokenizer(other);
    return *this;
  }
  MecabKoTokenizer(MecabKoTokenizer&&) noexcept = default;
  MecabKoTokenizer& operator=(MecabKoTokenizer&&) noexcept = default;
  ~MecabKoTokenizer() = default;

  std::vector<std::string> tokenize(std::string_view text) {
    std::vector<std::string> tokens;
    if (text.empty()) return tokens;
    if (!memo_ || !memo_->analyse(text, morphemes_)) {
      if (memo_enabled()) ++fallbacks_;
      analyse_whole(text);
    }
    tokens.reserve(morphemes_.size());
    bool predicate_open = false;  // the last token is a predicate that endings in the same word join
    std::string_view last_tag;
    for (const auto& m : morphemes_) {
      if (units_ == MecabKoUnits::Morphemes) {
        tokens.emplace_back(m.surface);
        continue;
      }
      const bool same_word = !m.space_before && !tokens.empty();
      const bool joins =
          same_word && ((predicate_open && detail::ko_is_ending(m.first_tag)) ||
                        (detail::ko_is_particle(last_tag) && detail::ko_is_particle(m.first_tag)) ||
                        (detail::ko_is_tag(last_tag, 'X', 'R') && detail::ko_is_tag(m.first_tag, 'X', 'S', 'A')));
      if (joins)
        tokens.back().append(m.surface);
      else
        tokens.emplace_back(m.surface);
      predicate_open = detail::ko_is_predicate(m.first_tag) || (joins && predicate_open);
      last_tag = m.last_tag;
    }
    return tokens;
  }

  // MeCab's one-best morphemes of `text` analysed as one sentence (the WholeSentence path; the memo's
  // result equals it). Views into MeCab's lattice and dictionary, valid until the next call.
  const std::vector<MecabKoMorpheme>& analyse_whole(std::string_view text) {
    morphemes_.clear();
    lattice_->set_sentence(text.data(), text.size());
    require(tagger_->parse(lattice_.get()), "MecabKoTokenizer: MeCab failed on a caption: {}", lattice_->what());
    for (const MeCab::Node* node = lattice_->bos_node(); node != nullptr; node = node->next) {
      if (node->stat == MECAB_BOS_NODE || node->stat == MECAB_EOS_NODE) continue;
      const auto tags = detail::ko_tags(node->feature);
      morphemes_.push_back(
          {std::string_view(node->surface, node->length), tags.first, tags.last, node->rlength != node->length});
    }
    return morphemes_;
  }

  // Memo statistics (0 with WholeSentence): words found, words analysed, captions analysed whole because
  // their cheapest analysis is not unique.
  std::size_t memo_hits() const { return memo_ ? memo_->hits() : 0; }
  std::size_t memo_misses() const { return memo_ ? memo_->misses() : 0; }
  std::size_t whole_sentence_fallbacks() const { return fallbacks_; }
  // Forget the memoised words (the memo also clears itself when it holds 16,384 words, ~4 KB each).
  void clear_memo() {
    if (memo_) memo_->clear();
  }
  // Whether the memo is in use (EojeolMemo and this MeCab's costs allow it).
  bool memo_enabled() const { return memo_ && memo_->enabled(); }

  std::string name() const {
    return units_ == MecabKoUnits::OktUnits ? "mecab-ko-dic okt-units" : "mecab-ko-dic morphemes";
  }
  MecabKoUnits units() const { return units_; }
  MecabKoAnalysis analysis() const { return analysis_; }
  const std::filesystem::path& dictionary() const { return dictionary_; }

 private:
  MecabKoUnits units_;
  MecabKoAnalysis analysis_;
  std::filesystem::path dictionary_;
  std::shared_ptr<MeCab::Model> model_;
  std::unique_ptr<MeCab::Tagger> tagger_;
  std::unique_ptr<MeCab::Lattice> lattice_;
  std::optional<MecabEojeolMemo> memo_;
  std::vector<MecabKoMorpheme> morphemes_;
  std::size_t fallbacks_ = 0;
};

static_assert(CaptionTokenizer<MecabKoTokenizer>);

}  // namespace vidlora::eval

#pragma once
// MecabEojeolMemo: MeCab's one-best analysis of a sentence, assembled from memoised analyses of its
// space-separated words (eojeols), with the same result as MeCab on the whole sentence. Used by
// MecabKoTokenizer (eval/mecab_tokenizer.hpp); needs <mecab.h> like it.
//
// Why it is exact. MeCab skips a space before it looks words up, and no mecab-ko-dic entry or unknown-word
// group contains a space, so no lattice node spans one: every path crosses the space between two words
// from a node ending at the first word's end to a node starting at the second word's start. The nodes
// inside a word are the ones MeCab builds for that word alone (a lookup reads only the text ahead of it, up
// to the space). The words interact only through the connection costs across each space, which depend on
// the two nodes' context ids alone (MeCab 0.996; the mecab-ko fork's left-space penalty would break this,
// and the constructor's probe detects it). So per word this memo keeps, for every left context id a path
// can enter the word with and every right context id it can leave with, the cheapest path through the word
// and its cost (word costs plus the connection costs inside the word), from one MeCab analysis of the word
// alone. A sentence is then a Viterbi pass over words: each entry id takes the cheapest exit id of the
// previous word (or BOS) plus the connection cost read from the dictionary's matrix.bin, each exit id the
// cheapest entry id plus the cost through the word, EOS the cheapest exit id. Ties: MeCab breaks ties
// between equal-cost paths by its list order, which this pass does not reproduce, so analyse() reports a
// sentence with more than one cheapest path (nodes that differ only in features the tokenizer does not read
// are merged first) and the caller analyses it whole with MeCab.
//
// The words of a caption corpus repeat (particles and endings attach to a small vocabulary), so most words
// are found in the memo and the sentence costs a few hash lookups and connection-cost reads instead of a
// dictionary search per character (~1 µs a known word, ~20 µs a new one: docs/eval.md, "Speed"). A memo
// holds `max_entries` words (~4 KB each); when full it is cleared at the start of the next sentence. One
// memo (it owns a MeCab lattice) is for one thread at a time; copies share the model and the matrix.

#include <mecab.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/eval/tokenize.hpp>

namespace vidlora::eval {

// One morpheme of an analysis, as the tokenizer reads it: surface, first and last POS tag of the
// mecab-ko-dic feature ("VV+EC,..." -> "VV", "EC") and whether whitespace precedes it.
struct MecabKoMorpheme {
  std::string_view surface, first_tag, last_tag;
  bool space_before = false;
};

namespace detail {

// The first POS tag of a mecab-ko-dic feature string ("VV+EC,*,F,..." -> "VV") and its last ("EC").
struct KoTags {
  std::string_view first, last;
};
inline KoTags ko_tags(const char* feature) {
  std::size_t n = 0;
  while (feature[n] != '\0' && feature[n] != ',') ++n;  // only the POS field: features are long
  const std::string_view pos(feature, n);
  const auto plus_first = pos.find('+');
  const auto plus_last = pos.rfind('+');
  return {pos.substr(0, plus_first), plus_last == std::string_view::npos ? pos : pos.substr(plus_last + 1)};
}

// The dictionary's connection costs (matrix.bin, memory-mapped read-only: the pages MeCab maps too):
// two uint16 sizes (left, right), then int16 costs; cost(left node, right node) = m[left.rcAttr +
// lsize * right.lcAttr], as MeCab 0.996's Connector reads it.
class MecabConnectionMatrix {
 public:
  explicit MecabConnectionMatrix(const std::filesystem::path& file) : path_(file.string()) {
    const int fd = ::open(path_.c_str(), O_RDONLY);
    require(fd >= 0, "MecabEojeolMemo: cannot open the connection matrix '{}'", path_);
    struct ::stat st {};
    const bool stat_ok = ::fstat(fd, &st) == 0;
    bytes_ = stat_ok ? static_cast<std::size_t>(st.st_size) : 0;
    void* map = bytes_ >= 4 ? ::mmap(nullptr, bytes_, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
    ::close(fd);
    require(map != MAP_FAILED, "MecabEojeolMemo: cannot map the connection matrix '{}' ({} bytes)", path_, bytes_);
    map_ = map;
    const auto* sizes = static_cast<const std::uint16_t*>(map_);
    lsize_ = sizes[0];
    rsize_ = sizes[1];
    costs_ = static_cast<const std::int16_t*>(map_) + 2;
    require(bytes_ == 4 + 2 * static_cast<std::size_t>(lsize_) * rsize_,
            "MecabEojeolMemo: '{}' is not a MeCab connection matrix: {} bytes for {} x {} costs", path_, bytes_, lsize_,
            rsize_);
  }
  MecabConnectionMatrix(const MecabConnectionMatrix&) = delete;
  MecabConnectionMatrix& operator=(const MecabConnectionMatrix&) = delete;
  ~MecabConnectionMatrix() { ::munmap(map_, bytes_); }

  std::int64_t operator()(std::uint16_t left_rc, std::uint16_t right_lc) const {
    return costs_[left_rc + static_cast<std::size_t>(lsize_) * right_lc];
  }
  bool covers(std::uint16_t left_rc, std::uint16_t right_lc) const { return left_rc < lsize_ && right_lc < rsize_; }
  // The costs of every connection into a node with left context `right_lc`, by the left node's rc.
  const std::int16_t* into(std::uint16_t right_lc) const {
    return costs_ + static_cast<std::size_t>(lsize_) * right_lc;
  }

  // The smallest cost of any connection into a node with left context `right_lc` (one contiguous row).
  std::int64_t min_into(std::uint16_t right_lc) const {
    const std::int16_t* row = costs_ + static_cast<std::size_t>(lsize_) * right_lc;
    return *std::min_element(row, row + lsize_);
  }
  std::uint16_t right_size() const { return rsize_; }

 private:
  std::string path_;
  void* map_ = nullptr;
  std::size_t bytes_ = 0;
  std::uint16_t lsize_ = 0, rsize_ = 0;
  const std::int16_t* costs_ = nullptr;
};

}  // namespace detail

class MecabEojeolMemo {
 public:
  // `dictionary`: the compiled mecab-ko-dic directory `model` was loaded from (its matrix.bin is read).
  // The memo keeps the model (its words point at the dictionary's features) and has its own tagger and
  // lattice. A probe checks once that MeCab's costs behave as described above; if not (another MeCab),
  // enabled() is false and the caller should analyse whole sentences.
  MecabEojeolMemo(const std::filesystem::path& dictionary, std::shared_ptr<MeCab::Model> model,
                  std::size_t max_entries = 1u << 14)
      : matrix_(std::make_shared<const detail::MecabConnectionMatrix>(dictionary / "matrix.bin")),
        max_entries_(max_entries),
        model_(std::move(model)) {
    require(max_entries > 0, "MecabEojeolMemo: max_entries must be > 0");
    require(model_ != nullptr, "MecabEojeolMemo: no MeCab model");
    make_tagger();
    probe();
  }

  // A copy shares the connection matrix and the model and starts with an empty memo.
  MecabEojeolMemo(const MecabEojeolMemo& other)
      : matrix_(other.matrix_),
        max_entries_(other.max_entries_),
        model_(other.model_),
        enabled_(other.enabled_),
        bos_rc_(other.bos_rc_),
        eos_lc_(other.eos_lc_) {
    make_tagger();
  }
  MecabEojeolMemo& operator=(const MecabEojeolMemo& other) {
    if (this != &other) *this = MecabEojeolMemo(other);
    return *this;
  }
  MecabEojeolMemo(MecabEojeolMemo&&) noexcept = default;
  MecabEojeolMemo& operator=(MecabEojeolMemo&&) noexcept = default;
  ~MecabEojeolMemo() {  // the words first: they point into the model
    memo_.clear();
  }

  bool enabled() const { return enabled_; }

  // The one-best morphemes of `text` into `out` (views into the memo, valid until the next call), or false
  // when the sentence has several cheapest analyses (or the memo is disabled): analyse it whole then.
  bool analyse(std::string_view text, std::vector<MecabKoMorpheme>& out, std::int64_t* total_cost = nullptr) {
    out.clear();
    if (!enabled_) return false;
    if (memo_.size() >= max_entries_) memo_.clear();
    words_.clear();
    std::size_t first_word = 0;  // where the first word with morphemes starts
    for (std::size_t start = 0; start < text.size();) {
      const std::size_t space = text.find(' ', start);
      const std::size_t end = space == std::string_view::npos ? text.size() : space;
      if (end > start) {
        const Word& w = word(text.substr(start, end - start));
        if (!w.usable) return false;
        if (words_.empty()) first_word = start;
        words_.push_back(&w);
      }
      start = end + 1;
    }
    if (words_.empty()) return false;  // spaces only: MeCab's answer (nothing) is quicker to ask for
    // Viterbi over words. State: a right context id the previous word can end with (BOS's before the first).
    states_.assign(1, State{0, bos_rc_, false});
    lc_choice_.clear();
    rc_choice_.clear();
    for (std::size_t k = 0; k < words_.size(); ++k) {
      const Word* w = words_[k];
      if (k + 1 < words_.size()) {  // the next word's block (a few cache lines) is on its way meanwhile
        const std::vector<std::int32_t>& next = words_[k + 1]->table;
        for (std::size_t i = 0; i < next.size(); i += 16) __builtin_prefetch(next.data() + i);
      }
      const std::size_t n_lcs = w->n_lcs, n_rcs = w->n_rcs;
      if (in_cost_.size() < n_lcs) {  // [0, n_lcs) is written below
        in_cost_.resize(n_lcs);
        in_tied_.resize(n_lcs);
      }
      // States cheapest first: once a state's cost plus the smallest connection cost into an lc exceeds the
      // best found, no later state can reach that lc as cheaply (or tie), and the matrix is not read for them.
      // A state that costs more than the cheapest state's way into an lc, less the smallest connection cost
      // into that lc, for every lc, wins none: not ranked. The rest are sorted by insertion (a word has a few
      // exits).
      std::size_t cheapest = 0;
      for (std::size_t s = 1; s < states_.size(); ++s)
        if (states_[s].cost < states_[cheapest].cost) cheapest = s;
      std::int64_t bound = std::numeric_limits<std::int64_t>::min();
      for (std::size_t l = 0; l < n_lcs; ++l)
        bound = std::max(bound, matrix_->into(w->lc(l))[states_[cheapest].rc] - min_into(w->lc(l)));
      bound += states_[cheapest].cost;
      ranked_.clear();
      for (std::size_t s = 0; s < states_.size(); ++s) {
        if (states_[s].cost >= kInf || states_[s].cost > bound) continue;  // unreachable, or wins no lc
        const Ranked state{states_[s].cost, static_cast<std::uint32_t>(s), states_[s].rc, states_[s].tied};
        ranked_.push_back(state);
        std::size_t i = ranked_.size() - 1;
        for (; i > 0 && ranked_[i - 1].cost > state.cost; --i) ranked_[i] = ranked_[i - 1];
        ranked_[i] = state;
      }
      for (std::size_t l = 0; l < n_lcs; ++l) {  // one row of the matrix per lc: the states' reads are close
        const std::uint16_t lc = w->lc(l);
        const std::int64_t floor = min_into(lc);
        const std::int16_t* into = matrix_->into(lc);
        std::int64_t best = kInf;
        std::uint32_t arg = 0;
        bool tied = false;
        for (const Ranked& state : ranked_) {
          if (state.cost + floor > best) break;  // cannot win
          const std::int64_t c = state.cost + into[state.rc];
          if (c < best) {
            best = c, arg = state.index, tied = state.tied;
          } else if (c == best) {
            tied = true;
          }
        }
        in_cost_[l] = best;
        in_tied_[l] = tied;
        lc_choice_.push_back(arg);
      }
      // Exits: each rc takes the cheapest entry, the entries in order (the first of equal costs wins, as a
      // scalar loop would), four rcs at a time on int32 lanes relative to the cheapest entry. Lane values are
      // 2 * cost (the through table's tie bit masked off); kNone32 where no path is.
      std::int64_t base = kInf;
      for (std::size_t l = 0; l < n_lcs; ++l) base = std::min(base, in_cost_[l]);
      entries_.clear();
      bool any_tied = w->tie_bits;
      for (std::size_t l = 0; l < n_lcs; ++l) {
        if (in_cost_[l] >= kInf) continue;
        if (in_cost_[l] - base >= kNarrow) return false;  // far outside captions' costs: MeCab decides
        const auto in2 = static_cast<std::int32_t>(2 * (in_cost_[l] - base));
        const std::int32_t tied = in_tied_[l] != 0 ? -1 : 0, li = static_cast<std::int32_t>(l);
        entries_.push_back(Entry{Lane4{} + in2, Lane4{} + tied, Lane4{} + li});  // broadcast
        any_tied = any_tied || tied != 0;
      }
      next_states_.resize(n_rcs);
      const std::size_t lanes = w->rc_lanes();
      for (std::size_t k = 0; k < lanes; k += 4) {
        // tied: -1 where the cheapest so far is not unique or comes through a tie (a tie bit or a tied entry)
        Lane4 best = {kNone32, kNone32, kNone32, kNone32}, arg = {0, 0, 0, 0}, tied = {0, 0, 0, 0};
        if (any_tied) {
          for (const Entry& e : entries_) {
            Lane4 t;
            std::memcpy(&t, w->through_lane(static_cast<std::size_t>(e.l[0])) + k, sizeof t);
            const Lane4 v = e.in2 + (t & ~1);
            const Lane4 lower = v < best, equal = v == best;  // -1 where true (disjoint)
            tied = (lower & (e.tied | ((t << 31) >> 31))) | (~lower & tied) | equal;
            arg = (lower & e.l) | (~lower & arg);
            best = (lower & v) | (~lower & best);
          }
        } else {  // the usual case: no tie bits (t is 2 * cost)
          for (const Entry& e : entries_) {
            Lane4 t;
            std::memcpy(&t, w->through_lane(static_cast<std::size_t>(e.l[0])) + k, sizeof t);
            const Lane4 v = e.in2 + t;
            const Lane4 lower = v < best, equal = v == best;
            tied = (~lower & tied) | equal;
            arg = (lower & e.l) | (~lower & arg);
            best = (lower & v) | (~lower & best);
          }
        }
        for (std::size_t i = 0; i < 4 && k + i < n_rcs; ++i) {
          const std::size_t r = k + i;
          const bool reached = best[i] < kNone32 / 2;
          next_states_[r] = reached ? State{base + best[i] / 2, w->rc(r), tied[i] != 0} : State{kInf, w->rc(r), false};
          rc_choice_.push_back(reached ? static_cast<std::uint32_t>(arg[i]) : 0u);
        }
      }
      states_.swap(next_states_);
    }
    std::int64_t best = kInf;
    std::uint32_t arg = 0;
    bool tied = false;
    for (std::size_t s = 0; s < states_.size(); ++s) {
      if (states_[s].cost >= kInf) continue;
      const std::int64_t c = states_[s].cost + connection(states_[s].rc, eos_lc_);
      if (c < best) {
        best = c, arg = static_cast<std::uint32_t>(s), tied = states_[s].tied;
      } else if (c == best) {
        tied = true;
      }
    }
    require(best < kInf, "MecabEojeolMemo: no analysis reaches the end of a caption");
    if (tied) return false;
    if (total_cost != nullptr) *total_cost = best;
    // Back through the words: exit rc -> entry lc (path inside) -> the previous word's exit rc.
    chosen_.resize(words_.size());
    std::size_t lc_offset = lc_choice_.size(), rc_offset = rc_choice_.size();
    std::uint32_t r = arg;
    for (std::size_t k = words_.size(); k-- > 0;) {
      const Word& w = *words_[k];
      lc_offset -= w.n_lcs;
      rc_offset -= w.n_rcs;
      const std::uint32_t l = rc_choice_[rc_offset + r];
      chosen_[k] = {l, r};
      r = lc_choice_[lc_offset + l];
    }
    // Features not read yet are in the dictionary (a cache miss each): ask for them all first.
    for (std::size_t k = 0; k < words_.size(); ++k) {
      const Word& w = *words_[k];
      const std::size_t pair = chosen_[k].first * w.n_rcs + chosen_[k].second;
      for (std::uint32_t p = w.path_offset[pair]; p < w.path_offset[pair + 1]; ++p)
        if (const Word::Node& node = w.nodes[w.path_nodes[p]]; !node.tags_read) __builtin_prefetch(node.feature);
    }
    for (std::size_t k = 0; k < words_.size(); ++k) {
      const Word& w = *words_[k];
      const std::size_t pair = chosen_[k].first * w.n_rcs + chosen_[k].second;
      for (std::uint32_t p = w.path_offset[pair]; p < w.path_offset[pair + 1]; ++p) {
        const Word::Node& node = w.nodes[w.path_nodes[p]];
        if (!node.tags_read) {  // the POS field is short: its offsets fit in a byte (else MeCab decides)
          const auto tags = detail::ko_tags(node.feature);
          const auto last_begin = static_cast<std::size_t>(tags.last.data() - node.feature);
          if (last_begin + tags.last.size() > 255) return false;
          node.first_tag_length = static_cast<std::uint8_t>(tags.first.size());
          node.last_tag_begin = static_cast<std::uint8_t>(last_begin);
          node.last_tag_length = static_cast<std::uint8_t>(tags.last.size());
          node.tags_read = true;
        }
        const std::string_view surface(w.text.data() + node.surface_begin, node.surface_length);
        const std::string_view first_tag(node.feature, node.first_tag_length);
        const std::string_view last_tag(node.feature + node.last_tag_begin, node.last_tag_length);
        // a word's first morpheme follows a space, except the text's first when the text starts with none
        const bool word_start = p == w.path_offset[pair] && (k > 0 || first_word > 0);
        out.push_back({surface, first_tag, last_tag, node.space_before || word_start});
      }
    }
    return true;
  }

  // Forget the memoised words.
  void clear() { memo_.clear(); }
  std::size_t size() const { return memo_.size(); }
  std::size_t hits() const { return hits_; }
  std::size_t misses() const { return misses_; }

 private:
  static constexpr std::int64_t kInf = std::numeric_limits<std::int64_t>::max() / 4;
  static constexpr std::int32_t kInf32 = 1 << 30;
  static constexpr std::uint32_t kNotLeader = ~0u;              // analyse_word's node groups
  using Lane4 = std::int32_t __attribute__((vector_size(16)));  // four int32 lanes (GCC/Clang vector extension)
  // Word::table's "no path" (even: the tie bit is masked off) and the bound on costs in the int32 lanes of
  // the sentence pass (|2 * cost| < 2^25, so sums never reach kNone32 / 2).
  static constexpr std::int32_t kNone32 = 1 << 30;
  static constexpr std::int64_t kNarrow = 1 << 24;
  static constexpr std::size_t kMaxWordBytes = 8192;  // longer words: the caption is analysed whole

  struct State {
    std::int64_t cost;  // of the cheapest path from BOS through this exit
    std::uint16_t rc;   // the exit's right context id
    bool tied;          // several cheapest paths
  };

  struct Word {
    struct Node {
      std::uint32_t begin, end;  // byte offsets in the word
      std::uint16_t lc, rc;
      std::int32_t wcost;
      std::uint32_t surface_begin;  // in `text`
      std::uint16_t surface_length;
      bool space_before;  // MeCab's other whitespace inside the word precedes it
      mutable bool tags_read = false;
      mutable std::uint8_t first_tag_length = 0, last_tag_begin = 0, last_tag_length = 0;  // in `feature`
      const char* feature;  // in the dictionary (MeCab's model, which the memo keeps): read when output
    };
    std::string text;
    std::vector<Node> nodes;  // by begin position
    // The word as seen from outside: what enters it matters only through the left context id of its first
    // node, what leaves only through the right context id of its last. So per distinct entry lc (`lcs`)
    // and exit rc (`rcs`): the cheapest path through the word (word costs of all its nodes, connection
    // costs inside), whether several paths cost that, and the path.
    // What the sentence pass reads, in one block (fewer cache misses when the memo is large): the entry lc
    // ids, the exit rc ids, and the cost of the cheapest path through the word per entry and exit, [lc][rc]
    // (lc-major, each entry's row padded to rc_lanes(), a multiple of 4, for the vectorised pass), stored
    // as 2 * cost + (several paths cost that ? 1 : 0), kNone32 where no path connects them. A word with a
    // cost of 2^24 or more (none in captions) is not usable: the pass works on int32 lanes.
    std::vector<std::int32_t> table;
    std::uint32_t n_lcs = 0, n_rcs = 0;
    bool tie_bits = false;  // some entry-exit pair of the table has several cheapest paths
    std::uint16_t lc(std::size_t l) const { return static_cast<std::uint16_t>(table[l]); }
    std::uint16_t rc(std::size_t r) const { return static_cast<std::uint16_t>(table[n_lcs + r]); }
    std::size_t rc_lanes() const { return (n_rcs + 3) & ~std::size_t{3}; }
    const std::int32_t* through_lane(std::size_t l) const { return table.data() + n_lcs + n_rcs + l * rc_lanes(); }
    std::vector<std::uint32_t> path_offset;  // [lc][rc] -> its nodes in path_nodes (lcs*rcs + 1)
    std::vector<std::uint32_t> path_nodes;
    // False for a word that does not start and end with a morpheme: one with MeCab's whitespace other
    // than ' ' (tab, newline...) at an end or only such whitespace. MeCab's lattice of such a word alone is
    // not the piece of the sentence's lattice (its whitespace belongs to the next word there), so a text
    // with one is analysed whole.
    bool usable = false;
  };

  std::int64_t connection(std::uint16_t left_rc, std::uint16_t right_lc) const { return (*matrix_)(left_rc, right_lc); }

  // The matrix's smallest connection cost into `lc`, scanned the first time it is asked for (per memo: the
  // matrix is shared between threads, this memo is not).
  std::int64_t min_into(std::uint16_t lc) {
    if (min_into_.empty()) min_into_.assign(matrix_->right_size(), kUnknown);
    std::int32_t& m = min_into_[lc];
    if (m == kUnknown) m = static_cast<std::int32_t>(matrix_->min_into(lc));
    return m;
  }

  const Word& word(std::string_view text) {
    if (const auto it = memo_.find(text); it != memo_.end()) {
      ++hits_;
      return it->second;
    }
    ++misses_;
    return memo_.emplace(std::string(text), analyse_word(text)).first->second;
  }

  // False when `text` is not valid UTF-8. MeCab reads a character as long as its lead byte says, so a
  // character cut at the word's end takes the following space (and more) in the sentence's lattice: that
  // lattice is not the word's alone, and a text with such a word is analysed whole.
  static bool whole_characters(std::string_view text) {
    for (std::size_t i = 0; i < text.size();) {
      char32_t cp = 0;
      const std::size_t n = detail::utf8_next(text, i, cp);
      if (n == 1 && static_cast<unsigned char>(text[i]) >= 0x80) return false;
      i += n;
    }
    return true;
  }

  // MeCab's lattice of the word alone, its nodes merged where the tokenizer cannot tell them apart, and the
  // cheapest path from every entry to every exit.
  Word analyse_word(std::string_view text) const {
    MeCab::Lattice& lattice = *lattice_;
    lattice.set_sentence(text.data(), text.size());
    require(tagger_->parse(&lattice), "MecabEojeolMemo: MeCab failed on a word: {}", lattice.what());
    Word w;
    w.text = std::string(text);
    Scratch& sc = scratch_;
    auto& nodes = sc.nodes;  // the word's lattice (merged), by begin position; the used ones go to w.nodes
    nodes.clear();
    const auto len = static_cast<std::uint32_t>(text.size());
    // Features live in the dictionary (a random read each): read only those of merged and output nodes.
    for (std::uint32_t pos = 0; pos < len; ++pos) {
      for (const MeCab::Node* n = lattice.begin_nodes(pos); n != nullptr; n = n->bnext) {
        if (n->stat == MECAB_BOS_NODE || n->stat == MECAB_EOS_NODE) continue;
        require(matrix_->covers(n->rcAttr, n->lcAttr), "MecabEojeolMemo: a context id outside matrix.bin");
        const std::uint32_t end = pos + n->rlength;
        bool duplicate = false;
        for (std::size_t k = nodes.size(); k-- > 0 && nodes[k].begin == pos;) {
          const auto& o = nodes[k];
          if (o.end == end && o.lc == n->lcAttr && o.rc == n->rcAttr && o.wcost == n->wcost) {
            const auto a = detail::ko_tags(o.feature), b = detail::ko_tags(n->feature);
            if (a.first == b.first && a.last == b.last) {
              duplicate = true;
              break;
            }
          }
        }
        if (duplicate) continue;
        Word::Node node{};
        node.begin = pos, node.end = end, node.lc = n->lcAttr, node.rc = n->rcAttr, node.wcost = n->wcost;
        node.surface_begin = end - n->length, node.surface_length = n->length;
        node.space_before = n->rlength != n->length;
        node.feature = n->feature;
        nodes.push_back(node);
      }
    }
    const std::size_t n_nodes = nodes.size();
    bool inside = true;
    auto& entries = sc.entries;  // nodes starting the word
    auto& exits = sc.exits;      // nodes ending it
    entries.clear();
    exits.clear();
    for (std::uint32_t i = 0; i < n_nodes; ++i) {
      if (nodes[i].begin == 0) entries.push_back(i);
      if (nodes[i].end == len) exits.push_back(i);
      inside = inside && nodes[i].end <= len;
      if (nodes[i].begin == 0 && nodes[i].space_before) inside = false;  // leading other whitespace
    }
    w.usable = inside && !entries.empty() && !exits.empty() && len <= kMaxWordBytes && whole_characters(text);
    if (!w.usable) return w;
    // The edges inside the word, each node's predecessors (the nodes ending where it begins) with the
    // connection cost read once: the per-entry passes below then only add.
    // nodes by end position (counting sort): ending[end_offset[p], end_offset[p + 1]) end at p
    auto& end_offset = sc.end_offset;
    auto& ending = sc.ending;
    end_offset.assign(len + 2, 0);
    for (std::uint32_t i = 0; i < n_nodes; ++i) ++end_offset[nodes[i].end + 1];
    for (std::uint32_t p = 0; p <= len; ++p) end_offset[p + 1] += end_offset[p];
    ending.resize(n_nodes);
    sc.fill.assign(end_offset.begin(), end_offset.end() - 1);
    for (std::uint32_t i = 0; i < n_nodes; ++i) ending[sc.fill[nodes[i].end]++] = i;
    // Nodes that begin at the same place with the same left context id have the same paths into them (up
    // to their own word cost): one of them (the first, the group's leader) is worked out for all.
    // next_in_group[r]: the group's next node after r (n_nodes: none); edges only into leaders.
    // pred_cost[pred_offset[r] + i]: for a leader r, the connection cost from the i-th node ending where r
    // begins (ending[end_offset[begin]...]) into r.
    auto& next_in_group = sc.next_in_group;
    auto& last_in_group = sc.last_in_group;
    auto& pred_offset = sc.pred_offset;
    auto& pred_cost = sc.pred_cost;
    next_in_group.assign(n_nodes, static_cast<std::uint32_t>(n_nodes));
    last_in_group.resize(n_nodes);
    pred_offset.assign(n_nodes + 1, 0);
    std::uint32_t n_edges = 0;
    for (std::uint32_t r = 0; r < n_nodes; ++r) {
      pred_offset[r] = n_edges;
      const std::uint32_t b = nodes[r].begin;
      last_in_group[r] = r;
      if (b == 0) continue;
      std::uint32_t leader = r;
      for (std::uint32_t k = r; k-- > 0 && nodes[k].begin == b;)
        if (nodes[k].lc == nodes[r].lc && last_in_group[k] != kNotLeader) leader = k;  // the first one
      if (leader != r) {
        next_in_group[last_in_group[leader]] = r;
        last_in_group[leader] = r;
        last_in_group[r] = kNotLeader;
        continue;
      }
      n_edges += end_offset[b + 1] - end_offset[b];
    }
    pred_offset[n_nodes] = n_edges;
    pred_cost.resize(n_edges);
    for (std::uint32_t r = 0; r < n_nodes; ++r) {
      const std::uint32_t b = nodes[r].begin;
      if (b == 0 || last_in_group[r] == kNotLeader) continue;
      const std::int16_t* into = matrix_->into(nodes[r].lc);
      std::int32_t* out = pred_cost.data() + pred_offset[r];
      for (std::uint32_t j = end_offset[b]; j < end_offset[b + 1]; ++j) *out++ = into[nodes[ending[j]].rc];
    }
    auto& lcs = sc.lcs;
    auto& rcs = sc.rcs;
    lcs.clear();
    rcs.clear();
    for (const auto e : entries) push_unique(lcs, nodes[e].lc);
    for (const auto x : exits) push_unique(rcs, nodes[x].rc);
    const std::size_t n_lcs = lcs.size(), n_rcs = rcs.size();
    auto& wcost = sc.word_cost;  // [lc][rc]
    auto& wtied = sc.word_tied;
    wcost.assign(n_lcs * n_rcs, kInf);
    wtied.assign(n_lcs * n_rcs, 0);
    // One pass per entry lc (its entries are the sources: what follows an entry does not depend on which
    // of them it is beyond its cost and rc).
    auto& arg = sc.arg;  // (lc index, exit) of the cheapest
    arg.assign(n_lcs * n_rcs, {0, 0});
    // All entry lcs in one pass, one lane each, four lanes at a time: cost[node * stride + lane] is the cheapest
    // cost of a path from an entry with that lane's lc to the end of the node, int32 (a word's path costs stay
    // far below 2^30: at most kMaxWordBytes nodes of |word cost| + |connection cost| <= 2^16); count[...] how
    // many paths cost that (1, or 2 for "several"), back[...] the predecessor of the first of them (in
    // predecessor order). Exactly one path from an entry to an exit costs the least when the count is 1,
    // and back walks it.
    const std::size_t lanes = n_lcs;
    const std::size_t stride = (lanes + 3) & ~std::size_t{3};
    auto& cost = sc.cost32;
    auto& count = sc.count32;
    auto& back = sc.back32;
    cost.assign(n_nodes * stride, kInf32);
    count.assign(n_nodes * stride, 0);
    back.assign(n_nodes * stride, 0);
    for (const auto e : entries) {
      const std::size_t k = e * stride + index_of(lcs, nodes[e].lc);
      cost[k] = static_cast<std::int32_t>(nodes[e].wcost);
      count[k] = 1;
    }
    std::uint32_t first_inner = 0;  // nodes [0, first_inner) start the word
    while (first_inner < n_nodes && nodes[first_inner].begin == 0) ++first_inner;
    const Lane4 inf4 = {kInf32, kInf32, kInf32, kInf32}, two4 = {2, 2, 2, 2};
    for (std::size_t r = first_inner; r < n_nodes; ++r) {  // in begin order: predecessors come first
      if (last_in_group[r] == kNotLeader) continue;
      const std::uint32_t b = nodes[r].begin;
      const std::uint32_t* preds = ending.data() + end_offset[b];
      const std::uint32_t n_preds = end_offset[b + 1] - end_offset[b];
      const std::int32_t* edge = pred_cost.data() + pred_offset[r];
      for (std::size_t k = 0; k < stride; k += 4) {
        Lane4 cr = inf4, nr = {0, 0, 0, 0}, br = {0, 0, 0, 0};
        for (std::uint32_t i = 0; i < n_preds; ++i) {
          const std::size_t at = static_cast<std::size_t>(preds[i]) * stride + k;
          Lane4 cl, nl;
          std::memcpy(&cl, cost.data() + at, sizeof cl);
          std::memcpy(&nl, count.data() + at, sizeof nl);
          const Lane4 v = cl + edge[i];
          const Lane4 lower = v < cr, equal = v == cr;  // -1 where true (disjoint)
          nr = (~lower & nr) + ((lower | equal) & nl);
          br = (lower & static_cast<std::int32_t>(preds[i])) | (~lower & br);
          cr = (lower & v) | (~lower & cr);
        }
        const Lane4 many = nr > two4;
        nr = (many & two4) | (~many & nr);
        for (std::size_t m = r; m < n_nodes; m = next_in_group[m]) {  // the group, each with its word cost
          Lane4 cm = cr + nodes[m].wcost;
          const Lane4 unreached = cm >= kInf32 / 2;
          cm = (unreached & inf4) | (~unreached & cm);
          std::memcpy(cost.data() + m * stride + k, &cm, sizeof cm);
          std::memcpy(count.data() + m * stride + k, &nr, sizeof nr);
          std::memcpy(back.data() + m * stride + k, &br, sizeof br);
        }
      }
    }
    for (const auto x : exits) {
      const std::size_t ri = index_of(rcs, nodes[x].rc);
      for (std::size_t li = 0; li < lanes; ++li) {
        const std::int32_t c = cost[x * stride + li];
        if (c >= kInf32) continue;
        const std::size_t k = li * n_rcs + ri;
        if (c < wcost[k]) {
          wcost[k] = c, wtied[k] = 0, arg[k] = {static_cast<std::uint32_t>(li), x};
        } else if (c == wcost[k]) {
          wtied[k] = 1;  // two exits with this rc
        }
      }
    }
    // Each (entry lc, exit rc)'s path, back from its exit; none when several paths cost the least (the
    // sentence is then analysed whole).
    w.path_offset.assign(n_lcs * n_rcs + 1, 0);
    auto& path_nodes = sc.path_nodes;  // [0, n_path) in use
    std::size_t n_path = 0;
    for (std::size_t k = 0; k < n_lcs * n_rcs; ++k) {
      w.path_offset[k] = static_cast<std::uint32_t>(n_path);
      if (wcost[k] >= kInf || wtied[k] != 0) continue;
      const auto [li, x] = arg[k];
      if (count[x * stride + li] > 1) {
        wtied[k] = 1;
        continue;
      }
      std::size_t length = 1;
      for (std::uint32_t n = x; nodes[n].begin != 0; n = static_cast<std::uint32_t>(back[n * stride + li])) ++length;
      if (n_path + length > path_nodes.size()) path_nodes.resize(std::max(2 * path_nodes.size(), n_path + length));
      n_path += length;
      auto out = path_nodes.begin() + static_cast<std::ptrdiff_t>(n_path);
      for (std::uint32_t n = x;; n = static_cast<std::uint32_t>(back[n * stride + li])) {
        *--out = n;
        if (nodes[n].begin == 0) break;
      }
    }
    w.path_offset[n_lcs * n_rcs] = static_cast<std::uint32_t>(n_path);
    // Keep only the nodes some path uses (the memo holds many words).
    auto& keep = sc.fill;  // old index -> new index + 1 (0: dropped)
    keep.assign(n_nodes, 0);
    auto& used = sc.used;
    used.clear();
    for (std::size_t p = 0; p < n_path; ++p) {
      std::uint32_t& n = path_nodes[p];
      if (keep[n] == 0) {
        used.push_back(nodes[n]);
        keep[n] = static_cast<std::uint32_t>(used.size());
      }
      n = keep[n] - 1;
    }
    w.nodes.assign(used.begin(), used.end());  // exact sizes: the memo holds many words
    w.path_nodes.assign(path_nodes.begin(), path_nodes.begin() + static_cast<std::ptrdiff_t>(n_path));
    w.n_lcs = static_cast<std::uint32_t>(n_lcs);
    w.n_rcs = static_cast<std::uint32_t>(n_rcs);
    const std::size_t rc_lanes = w.rc_lanes();
    w.table.assign(n_lcs + n_rcs + n_lcs * rc_lanes, kNone32);
    std::copy(lcs.begin(), lcs.end(), w.table.begin());
    std::copy(rcs.begin(), rcs.end(), w.table.begin() + static_cast<std::ptrdiff_t>(n_lcs));
    for (std::size_t li = 0; li < n_lcs; ++li) {
      std::int32_t* lane = w.table.data() + n_lcs + n_rcs + li * rc_lanes;
      for (std::size_t ri = 0; ri < n_rcs; ++ri) {
        const std::int64_t c = wcost[li * n_rcs + ri];
        if (c >= kInf) continue;
        if (c <= -kNarrow || c >= kNarrow) w.usable = false;  // far outside captions' costs: MeCab decides
        lane[ri] = static_cast<std::int32_t>(2 * c + (wtied[li * n_rcs + ri] != 0 ? 1 : 0));
        w.tie_bits = w.tie_bits || wtied[li * n_rcs + ri] != 0;
      }
    }
    return w;
  }

  static void push_unique(std::vector<std::uint16_t>& v, std::uint16_t id) {
    if (std::find(v.begin(), v.end(), id) == v.end()) v.push_back(id);
  }
  static std::size_t index_of(const std::vector<std::uint16_t>& v, std::uint16_t id) {
    return static_cast<std::size_t>(std::find(v.begin(), v.end(), id) - v.begin());
  }

  // The BOS/EOS context ids, and whether a sentence assembled here costs what MeCab says it costs (MeCab's
  // EOS node carries the cost of the best path): on a sentence with particles and endings after spaces,
  // where a whitespace-dependent connection cost would show.
  void make_tagger() {
    tagger_.reset(model_->createTagger());
    lattice_.reset(model_->createLattice());
    require(tagger_ && lattice_, "MecabEojeolMemo: MeCab cannot create a tagger: {}", MeCab::getLastError());
  }

  void probe() {
    MeCab::Lattice& lattice = *lattice_;
    const std::string sentence = "하늘 이 맑고 , 바다 에서 는 배 가 천천히 떠 있다 . 높은 빌딩들이 빛난다.";
    lattice.set_sentence(sentence.data(), sentence.size());
    require(tagger_->parse(&lattice), "MecabEojeolMemo: MeCab failed on the probe sentence: {}", lattice.what());
    bos_rc_ = lattice.bos_node()->rcAttr;
    eos_lc_ = lattice.eos_node()->lcAttr;
    const std::int64_t mecab_cost = lattice.eos_node()->cost;
    std::vector<std::string> mecab_surfaces;
    for (const MeCab::Node* n = lattice.bos_node()->next; n != nullptr && n->stat != MECAB_EOS_NODE; n = n->next)
      mecab_surfaces.emplace_back(n->surface, n->length);
    enabled_ = true;
    std::vector<MecabKoMorpheme> out;
    std::int64_t cost = 0;
    const bool unique = analyse(sentence, out, &cost);
    std::vector<std::string> surfaces;
    for (const auto& m : out) surfaces.emplace_back(m.surface);
    enabled_ = unique && cost == mecab_cost && surfaces == mecab_surfaces;
    memo_.clear();
    hits_ = misses_ = 0;
  }

  std::shared_ptr<const detail::MecabConnectionMatrix> matrix_;
  std::size_t max_entries_;
  std::shared_ptr<MeCab::Model> model_;
  std::unique_ptr<MeCab::Tagger> tagger_;
  std::unique_ptr<MeCab::Lattice> lattice_;
  bool enabled_ = false;
  std::uint16_t bos_rc_ = 0, eos_lc_ = 0;
  struct TextHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, Word, TextHash, std::equal_to<>> memo_;
  std::size_t hits_ = 0, misses_ = 0;
  // scratch of analyse(), kept to avoid allocations
  std::vector<const Word*> words_;
  std::vector<std::int64_t> in_cost_;
  std::vector<std::uint8_t> in_tied_;
  struct Entry {         // an entry of the sentence pass's word, in all four lanes
    Lane4 in2, tied, l;  // 2 * (cost into it - the cheapest entry's), -1 if several paths, which entry
  };
  std::vector<Entry> entries_;
  std::vector<std::uint32_t> lc_choice_, rc_choice_;
  std::vector<State> states_, next_states_;
  struct Ranked {  // a state of the sentence pass, for the states sorted by cost
    std::int64_t cost;
    std::uint32_t index;
    std::uint16_t rc;
    bool tied;
  };
  std::vector<Ranked> ranked_;
  static constexpr std::int32_t kUnknown = std::numeric_limits<std::int32_t>::max();
  std::vector<std::int32_t> min_into_;  // per lc, kUnknown until scanned
  // scratch of analyse_word()
  struct Scratch {
    std::vector<std::uint16_t> lcs, rcs;
    std::vector<std::uint32_t> entries, exits, end_offset, fill, ending, pred_offset, path_nodes, next_in_group,
        last_in_group;
    std::vector<std::int32_t> pred_cost;
    std::vector<std::int64_t> word_cost;
    std::vector<std::uint8_t> word_tied;
    std::vector<std::int32_t> cost32, count32, back32;
    std::vector<Word::Node> nodes, used;
    std::vector<std::pair<std::uint32_t, std::uint32_t>> arg;
  };
  mutable Scratch scratch_;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> chosen_;
};

}  // namespace vidlora::eval

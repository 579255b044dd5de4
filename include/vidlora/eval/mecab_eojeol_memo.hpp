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
// and the constructor's probe detects it). So per word this memo keeps, for every node starting it (entry)
// and every node ending it (exit), the cheapest path between them and its cost (word costs plus the
// connection costs inside the word), from one MeCab analysis of the word alone. A sentence is then a
// Viterbi pass over words: entries take the cheapest exit of the previous word (or BOS) plus the connection
// cost read from the dictionary's matrix.bin, exits take the cheapest entry plus the inner cost, EOS the
// cheapest exit. Ties: MeCab breaks ties between equal-cost paths by its list order, which this pass does
// not reproduce, so analyse() reports a sentence with more than one cheapest path (nodes that differ only in
// features the tokenizer does not read are merged first) and the caller analyses it whole with MeCab.
//
// The words of a caption corpus repeat (particles and endings attach to a small vocabulary), so most words
// are found in the memo and the sentence costs a few hash lookups and connection-cost reads instead of a
// dictionary search per character. A memo holds `max_entries` words; when full it is cleared at the start of
// the next sentence. One memo is for one thread at a time, like the MeCab lattice it is given.

#include <mecab.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <vidlora/core/error.hpp>

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
  // `dictionary`: the compiled mecab-ko-dic directory the tagger was made from (its matrix.bin is read).
  // `tagger`/`lattice` probe once that MeCab's costs behave as described above; if not (another MeCab),
  // enabled() is false and the caller should analyse whole sentences.
  MecabEojeolMemo(const std::filesystem::path& dictionary, MeCab::Tagger& tagger, MeCab::Lattice& lattice,
                  std::size_t max_entries = 1u << 16)
      : matrix_(std::make_shared<const detail::MecabConnectionMatrix>(dictionary / "matrix.bin")),
        max_entries_(max_entries) {
    require(max_entries > 0, "MecabEojeolMemo: max_entries must be > 0");
    probe(tagger, lattice);
  }

  // A copy shares the connection matrix and starts with an empty memo.
  MecabEojeolMemo(const MecabEojeolMemo& other)
      : matrix_(other.matrix_), max_entries_(other.max_entries_), enabled_(other.enabled_), bos_rc_(other.bos_rc_),
        eos_lc_(other.eos_lc_) {}
  MecabEojeolMemo& operator=(const MecabEojeolMemo& other) {
    if (this != &other) *this = MecabEojeolMemo(other);
    return *this;
  }
  MecabEojeolMemo(MecabEojeolMemo&&) noexcept = default;
  MecabEojeolMemo& operator=(MecabEojeolMemo&&) noexcept = default;
  ~MecabEojeolMemo() = default;

  bool enabled() const { return enabled_; }

  // The one-best morphemes of `text` into `out` (views into the memo, valid until the next call), or false
  // when the sentence has several cheapest analyses (or the memo is disabled): analyse it whole then.
  bool analyse(std::string_view text, MeCab::Tagger& tagger, MeCab::Lattice& lattice,
               std::vector<MecabKoMorpheme>& out, std::int64_t* total_cost = nullptr) {
    out.clear();
    if (!enabled_) return false;
    if (memo_.size() >= max_entries_) memo_.clear();
    words_.clear();
    std::size_t first_word = 0;  // where the first word with morphemes starts
    for (std::size_t start = 0; start < text.size();) {
      const std::size_t space = text.find(' ', start);
      const std::size_t end = space == std::string_view::npos ? text.size() : space;
      if (end > start) {
        const Word& w = word(text.substr(start, end - start), tagger, lattice);
        if (!w.usable) return false;
        if (words_.empty()) first_word = start;
        words_.push_back(&w);
      }
      start = end + 1;
    }
    if (words_.empty()) return false;  // spaces only: MeCab's answer (nothing) is quicker to ask for
    // Viterbi over words. State: the exits of the previous word (BOS before the first).
    states_.assign(1, State{0, bos_rc_, false});
    entry_choice_.clear();
    exit_choice_.clear();
    for (const Word* w : words_) {
      const std::size_t n_entries = w->entries.size(), n_exits = w->exits.size();
      entry_cost_.assign(n_entries, kInf);
      entry_tied_.assign(n_entries, 0);
      for (std::size_t e = 0; e < n_entries; ++e) {
        const Word::Node& node = w->nodes[w->entries[e]];
        std::int64_t best = kInf;
        std::uint32_t arg = 0;
        bool tied = false;
        for (std::size_t s = 0; s < states_.size(); ++s) {
          if (states_[s].cost >= kInf) continue;
          const std::int64_t c = states_[s].cost + connection(states_[s].rc, node.lc);
          if (c < best) {
            best = c, arg = static_cast<std::uint32_t>(s), tied = states_[s].tied;
          } else if (c == best) {
            tied = true;
          }
        }
        entry_cost_[e] = best >= kInf ? kInf : best + node.wcost;
        entry_tied_[e] = tied;
        entry_choice_.push_back(arg);
      }
      next_states_.assign(n_exits, State{kInf, 0, false});
      for (std::size_t x = 0; x < n_exits; ++x) {
        std::int64_t best = kInf;
        std::uint32_t arg = 0;
        bool tied = false;
        for (std::size_t e = 0; e < n_entries; ++e) {
          const std::int64_t inner = w->inner[e * n_exits + x];
          if (entry_cost_[e] >= kInf || inner >= kInf) continue;
          const std::int64_t c = entry_cost_[e] + inner;
          if (c < best) {
            best = c, arg = static_cast<std::uint32_t>(e), tied = entry_tied_[e] || w->inner_tied[e * n_exits + x];
          } else if (c == best) {
            tied = true;
          }
        }
        next_states_[x] = State{best, w->nodes[w->exits[x]].rc, tied};
        exit_choice_.push_back(arg);
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
    // Back through the words: exit -> entry (inner path) -> previous word's exit.
    chosen_.resize(words_.size());
    std::size_t entry_offset = entry_choice_.size(), exit_offset = exit_choice_.size();
    std::uint32_t x = arg;
    for (std::size_t k = words_.size(); k-- > 0;) {
      const Word& w = *words_[k];
      entry_offset -= w.entries.size();
      exit_offset -= w.exits.size();
      const std::uint32_t e = exit_choice_[exit_offset + x];
      chosen_[k] = {e, x};
      x = entry_choice_[entry_offset + e];
    }
    for (std::size_t k = 0; k < words_.size(); ++k) {
      const Word& w = *words_[k];
      const std::size_t pair = chosen_[k].first * w.exits.size() + chosen_[k].second;
      for (std::uint32_t p = w.path_offset[pair]; p < w.path_offset[pair + 1]; ++p) {
        const Word::Node& node = w.nodes[w.path_nodes[p]];
        // a word's first morpheme follows a space, except the text's first when the text starts with none
        const bool word_start = p == w.path_offset[pair] && (k > 0 || first_word > 0);
        out.push_back({node.surface, node.first_tag, node.last_tag, node.space_before || word_start});
      }
    }
    return true;
  }

  std::size_t size() const { return memo_.size(); }
  std::size_t hits() const { return hits_; }
  std::size_t misses() const { return misses_; }

 private:
  static constexpr std::int64_t kInf = std::numeric_limits<std::int64_t>::max() / 4;

  struct State {
    std::int64_t cost;  // of the cheapest path from BOS through this exit
    std::uint16_t rc;   // the exit's right context id
    bool tied;          // several cheapest paths
  };

  struct Word {
    struct Node {
      std::uint32_t begin, end;  // byte offsets in the word
      std::uint16_t lc, rc;
      std::int64_t wcost;
      bool space_before;  // MeCab's other whitespace inside the word precedes it
      std::string surface, first_tag, last_tag;
    };
    std::vector<Node> nodes;                 // by begin position
    std::vector<std::uint32_t> entries;      // nodes starting the word
    std::vector<std::uint32_t> exits;        // nodes ending it
    std::vector<std::int64_t> inner;         // [entry][exit]: cheapest path cost after the entry's word cost
    std::vector<std::uint8_t> inner_tied;    // [entry][exit]: several cheapest paths
    std::vector<std::uint32_t> path_offset;  // [entry][exit] -> its path in path_nodes (entries*exits + 1)
    std::vector<std::uint32_t> path_nodes;
    // False for a word that does not start and end with a morpheme: one with MeCab's whitespace other
    // than ' ' (tab, newline...) at an end or only such whitespace. MeCab's lattice of such a word alone is
    // not the piece of the sentence's lattice (its whitespace belongs to the next word there), so a text
    // with one is analysed whole.
    bool usable = false;
  };

  std::int64_t connection(std::uint16_t left_rc, std::uint16_t right_lc) const { return (*matrix_)(left_rc, right_lc); }

  const Word& word(std::string_view text, MeCab::Tagger& tagger, MeCab::Lattice& lattice) {
    if (const auto it = memo_.find(text); it != memo_.end()) {
      ++hits_;
      return it->second;
    }
    ++misses_;
    return memo_.emplace(std::string(text), analyse_word(text, tagger, lattice)).first->second;
  }

  // MeCab's lattice of the word alone, its nodes merged where the tokenizer cannot tell them apart, and the
  // cheapest path from every entry to every exit.
  Word analyse_word(std::string_view text, MeCab::Tagger& tagger, MeCab::Lattice& lattice) const {
    lattice.set_sentence(text.data(), text.size());
    require(tagger.parse(&lattice), "MecabEojeolMemo: MeCab failed on a word: {}", lattice.what());
    Word w;
    const auto len = static_cast<std::uint32_t>(text.size());
    for (std::uint32_t pos = 0; pos < len; ++pos) {
      for (const MeCab::Node* n = lattice.begin_nodes(pos); n != nullptr; n = n->bnext) {
        if (n->stat == MECAB_BOS_NODE || n->stat == MECAB_EOS_NODE) continue;
        require(matrix_->covers(n->rcAttr, n->lcAttr), "MecabEojeolMemo: a context id outside matrix.bin");
        const auto tags = detail::ko_tags(n->feature);
        Word::Node node{pos,
                        pos + n->rlength,
                        n->lcAttr,
                        n->rcAttr,
                        n->wcost,
                        n->rlength != n->length,
                        std::string(n->surface, n->length),
                        std::string(tags.first),
                        std::string(tags.last)};
        bool duplicate = false;
        for (std::size_t k = w.nodes.size(); k-- > 0 && w.nodes[k].begin == pos;) {
          const auto& o = w.nodes[k];
          if (o.end == node.end && o.lc == node.lc && o.rc == node.rc && o.wcost == node.wcost &&
              o.first_tag == node.first_tag && o.last_tag == node.last_tag) {
            duplicate = true;
            break;
          }
        }
        if (!duplicate) w.nodes.push_back(std::move(node));
      }
    }
    const std::size_t n_nodes = w.nodes.size();
    bool inside = true;
    for (std::uint32_t i = 0; i < n_nodes; ++i) {
      if (w.nodes[i].begin == 0) w.entries.push_back(i);
      if (w.nodes[i].end == len) w.exits.push_back(i);
      inside = inside && w.nodes[i].end <= len;
      if (w.nodes[i].begin == 0 && w.nodes[i].space_before) inside = false;  // leading other whitespace
    }
    w.usable = inside && !w.entries.empty() && !w.exits.empty();
    if (!w.usable) return w;
    const std::size_t n_entries = w.entries.size(), n_exits = w.exits.size();
    w.inner.assign(n_entries * n_exits, kInf);
    w.inner_tied.assign(n_entries * n_exits, 0);
    w.path_offset.assign(n_entries * n_exits + 1, 0);
    std::vector<std::int64_t> cost(n_nodes);
    std::vector<std::uint8_t> tied(n_nodes);
    std::vector<std::uint32_t> back(n_nodes);
    std::vector<std::uint32_t> path;
    for (std::size_t e = 0; e < n_entries; ++e) {
      std::fill(cost.begin(), cost.end(), kInf);
      std::fill(tied.begin(), tied.end(), 0);
      cost[w.entries[e]] = 0;
      for (std::size_t r = 0; r < n_nodes; ++r) {  // nodes are in begin order: predecessors come first
        const auto& right = w.nodes[r];
        if (right.begin == 0) continue;
        std::int64_t best = kInf;
        std::uint32_t arg = 0;
        bool t = false;
        for (std::size_t l = 0; l < n_nodes && w.nodes[l].begin < right.begin; ++l) {
          if (w.nodes[l].end != right.begin || cost[l] >= kInf) continue;
          const std::int64_t c = cost[l] + connection(w.nodes[l].rc, right.lc);
          if (c < best) {
            best = c, arg = static_cast<std::uint32_t>(l), t = tied[l];
          } else if (c == best) {
            t = true;
          }
        }
        if (best < kInf) cost[r] = best + right.wcost, back[r] = arg, tied[r] = t;
      }
      for (std::size_t x = 0; x < n_exits; ++x) {
        const std::size_t pair = e * n_exits + x;
        w.inner[pair] = cost[w.exits[x]];
        w.inner_tied[pair] = tied[w.exits[x]];
        w.path_offset[pair] = static_cast<std::uint32_t>(w.path_nodes.size());
        if (w.inner[pair] >= kInf) continue;
        path.clear();
        for (std::uint32_t n = w.exits[x];; n = back[n]) {
          path.push_back(n);
          if (n == w.entries[e]) break;
        }
        w.path_nodes.insert(w.path_nodes.end(), path.rbegin(), path.rend());
      }
    }
    w.path_offset[n_entries * n_exits] = static_cast<std::uint32_t>(w.path_nodes.size());
    return w;
  }

  // The BOS/EOS context ids, and whether a sentence assembled here costs what MeCab says it costs (MeCab's
  // EOS node carries the cost of the best path): on a sentence with particles and endings after spaces,
  // where a whitespace-dependent connection cost would show.
  void probe(MeCab::Tagger& tagger, MeCab::Lattice& lattice) {
    const std::string sentence = "하늘 이 맑고 , 바다 에서 는 배 가 천천히 떠 있다 . 높은 빌딩들이 빛난다.";
    lattice.set_sentence(sentence.data(), sentence.size());
    require(tagger.parse(&lattice), "MecabEojeolMemo: MeCab failed on the probe sentence: {}", lattice.what());
    bos_rc_ = lattice.bos_node()->rcAttr;
    eos_lc_ = lattice.eos_node()->lcAttr;
    const std::int64_t mecab_cost = lattice.eos_node()->cost;
    std::vector<std::string> mecab_surfaces;
    for (const MeCab::Node* n = lattice.bos_node()->next; n != nullptr && n->stat != MECAB_EOS_NODE; n = n->next)
      mecab_surfaces.emplace_back(n->surface, n->length);
    enabled_ = true;
    std::vector<MecabKoMorpheme> out;
    std::int64_t cost = 0;
    const bool unique = analyse(sentence, tagger, lattice, out, &cost);
    std::vector<std::string> surfaces;
    for (const auto& m : out) surfaces.emplace_back(m.surface);
    enabled_ = unique && cost == mecab_cost && surfaces == mecab_surfaces;
    memo_.clear();
    hits_ = misses_ = 0;
  }

  std::shared_ptr<const detail::MecabConnectionMatrix> matrix_;
  std::size_t max_entries_;
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
  std::vector<std::int64_t> entry_cost_;
  std::vector<std::uint8_t> entry_tied_;
  std::vector<std::uint32_t> entry_choice_, exit_choice_;
  std::vector<State> states_, next_states_;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> chosen_;
};

}  // namespace vidlora::eval

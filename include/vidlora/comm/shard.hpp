#pragma once
// Which part of the data a rank reads. The epoch's shuffled order is the same on every rank (seeded, whatever
// the rank count); optimizer step k covers positions [k·S, (k+1)·S) of it with S = ranks × clips per rank, and
// rank r reads the r-th run of `per_rank` of them. So N ranks × batch b read, per step, exactly the clips one
// rank with batch N·b reads. Evaluation clips are dealt round-robin (clip i to rank i mod N).

#include <algorithm>
#include <cstddef>

namespace vidlora::comm {

struct IndexRange {
  std::size_t begin = 0, end = 0;  // [begin, end)
  std::size_t size() const { return end - begin; }
  bool empty() const { return begin >= end; }
};

// Positions of the epoch order that `rank` reads at optimizer step `step` (clamped to `total`; may be empty
// in an epoch's last, partial step).
inline IndexRange step_shard(std::size_t step, std::size_t per_rank, int rank, int ranks, std::size_t total) {
  const std::size_t per_step = per_rank * static_cast<std::size_t>(ranks);
  const std::size_t begin = std::min(total, step * per_step + static_cast<std::size_t>(rank) * per_rank);
  return {begin, std::min(total, begin + per_rank)};
}

// Whether evaluation clip `i` is `rank`'s.
inline bool owns_eval_clip(std::size_t i, int rank, int ranks) {
  return i % static_cast<std::size_t>(ranks) == static_cast<std::size_t>(rank);
}

}  // namespace vidlora::comm

#pragma once
// GradientBuckets: the trainable gradients as a few flat buffers of at most `bucket_bytes` each, in one
// fixed order (the order of the tensors given), so that ranks sum them with one collective per bucket
// instead of one per tensor (PyTorch DDP's buckets; 25 MiB is its default cap). The tensors are viewed as one
// concatenated array cut into buckets: a tensor larger than a bucket spans several.

#include <algorithm>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <vidlora/comm/communicator.hpp>
#include <vidlora/core/error.hpp>

namespace vidlora::comm {

inline constexpr std::size_t kDefaultBucketBytes = std::size_t{25} << 20;

class GradientBuckets {
 public:
  GradientBuckets() = default;
  // tensors: the gradients, each contiguous; their order must be the same on every rank.
  explicit GradientBuckets(std::vector<std::span<float>> tensors, std::size_t bucket_bytes = kDefaultBucketBytes)
      : tensors_(std::move(tensors)) {
    require(bucket_bytes >= sizeof(float), "GradientBuckets: bucket_bytes {} holds no float", bucket_bytes);
    const std::size_t cap = bucket_bytes / sizeof(float);
    std::size_t total = 0;
    for (const auto& t : tensors_) total += t.size();
    total_ = total;
    for (std::size_t start = 0; start < total; start += cap) buckets_.push_back({start, std::min(total, start + cap)});
  }

  std::size_t elements() const { return total_; }
  std::size_t bytes() const { return total_ * sizeof(float); }
  std::size_t bucket_count() const { return buckets_.size(); }

  // Sums the gradients over the ranks of `comm`, in place (nothing to do on one rank).
  template <Communicator C>
  void all_reduce_sum(C& comm, std::string_view what) {
    if (comm.size() == 1) return;
    for (std::size_t b = 0; b < buckets_.size(); ++b) {
      const Range r = buckets_[b];
      buffer_.resize(r.end - r.begin);
      copy(r, true);
      comm.all_reduce_sum(std::span<float>(buffer_), fmt::format("{} (bucket {} of {})", what, b + 1, buckets_.size()));
      copy(r, false);
    }
  }

 private:
  struct Range {
    std::size_t begin, end;  // in the concatenation of the tensors
  };
  // Tensors -> buffer_ (pack) or back (unpack) for the elements [r.begin, r.end) of the concatenation.
  void copy(Range r, bool pack) {
    std::size_t offset = 0;
    for (const auto& t : tensors_) {
      const std::size_t lo = std::max(r.begin, offset), hi = std::min(r.end, offset + t.size());
      if (lo < hi) {
        float* tensor = t.data() + (lo - offset);
        float* flat = buffer_.data() + (lo - r.begin);
        if (pack)
          std::copy(tensor, tensor + (hi - lo), flat);
        else
          std::copy(flat, flat + (hi - lo), tensor);
      }
      offset += t.size();
      if (offset >= r.end) break;
    }
  }

  std::vector<std::span<float>> tensors_;
  std::vector<Range> buckets_;
  std::vector<float> buffer_;
  std::size_t total_ = 0;
};

}  // namespace vidlora::comm

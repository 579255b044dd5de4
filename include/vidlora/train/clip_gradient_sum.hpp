#pragma once
// ClipGradientSum: a step's trainable gradients summed clip by clip in float64, so that the step's gradient is
// the same float32 bits however its clips are split over ranks and micro-batches (1 rank × 4 clips, 2 ranks × 2,
// 4 micro-batches of 1...).
//
// The Trainer computes each clip's gradient on its own (a micro-batch of one sequence: no padding, the same
// float32 products wherever the clip sits in the step), then take() adds it to float64 sums and zeroes the
// float32 tensors for the next clip; all_reduce_sum() sums the ranks' float64 sums; store() rounds each sum to
// float32 once. A float64 sum of float32 addends is exact while their exponents span less than about 29 bits
// (53 − 24, less log2 of the count), which a few clips' gradients of one element nearly always do, so the order
// of the additions (the split) does not change the sum; where it is not exact the orders differ by about 2^-53
// of the largest addend, which the rounding to float32 nearly always hides. A float32 sum instead rounds at
// every addition, and AdamW's m / sqrt(v) turns those roundings on near-zero gradient elements into
// learning-rate-sized parameter differences (docs/distributed.md).
//
// A tensor may be summed elsewhere: a device decoder step (DecoderStep<Cuda>) keeps its LoRA gradients on the device
// and sums each clip's there in float64, then writes its sums into sums_of(tensor) once per step. reset() is told
// which tensors those are (`external`), and take() leaves them alone, so their sums stay zero until their owner
// writes them: it may copy its sums there rather than add them. take() and store() are element-wise and spread over
// the threads (core/parallel.hpp): the same bits whatever the thread count.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include <vidlora/comm/communicator.hpp>
#include <vidlora/comm/gradient_buckets.hpp>
#include <vidlora/core/error.hpp>
#include <vidlora/core/parallel.hpp>

namespace vidlora::train {

class ClipGradientSum {
 public:
  // tensors: the float32 gradients the backward pass accumulates into, each contiguous, in the same order on
  // every rank. The sums start at zero. external(t): t's sums are added by someone else (sums_of), not taken here.
  void reset(std::vector<std::span<float>> tensors, const std::function<bool(std::span<float>)>& external = {}) {
    tensors_ = std::move(tensors);
    external_.assign(tensors_.size(), false);
    std::size_t total = 0;
    for (std::size_t i = 0; i < tensors_.size(); ++i) {
      total += tensors_[i].size();
      if (external) external_[i] = external(tensors_[i]);
    }
    sums_.assign(total, 0.0);
  }

  // The float64 sums of the tensor whose storage starts at `data` (to add a step's sums into), or an empty span
  // when this sum does not hold it.
  std::span<double> sums_of(const float* data) {
    std::size_t offset = 0;
    for (const auto& t : tensors_) {
      if (t.data() == data) return std::span<double>(sums_).subspan(offset, t.size());
      offset += t.size();
    }
    return {};
  }

  std::size_t elements() const { return sums_.size(); }

  // sums += tensors (in float64); tensors = 0.
  // External tensors are skipped.
  void take() {
    std::size_t offset = 0;
    for (std::size_t i = 0; i < tensors_.size(); ++i) {
      const std::span<float> t = tensors_[i];
      if (!external_[i]) {
        double* s = sums_.data() + offset;
        for_blocks(t.size(), [&](std::size_t begin, std::size_t end) {
          for (std::size_t k = begin; k < end; ++k) {
            s[k] += static_cast<double>(t[k]);
            t[k] = 0.0f;
          }
        });
      }
      offset += t.size();
    }
  }

  // Sums the float64 sums over the ranks of `comm`, in place, in flat buffers of at most `bucket_bytes` (nothing
  // to do on one rank). Twice the bytes of a float32 reduction.
  template <comm::Communicator C>
  void all_reduce_sum(C& comm, std::string_view what, std::size_t bucket_bytes = comm::kDefaultBucketBytes) {
    if (comm.size() == 1) return;
    require(bucket_bytes >= sizeof(double), "ClipGradientSum: bucket_bytes {} holds no double", bucket_bytes);
    const std::size_t cap = bucket_bytes / sizeof(double), count = (sums_.size() + cap - 1) / cap;
    for (std::size_t b = 0; b < count; ++b) {
      const std::size_t begin = b * cap, n = std::min(cap, sums_.size() - begin);
      comm.all_reduce_sum(std::span<double>(sums_).subspan(begin, n),
                          fmt::format("{} (float64 bucket {} of {})", what, b + 1, count));
    }
  }

  // tensors = float32(sums): one rounding per element.
  void store() const {
    std::size_t offset = 0;
    for (const auto& t : tensors_) {
      const double* s = sums_.data() + offset;
      for_blocks(t.size(), [&](std::size_t begin, std::size_t end) {
        for (std::size_t k = begin; k < end; ++k) t[k] = static_cast<float>(s[k]);
      });
      offset += t.size();
    }
  }

 private:
  // fn(begin, end) over [0, n) in blocks of 64 Ki elements, spread over the threads (each element on its own).
  template <class Fn>
  static void for_blocks(std::size_t n, Fn&& fn) {
    constexpr std::size_t kBlock = std::size_t{1} << 16;
    const auto blocks = static_cast<std::ptrdiff_t>((n + kBlock - 1) / kBlock);
    parallel_for(std::ptrdiff_t{0}, blocks, static_cast<std::int64_t>(n), [&](std::ptrdiff_t b) {
      const std::size_t begin = static_cast<std::size_t>(b) * kBlock;
      fn(begin, std::min(n, begin + kBlock));
    });
  }

  std::vector<std::span<float>> tensors_;
  std::vector<bool> external_;  // summed elsewhere (sums_of), not by take()
  std::vector<double> sums_;    // the tensors concatenated, in their order
};

}  // namespace vidlora::train

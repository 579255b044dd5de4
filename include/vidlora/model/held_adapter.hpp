#pragma once
// A PEFT adapter of any rank r on a Decoder, whose LoRA rank is a compile-time one (lora::kSupportedRanks):
// hold_adapter(adapter, options) gives the compiled rank to dispatch on (r itself when compiled, else the next
// larger one) and the factors for Decoder::load_adapter, lora_A padded with zero rows and lora_B with zero
// columns up to that rank. B·A is unchanged, so every LoRA output is PEFT's; lora_alpha is rescaled so that the
// held layer's scaling (alpha / rank, or alpha / √rank with rsLoRA) is PEFT's for r. An adapter of r 12 runs
// as Decoder<16, ...> with the 4 extra ranks zero.
//
// What it is for: an adapter trained elsewhere, used as it is (captioning). Trained further at the held rank,
// the padding would stay zero (its gradients are zero: the padded rows of A meet zero columns of B) but the
// adapter written would have the held rank.

#include <cmath>

#include <vidlora/core/error.hpp>
#include <vidlora/lora/peft_adapter.hpp>
#include <vidlora/lora/rank_dispatch.hpp>
#include <vidlora/model/decoder.hpp>
#include <vidlora/model/tensor_source.hpp>

namespace vidlora::model {

// The compiled rank a Decoder holds an adapter of rank `r` at: the smallest of lora::kSupportedRanks that is
// >= r. An r above the largest, or below 1, is an error naming it.
inline int held_rank(int r) {
  require(r >= 1, "LoRA rank r = {} is not a rank (r >= 1)", r);
  for (const int s : lora::kSupportedRanks)
    if (s >= r) return s;
  fail("LoRA rank r = {} is above the largest compiled rank, {}", r, lora::kSupportedRanks.back());
}

struct HeldAdapter {
  int rank = 0;  // the compiled rank to dispatch on (lora::dispatch_rank)
  int r = 0;     // the adapter's own
  // When padded: lora_A [rank, in] and lora_B [out, rank] under their file names (lora::peft_key), for
  // Decoder::load_adapter; empty otherwise (load the adapter's own file: no copy of its factors is made).
  TensorTable factors;
  bool padded() const { return rank != r; }
};

// `adapter` held at held_rank(adapter.spec.r); `options` (decoder_options_for's) gets the alpha that keeps PEFT's
// scaling at the held rank. Without rsLoRA, (alpha · rank) / r in that order: alpha · rank is exact (rank is a power
// of two), so the quotient is exactly rank · fl(alpha / r), and the layer's alpha / rank gives back PEFT's double
// fl(alpha / r) bit for bit (alpha · (rank / r) would not). With rsLoRA, alpha / √r · √rank: exact when √rank is a
// power of two (4, 16, 64, 256), else within an ulp of PEFT's double (the same float scaling).
inline HeldAdapter hold_adapter(const lora::PeftAdapter& adapter, DecoderOptions& options) {
  HeldAdapter held;
  held.r = adapter.spec.r;
  held.rank = held_rank(held.r);
  const Eigen::Index r = held.r, rank = held.rank;
  for (const auto& [module, w] : adapter.modules) {
    require(w.A.rows() == r && w.B.cols() == r, "PEFT adapter: {} has lora_A {} and lora_B {}, not of rank r = {}",
            module, shape_string(w.A), shape_string(w.B), r);
    if (!held.padded()) continue;
    Matrix a = Matrix::Zero(rank, w.A.cols());
    a.topRows(r) = w.A;
    Matrix b = Matrix::Zero(w.B.rows(), rank);
    b.leftCols(r) = w.B;
    held.factors.insert(lora::peft_key(module, 'A'), a);
    held.factors.insert(lora::peft_key(module, 'B'), b);
  }
  const double alpha = adapter.spec.lora_alpha;
  options.lora.alpha = !held.padded() ? alpha
                       : adapter.spec.use_rslora
                           ? alpha / std::sqrt(static_cast<double>(r)) * std::sqrt(static_cast<double>(rank))
                           : (alpha * static_cast<double>(rank)) / static_cast<double>(r);
  return held;
}

}  // namespace vidlora::model

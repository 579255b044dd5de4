#pragma once
// CachedDecoder: the decoder model::generate asks for (model/generation.hpp: make_cache, forward_cached, logits,
// embed) over a DecoderModel on the device. The KV cache, every block, the final norm and the LM head run there
// (DecoderModel::forward_cached / logits); the token embeddings come from the host decoder's table, which the device
// model does not hold; each step's hidden rows and logits come back to the host, where the logits processors and the
// greedy or beam search run unchanged — one generation loop for both backends. Beam search copies a parent's cache on
// the device (DecoderModel::KvCache's copy).
// Status: compiled for sm_75..90; checked against model::Decoder's generation by tests/cuda/test_trainer_step.cu,
// which has not yet run on a GPU (docs/cuda.md).

#include <vidlora/core/portability.hpp>

#if !VIDLORA_KERNELS
#error "vidlora/model/cuda/cached_decoder.cuh runs kernels: compile this translation unit with nvcc (LANGUAGE CUDA)"
#endif

#include <algorithm>
#include <span>
#include <vector>

#include <vidlora/core/matrix.hpp>
#include <vidlora/model/cuda/decoder_model.cuh>

namespace vidlora::model::cuda {

// HostEmbedder: anything with embed(std::span<const int>) -> Matrix [ids, hidden] (model::Decoder).
template <class HostEmbedder>
class CachedDecoder {
 public:
  using matrix_type = Matrix;
  using Cache = DecoderModel::KvCache;

  CachedDecoder(DecoderModel& model, const HostEmbedder& host) : model_(model), host_(host) {}

  Cache make_cache() const { return model_.make_cache(); }

  // embeds [n, hidden] (host) as the next n positions -> their final-norm hidden states [n, hidden] (host).
  Matrix forward_cached(const Matrix& embeds, Cache& cache) {
    const DeviceTensor h = model_.forward_cached(upload(embeds, "inputs_embeds"), cache);
    Matrix out(h.rows, h.cols);
    VIDLORA_CUDA_CHECK(cudaStreamSynchronize(model_.stream()));  // the model's stream may not be the legacy one
    const std::vector<float> values = h.buffer.download();
    std::copy(values.begin(), values.end(), out.data());
    return out;
  }

  // hidden [rows, hidden] (host) -> logits [rows, vocab] (host).
  Matrix logits(const Matrix& hidden) {
    const std::vector<float> values = model_.logits(upload(hidden, "hidden"));
    Matrix out(hidden.rows(), model_.vocab());
    std::copy(values.begin(), values.end(), out.data());
    return out;
  }

  Matrix embed(std::span<const int> ids) const { return host_.embed(ids); }

 private:
  DeviceTensor upload(const Matrix& m, const char* what) const {
    DeviceTensor x(&model_.allocator(), m.rows(), m.cols(), what);
    VIDLORA_CUDA_CHECK(cudaStreamSynchronize(model_.stream()));  // the block may have been freed by queued work
    x.buffer.upload(std::span<const float>(m.data(), static_cast<std::size_t>(m.size())));
    return x;
  }

  DecoderModel& model_;
  const HostEmbedder& host_;
};

}  // namespace vidlora::model::cuda

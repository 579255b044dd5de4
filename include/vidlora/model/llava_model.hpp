#pragma once
// LlavaModel<Rank, Alpha, Base>: a whole LLaVA / LLaVA-NeXT-Video model from one save_pretrained
// directory (config.json + model.safetensors, or shards with model.safetensors.index.json; either
// key layout), in one call:
//   pixels ──ClipVision (feature layer(s), select strategy)──▶ [frames·P, Dv·layers]
//          ──spatial_average_pool (LLaVA-NeXT-Video: spatial_pool_stride)──▶ [frames·P', ·]
//          ──Mlp2xGelu (multimodal_projector_bias)──▶ visual tokens [frames·P', D]
//          ──splice into the prompt at the video (or image) placeholder──▶ Decoder (RoPE scaling,
//            biases, head_dim, tied embeddings: all from config.json)
// It owns the parts and exposes them (vision(), projector(), decoder()) for training; what it adds is
// the loading and the glue transformers' forward does between them.

#include <filesystem>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/io/checkpoint_dir.hpp>
#include <vidlora/lora/frozen_weight.hpp>
#include <vidlora/model/clip_vision.hpp>
#include <vidlora/model/config.hpp>
#include <vidlora/model/decoder.hpp>
#include <vidlora/model/projector.hpp>
#include <vidlora/model/splice.hpp>

namespace vidlora::model {

template <int Rank = 16, int Alpha = 32, lora::FrozenWeight Base = lora::DenseWeight>
class LlavaModel {
 public:
  using decoder_type = Decoder<Rank, Alpha, Base>;

  // dir: what LlavaForConditionalGeneration / LlavaNextVideoForConditionalGeneration.save_pretrained
  // writes. options: the decoder's LoRA targets and options (none: a frozen model).
  explicit LlavaModel(const std::filesystem::path& dir, DecoderOptions options = {})
      : LlavaModel(dir, Sources(dir), std::move(options)) {}

  const LlavaConfig& config() const { return config_; }
  const ClipVision& vision() const { return vision_; }
  Mlp2xGelu& projector() { return projector_; }
  const Mlp2xGelu& projector() const { return projector_; }
  decoder_type& decoder() { return decoder_; }
  const decoder_type& decoder() const { return decoder_; }

  // The prompt placeholder the visual tokens replace: the video token for LLaVA-NeXT-Video, else the image token.
  int placeholder_id() const { return placeholder_; }
  // Visual tokens per frame after pooling (LLaVA-NeXT-Video ViT-L/14-336: 144).
  Eigen::Index tokens_per_frame() const {
    const Eigen::Index stride = config_.spatial_pool_stride;
    return stride > 1 ? (config_.vision.grid() / stride) * (config_.vision.grid() / stride)
                      : vision_.tokens_per_frame();
  }

  // The frozen part: CLIP features of `frames` frames [frames, C, S, S] (CLIP-normalised, channel
  // first), pooled when the model pools: [frames · tokens_per_frame(), Dv · feature layers].
  Matrix visual_features(std::span<const float> pixels, Eigen::Index frames) const {
    const Matrix features = vision_.features(pixels, frames);
    if (config_.spatial_pool_stride <= 1) return features;
    return spatial_average_pool(features, config_.vision.grid(), config_.spatial_pool_stride);
  }
  // Through the projector: [frames · tokens_per_frame(), hidden].
  Matrix visual_tokens(std::span<const float> pixels, Eigen::Index frames) const {
    return projector_.apply(visual_features(pixels, frames));
  }

  // One prompt with its visual tokens spliced at the placeholder(s) (one placeholder, or one per token).
  SplicedSequence splice(std::span<const int> prompt_ids, std::span<const int> answer_ids, const Matrix& visual) const {
    return splice_visual_tokens<float>(prompt_ids, answer_ids, placeholder_, visual, decoder_.embed_tokens());
  }

  // Logits [batch · T, vocab] of right-padded prompts, each with its clip's visual tokens.
  Matrix logits(const std::vector<std::vector<int>>& prompts, const std::vector<Matrix>& visual, int pad_id = 0) {
    require(prompts.size() == visual.size() && !prompts.empty(), "LlavaModel::logits: {} prompts for {} clips",
            prompts.size(), visual.size());
    std::vector<SplicedSequence> seqs;
    for (std::size_t b = 0; b < prompts.size(); ++b) seqs.push_back(splice(prompts[b], {}, visual[b]));
    const SplicedBatch batch = collate(seqs, decoder_.embed_tokens(), pad_id);
    return decoder_.logits(decoder_.forward(batch.embeds, batch.batch, false));
  }

  // Greedy decoding (KV cache) after a prompt with its clip's visual tokens.
  std::vector<int> generate_greedy(std::span<const int> prompt_ids, const Matrix& visual, int max_new_tokens,
                                   int eos_token_id = -1) {
    return decoder_.generate_greedy(splice(prompt_ids, {}, visual).embeds, max_new_tokens, eos_token_id);
  }

 private:
  static LlavaConfig read_config(const std::filesystem::path& dir) {
    const auto path = dir / "config.json";
    require(std::filesystem::is_regular_file(path),
            "LlavaModel: '{}' is not a Hugging Face model directory: it has no config.json", dir.string());
    try {
      return LlavaConfig::from_file(path);
    } catch (const Error& e) {
      fail("LlavaModel: '{}': {}", path.string(), e.what());
    }
  }

  // config.json first (its errors say what kind of directory this is), then the weights.
  struct Sources {
    LlavaConfig config;
    io::CheckpointDir weights;
    explicit Sources(const std::filesystem::path& dir)
        : config(read_config(dir)), weights(io::CheckpointDir::open(dir)) {}
  };

  LlavaModel(const std::filesystem::path& dir, const Sources& sources, DecoderOptions options)
      : config_(sources.config),
        vision_(config_.vision, sources.weights, ClipVisionOptions::from(config_)),
        projector_(Mlp2xGelu::load(sources.weights, config_)),
        decoder_(config_.text, sources.weights, std::move(options)) {
    const bool video = config_.spatial_pool_stride > 1 || config_.video_token_id >= 0;
    placeholder_ = video && config_.video_token_id >= 0 ? config_.video_token_id : config_.image_token_id;
    require(placeholder_ >= 0 && placeholder_ < config_.text.vocab_size,
            "LlavaModel: '{}': the placeholder token id {} (video_token_index / image_token_index) is outside the "
            "vocabulary of {}",
            dir.string(), placeholder_, config_.text.vocab_size);
    require(config_.spatial_pool_stride <= 1 || config_.drop_cls,
            "LlavaModel: '{}': spatial pooling needs the square patch grid, but vision_feature_select_strategy "
            "\"full\" keeps the CLS token",
            dir.string());
  }

  LlavaConfig config_;
  ClipVision vision_;
  Mlp2xGelu projector_;
  decoder_type decoder_;
  int placeholder_ = -1;
};

}  // namespace vidlora::model

#pragma once
// A vision-language checkpoint read by canonical tensor names, whatever layout its keys use:
//   LLaVA / LLaVA-NeXT-Video, older hub layout:  language_model.model.layers.N…, language_model.lm_head.weight,
//                                                 vision_tower[.vision_model].…, multi_modal_projector.…
//   LLaVA / LLaVA-NeXT-Video, newer layout:      model.language_model.layers.N…, lm_head.weight,
//                                                 model.vision_tower[.vision_model].…, model.multi_modal_projector.…
//   a decoder-only LLaMA / Qwen checkpoint (model.layers.N…, lm_head.weight), optionally with a
//   separate CLIP checkpoint (CLIPModel / CLIPVisionModel: [vision_model.]embeddings.…).
// Canonical names: decoder tensors as LlamaForCausalLM names them ("model.layers.0.mlp.up_proj.weight",
// "lm_head.weight"); vision tensors as the CLIP vision transformer names them, without
// "vision_model." ("embeddings.patch_embedding.weight", "encoder.layers.0.self_attn.q_proj.weight");
// projector tensors as LLaVA names them ("multi_modal_projector.linear_1.weight", "image_newline").

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/io/checkpoint_dir.hpp>

namespace vidlora::io {

enum class CheckpointLayout { DecoderOnly, LlavaLegacy, LlavaCurrent };
enum class ModelPart { Decoder, Vision, Projector };

constexpr std::string_view layout_name(CheckpointLayout layout) {
  switch (layout) {
    case CheckpointLayout::DecoderOnly: return "decoder-only layout";
    case CheckpointLayout::LlavaLegacy: return "LLaVA layout with language_model.model.* keys";
    case CheckpointLayout::LlavaCurrent: return "LLaVA layout with model.language_model.* keys";
  }
  return "?";
}

constexpr std::string_view part_name(ModelPart part) {
  switch (part) {
    case ModelPart::Decoder: return "decoder";
    case ModelPart::Vision: return "vision";
    case ModelPart::Projector: return "projector";
  }
  return "?";
}

class ModelCheckpoint {
 public:
  // A LLaVA-family checkpoint (either layout; the vision tower and projector inside) or a
  // decoder-only one (no vision tower, no projector).
  static ModelCheckpoint open(const std::filesystem::path& path) {
    ModelCheckpoint c;
    c.main_ = std::make_shared<CheckpointDir>(CheckpointDir::open(path));
    const CheckpointDir& d = *c.main_;
    if (d.contains("model.language_model.embed_tokens.weight")) {
      c.layout_ = CheckpointLayout::LlavaCurrent;
      c.model_prefix_ = "model.language_model.";
      c.lm_head_prefix_ = "";
      c.projector_prefix_ = "model.";
      c.find_vision(d, {"model.vision_tower.vision_model.", "model.vision_tower."});
    } else if (d.contains("language_model.model.embed_tokens.weight")) {
      c.layout_ = CheckpointLayout::LlavaLegacy;
      c.model_prefix_ = "language_model.model.";
      c.lm_head_prefix_ = "language_model.";
      c.projector_prefix_ = "";
      c.find_vision(d, {"vision_tower.vision_model.", "vision_tower."});
    } else if (d.contains("model.embed_tokens.weight")) {
      c.layout_ = CheckpointLayout::DecoderOnly;
      c.model_prefix_ = "model.";
      c.lm_head_prefix_ = "";
    } else {
      const auto names = d.names();
      fail(
          "checkpoint '{}': unrecognised key layout: no model.embed_tokens.weight, "
          "language_model.model.embed_tokens.weight or model.language_model.embed_tokens.weight "
          "(first keys: {})",
          d.root().string(), fmt::join(names.begin(), names.begin() + std::min<std::size_t>(names.size(), 4), ", "));
    }
    if (c.layout_ != CheckpointLayout::DecoderOnly)
      c.has_projector_ = d.contains(c.projector_prefix_ + "multi_modal_projector.linear_1.weight");
    return c;
  }

  // A decoder checkpoint (any layout) plus a separate CLIP checkpoint for the vision tower.
  static ModelCheckpoint open(const std::filesystem::path& decoder, const std::filesystem::path& vision) {
    ModelCheckpoint c = open(decoder);
    c.vision_ = std::make_shared<CheckpointDir>(CheckpointDir::open(vision));
    c.vision_prefix_.reset();
    c.find_vision(*c.vision_, {"vision_model.", ""});
    if (!c.vision_prefix_)
      fail(
          "checkpoint '{}': no CLIP vision tower (neither vision_model.embeddings.patch_embedding.weight nor "
          "embeddings.patch_embedding.weight)",
          c.vision_->root().string());
    return c;
  }

  CheckpointLayout layout() const { return layout_; }
  bool has_vision() const { return vision_prefix_.has_value(); }
  bool has_projector() const { return has_projector_; }

  // The key `name` of `part` has in the file, or nullopt if that part has no such tensor.
  std::optional<std::string> find(ModelPart part, std::string_view name) const {
    const std::string key = key_for(part, name);
    return dir(part).contains(key) ? std::optional<std::string>(key) : std::nullopt;
  }
  bool contains(ModelPart part, std::string_view name) const { return has(part) && find(part, name).has_value(); }

  // The key in the file; throws naming the canonical name and the key looked for.
  std::string key(ModelPart part, std::string_view name) const {
    const std::string k = key_for(part, name);
    if (!dir(part).contains(k))
      fail("checkpoint '{}' ({}): missing {} tensor '{}' (looked for '{}')", dir(part).root().string(),
           layout_name(layout_), part_name(part), name, k);
    return k;
  }

  const TensorInfo& info(ModelPart part, std::string_view name) const { return dir(part).info(key(part, name)); }
  Matrix matrix(ModelPart part, std::string_view name) const { return dir(part).matrix(key(part, name)); }
  Vector vector(ModelPart part, std::string_view name) const { return dir(part).vector(key(part, name)); }
  // With a shape check; the error names the file's key and both shapes.
  Matrix matrix(ModelPart part, std::string_view name, std::int64_t rows, std::int64_t cols) const {
    return dir(part).matrix(key(part, name), rows, cols);
  }
  Vector vector(ModelPart part, std::string_view name, std::int64_t size) const {
    return dir(part).vector(key(part, name), size);
  }
  void expect_shape(ModelPart part, std::string_view name, const std::vector<std::int64_t>& shape) const {
    dir(part).expect_shape(key(part, name), shape);
  }

  // One part seen as a plain tensor source under canonical names (contains / info / vector /
  // matrix), e.g. for loaders that take any checkpoint-like object. Valid while `*this` lives.
  class PartView {
   public:
    PartView(const ModelCheckpoint& checkpoint, ModelPart part) : c_(&checkpoint), part_(part) {}
    bool contains(std::string_view name) const { return c_->contains(part_, name); }
    const TensorInfo& info(std::string_view name) const { return c_->info(part_, name); }
    Vector vector(std::string_view name) const { return c_->vector(part_, name); }
    Matrix matrix(std::string_view name) const { return c_->matrix(part_, name); }
    ModelPart part() const { return part_; }

   private:
    const ModelCheckpoint* c_;
    ModelPart part_;
  };
  PartView part(ModelPart part) const {
    if (!has(part)) dir(part);  // throws: the part is absent
    return PartView(*this, part);
  }

  // The checkpoint holding `part` (the separate CLIP one for Vision when opened with two paths).
  const CheckpointDir& dir(ModelPart part) const {
    if (!has(part)) {
      if (part == ModelPart::Vision)
        fail("checkpoint '{}' ({}) has no vision tower; open it together with a CLIP checkpoint",
             main_->root().string(), layout_name(layout_));
      fail("checkpoint '{}' ({}) has no multi_modal_projector", main_->root().string(), layout_name(layout_));
    }
    return part == ModelPart::Vision && vision_ ? *vision_ : *main_;
  }

 private:
  bool has(ModelPart part) const {
    return part == ModelPart::Decoder || (part == ModelPart::Vision ? has_vision() : has_projector_);
  }

  std::string key_for(ModelPart part, std::string_view name) const {
    switch (part) {
      case ModelPart::Decoder:
        if (name.starts_with("model.")) return model_prefix_ + std::string(name.substr(6));
        if (name.starts_with("lm_head.")) return lm_head_prefix_ + std::string(name);
        fail("decoder tensor '{}': canonical decoder names start with 'model.' or 'lm_head.'", name);
      case ModelPart::Vision:
        if (!vision_prefix_) dir(part);  // throws: no vision tower
        return *vision_prefix_ + std::string(name);
      case ModelPart::Projector: return projector_prefix_ + std::string(name);
    }
    return std::string(name);
  }

  void find_vision(const CheckpointDir& d, std::initializer_list<std::string_view> prefixes) {
    for (std::string_view p : prefixes)
      if (d.contains(std::string(p) + "embeddings.patch_embedding.weight")) {
        vision_prefix_ = std::string(p);
        return;
      }
  }

  std::shared_ptr<CheckpointDir> main_;
  std::shared_ptr<CheckpointDir> vision_;  // set when the vision tower is a separate checkpoint
  CheckpointLayout layout_ = CheckpointLayout::DecoderOnly;
  std::string model_prefix_;      // replaces the canonical "model."
  std::string lm_head_prefix_;    // goes before "lm_head."
  std::string projector_prefix_;  // goes before "multi_modal_projector." / "image_newline"
  std::optional<std::string> vision_prefix_;
  bool has_projector_ = false;
};

}  // namespace vidlora::io

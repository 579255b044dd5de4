#pragma once
// Model configurations read from a Hugging Face config.json: the decoder (LLaMA / Qwen2 / Qwen3),
// the CLIP vision tower and the LLaVA wrapper that joins them.

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include <vidlora/core/error.hpp>

namespace vidlora::model {

enum class Architecture { Llama, Qwen2, Qwen3 };

inline const char* architecture_name(Architecture a) {
  switch (a) {
    case Architecture::Llama: return "llama";
    case Architecture::Qwen2: return "qwen2";
    case Architecture::Qwen3: return "qwen3";
  }
  return "?";
}

namespace detail {
inline nlohmann::json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  require(static_cast<bool>(in), "cannot open {}", path.string());
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail("{} is not valid JSON: {}", path.string(), e.what());
  }
}

template <class T>
T field(const nlohmann::json& j, const char* key, const char* who) {
  require(j.contains(key) && !j[key].is_null(), "{}: config.json has no \"{}\"", who, key);
  try {
    return j[key].get<T>();
  } catch (const nlohmann::json::exception&) {
    fail("{}: config.json field \"{}\" has the wrong type ({})", who, key, j[key].dump());
  }
}

template <class T>
T field_or(const nlohmann::json& j, const char* key, T fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  return j[key].get<T>();
}
}  // namespace detail

// The decoder's shape and numerics, as config.json names them.
struct DecoderConfig {
  Architecture architecture = Architecture::Llama;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int head_dim = 0;             // hidden_size / num_attention_heads unless config.json says otherwise
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  int vocab_size = 0;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // llama / qwen3: bias on q, k, v and o

  // Qwen2 always has q/k/v biases (and no o bias); llama and qwen3 follow attention_bias.
  bool qkv_bias() const { return architecture == Architecture::Qwen2 || attention_bias; }
  bool o_bias() const { return architecture != Architecture::Qwen2 && attention_bias; }
  bool qk_norm() const { return architecture == Architecture::Qwen3; }  // per-head RMSNorm on q and k
  int q_features() const { return num_attention_heads * head_dim; }
  int kv_features() const { return num_key_value_heads * head_dim; }

  // From a decoder config.json object, or a LLaVA one (its "text_config" is used).
  static DecoderConfig from_json(const nlohmann::json& j) {
    using detail::field;
    using detail::field_or;
    const std::string type = field_or<std::string>(j, "model_type", "");
    if (type == "llava" || type == "llava_next" || type == "llava_next_video" || type == "llava_onevision") {
      require(j.contains("text_config"), "DecoderConfig: {} config.json has no \"text_config\"", type);
      nlohmann::json text = j["text_config"];
      if (!text.contains("model_type")) text["model_type"] = "llama";  // LLaVA's default language model
      return from_json(text);
    }
    DecoderConfig c;
    if (type == "llama" || type == "mistral") {
      c.architecture = Architecture::Llama;
    } else if (type == "qwen2") {
      c.architecture = Architecture::Qwen2;
    } else if (type == "qwen3") {
      c.architecture = Architecture::Qwen3;
    } else {
      fail("DecoderConfig: unknown architecture \"{}\" in config.json (model_type); supported: llama, qwen2, qwen3, "
           "and llava / llava_next_video wrapping one of them",
           type.empty() ? std::string("<missing>") : type);
    }
    const char* who = "DecoderConfig";
    c.hidden_size = field<int>(j, "hidden_size", who);
    c.intermediate_size = field<int>(j, "intermediate_size", who);
    c.num_hidden_layers = field<int>(j, "num_hidden_layers", who);
    c.num_attention_heads = field<int>(j, "num_attention_heads", who);
    c.num_key_value_heads = field_or<int>(j, "num_key_value_heads", c.num_attention_heads);
    c.vocab_size = field<int>(j, "vocab_size", who);
    require(c.num_attention_heads > 0 && c.hidden_size > 0, "DecoderConfig: hidden_size {} / heads {} must be > 0",
            c.hidden_size, c.num_attention_heads);
    c.head_dim = field_or<int>(j, "head_dim", c.hidden_size / c.num_attention_heads);
    c.rms_norm_eps = field_or<double>(j, "rms_norm_eps", 1e-6);
    c.tie_word_embeddings = field_or<bool>(j, "tie_word_embeddings", false);
    c.attention_bias = field_or<bool>(j, "attention_bias", false);
    // transformers 5 writes rope_parameters {rope_type, rope_theta}; 4.x wrote rope_theta / rope_scaling.
    c.rope_theta = field_or<double>(j, "rope_theta", 10000.0);
    for (const char* key : {"rope_parameters", "rope_scaling"}) {
      if (!j.contains(key) || j[key].is_null()) continue;
      const auto& rp = j[key];
      const std::string rope_type = field_or<std::string>(rp, "rope_type", field_or<std::string>(rp, "type", "default"));
      require(rope_type == "default", "DecoderConfig: RoPE type \"{}\" ({}) is not supported; only the default RoPE",
              rope_type, key);
      c.rope_theta = field_or<double>(rp, "rope_theta", c.rope_theta);
    }
    c.validate();
    return c;
  }

  static DecoderConfig from_file(const std::filesystem::path& config_json) {
    return from_json(detail::read_json_file(config_json));
  }

  void validate() const {
    require(hidden_size > 0 && intermediate_size > 0 && num_hidden_layers > 0 && vocab_size > 0,
            "DecoderConfig: hidden_size {}, intermediate_size {}, num_hidden_layers {}, vocab_size {} must be > 0",
            hidden_size, intermediate_size, num_hidden_layers, vocab_size);
    require(num_key_value_heads > 0 && num_attention_heads % num_key_value_heads == 0,
            "DecoderConfig: num_attention_heads {} is not a multiple of num_key_value_heads {}", num_attention_heads,
            num_key_value_heads);
    require(head_dim > 0 && head_dim % 2 == 0, "DecoderConfig: head_dim {} must be even and > 0 (RoPE pairs)",
            head_dim);
    require(rms_norm_eps > 0 && rope_theta > 0, "DecoderConfig: rms_norm_eps {} and rope_theta {} must be > 0",
            rms_norm_eps, rope_theta);
  }
};

// CLIPVisionModel's configuration (the "vision_config" of a LLaVA config.json).
struct ClipVisionConfig {
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int image_size = 0;
  int patch_size = 0;
  int num_channels = 3;
  double layer_norm_eps = 1e-5;

  int grid() const { return image_size / patch_size; }        // patches per side (24 for ViT-L/14-336)
  int num_patches() const { return grid() * grid(); }         // 576 for ViT-L/14-336
  int head_dim() const { return hidden_size / num_attention_heads; }

  // From a CLIP vision config object, a CLIPVisionModel config.json, or a LLaVA one ("vision_config").
  static ClipVisionConfig from_json(const nlohmann::json& j) {
    using detail::field;
    using detail::field_or;
    if (j.contains("vision_config")) return from_json(j["vision_config"]);
    const char* who = "ClipVisionConfig";
    const std::string type = field_or<std::string>(j, "model_type", "clip_vision_model");
    require(type == "clip_vision_model" || type == "clip", "ClipVisionConfig: unknown vision architecture \"{}\"",
            type);
    ClipVisionConfig c;
    c.hidden_size = field<int>(j, "hidden_size", who);
    c.intermediate_size = field<int>(j, "intermediate_size", who);
    c.num_hidden_layers = field<int>(j, "num_hidden_layers", who);
    c.num_attention_heads = field<int>(j, "num_attention_heads", who);
    c.image_size = field<int>(j, "image_size", who);
    c.patch_size = field<int>(j, "patch_size", who);
    c.num_channels = field_or<int>(j, "num_channels", 3);
    c.layer_norm_eps = field_or<double>(j, "layer_norm_eps", 1e-5);
    const std::string act = field_or<std::string>(j, "hidden_act", "quick_gelu");
    require(act == "quick_gelu", "ClipVisionConfig: hidden_act \"{}\" is not supported (CLIP uses quick_gelu)", act);
    require(c.hidden_size > 0 && c.num_attention_heads > 0 && c.hidden_size % c.num_attention_heads == 0,
            "ClipVisionConfig: hidden_size {} is not a multiple of num_attention_heads {}", c.hidden_size,
            c.num_attention_heads);
    require(c.patch_size > 0 && c.image_size % c.patch_size == 0,
            "ClipVisionConfig: image_size {} is not a multiple of patch_size {}", c.image_size, c.patch_size);
    return c;
  }
};

// The LLaVA glue: which vision layer feeds the projector, the placeholder id, the projector kind.
struct LlavaConfig {
  DecoderConfig text;
  ClipVisionConfig vision;
  int image_token_id = -1;
  int video_token_id = -1;          // LLaVA-NeXT-Video only
  int vision_feature_layer = -2;    // hidden_states index (negative: from the end)
  bool drop_cls = true;             // vision_feature_select_strategy "default"
  bool projector_bias = true;
  int spatial_pool_stride = 1;      // 2 for LLaVA-NeXT-Video (average pooling, 576 -> 144)

  static LlavaConfig from_json(const nlohmann::json& j) {
    using detail::field_or;
    LlavaConfig c;
    c.text = DecoderConfig::from_json(j);
    c.vision = ClipVisionConfig::from_json(j);
    c.image_token_id = field_or<int>(j, "image_token_id", field_or<int>(j, "image_token_index", -1));
    c.video_token_id = field_or<int>(j, "video_token_id", field_or<int>(j, "video_token_index", -1));
    c.vision_feature_layer = field_or<int>(j, "vision_feature_layer", -2);
    c.drop_cls = field_or<std::string>(j, "vision_feature_select_strategy", "default") == "default";
    c.projector_bias = field_or<bool>(j, "multimodal_projector_bias", true);
    if (field_or<std::string>(j, "model_type", "") == "llava_next_video") {
      const std::string mode = field_or<std::string>(j, "spatial_pool_mode", "average");
      require(mode == "average", "LlavaConfig: spatial_pool_mode \"{}\" is not supported (only average)", mode);
      c.spatial_pool_stride = field_or<int>(j, "spatial_pool_stride", 2);
    }
    const std::string act = field_or<std::string>(j, "projector_hidden_act", "gelu");
    require(act == "gelu", "LlavaConfig: projector_hidden_act \"{}\" is not supported (Mlp2xGelu uses exact gelu)", act);
    return c;
  }
  static LlavaConfig from_file(const std::filesystem::path& config_json) {
    return from_json(detail::read_json_file(config_json));
  }
};

}  // namespace vidlora::model

namespace vidlora {
using model::Architecture;
using model::ClipVisionConfig;
using model::DecoderConfig;
using model::LlavaConfig;
}  // namespace vidlora

#pragma once
// Model configurations read from a Hugging Face config.json: the decoder (LLaMA / Qwen2 / Qwen3),
// the CLIP vision tower and the LLaVA wrapper that joins them.

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/model/rope_scaling.hpp>

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
T field_or(const nlohmann::json& j, const char* key, T fallback, const char* who = "config.json") {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  try {
    return j[key].get<T>();
  } catch (const nlohmann::json::exception&) {
    fail("{}: config.json field \"{}\" has the wrong type ({})", who, key, j[key].dump());
  }
}

// True when config.json sets `key` to something other than null.
inline bool present(const nlohmann::json& j, const char* key) { return j.contains(key) && !j[key].is_null(); }
}  // namespace detail

// The decoder's shape and numerics, as config.json names them.
struct DecoderConfig {
  Architecture architecture = Architecture::Llama;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int head_dim = 0;  // hidden_size / num_attention_heads unless config.json says otherwise
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling{};       // rope_parameters / rope_scaling beyond rope_theta
  int max_position_embeddings = 0;  // dynamic / yarn / llama3 RoPE read it (0: the architecture's default)
  int vocab_size = 0;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // llama / qwen3: bias on q, k, v and o
  bool mlp_bias = false;        // llama: bias on gate, up and down
  int sliding_window = 0;       // > 0: some layers attend within this window; sequences may not be longer

  // Qwen2 always has q/k/v biases (and no o bias); llama and qwen3 follow attention_bias.
  bool qkv_bias() const { return architecture == Architecture::Qwen2 || attention_bias; }
  bool o_bias() const { return architecture != Architecture::Qwen2 && attention_bias; }
  bool has_mlp_bias() const { return mlp_bias; }
  bool qk_norm() const { return architecture == Architecture::Qwen3; }  // per-head RMSNorm on q and k
  int q_features() const { return num_attention_heads * head_dim; }
  int kv_features() const { return num_key_value_heads * head_dim; }

  // From a decoder config.json object, or a LLaVA one (its "text_config" is used).
  static DecoderConfig from_json(const nlohmann::json& j) {
    using detail::field;
    using detail::field_or;
    using detail::present;
    const std::string type = field_or<std::string>(j, "model_type", "");
    if (type == "llava" || type == "llava_next" || type == "llava_next_video" || type == "llava_onevision") {
      // No text_config: LLaVA's default language model, LlamaConfig's defaults (transformers). LLaVA-OneVision's
      // defaults are another model's (a Qwen2 decoder): its config must give the text config.
      require(present(j, "text_config") || type != "llava_onevision",
              "DecoderConfig: a {} config.json without \"text_config\" is not supported (its default decoder is not "
              "LLaVA's)",
              type);
      nlohmann::json text = present(j, "text_config") ? j["text_config"] : nlohmann::json::object();
      require(text.is_object(), "DecoderConfig: {} config.json's \"text_config\" is not an object", type);
      if (!text.contains("model_type")) text["model_type"] = "llama";
      // The LM head is tied when the LLaVA config or its text config says so (transformers ties on either).
      if (field_or<bool>(j, "tie_word_embeddings", false, "DecoderConfig")) text["tie_word_embeddings"] = true;
      return from_json(text);
    }
    DecoderConfig c;
    const bool mistral = type == "mistral";
    if (type == "llama" || mistral) {
      c.architecture = Architecture::Llama;
    } else if (type == "qwen2") {
      c.architecture = Architecture::Qwen2;
    } else if (type == "qwen3") {
      c.architecture = Architecture::Qwen3;
    } else {
      fail(
          "DecoderConfig: unknown architecture \"{}\" in config.json (model_type); supported: llama, qwen2, qwen3, "
          "and llava / llava_next_video wrapping one of them",
          type.empty() ? std::string("<missing>") : type);
    }
    const char* who = "DecoderConfig";
    // A field config.json leaves out takes the value of transformers' config class for the architecture: the Hub's
    // checkpoints saved by transformers 4 wrote only the fields that differ from it (llava-hf's text_config has no
    // hidden_size: LlamaConfig's defaults are LLaMA-7B's). tools/reference/hf_config_defaults.py checks them.
    const DefaultShape shape = default_shape(type);
    c.hidden_size = field_or<int>(j, "hidden_size", shape.hidden_size, who);
    c.intermediate_size = field_or<int>(j, "intermediate_size", shape.intermediate_size, who);
    c.num_hidden_layers = field_or<int>(j, "num_hidden_layers", shape.num_hidden_layers, who);
    c.num_attention_heads = field_or<int>(j, "num_attention_heads", shape.num_attention_heads, who);
    c.num_key_value_heads =
        field_or<int>(j, "num_key_value_heads",
                      shape.num_key_value_heads > 0 ? shape.num_key_value_heads : c.num_attention_heads, who);
    c.vocab_size = field_or<int>(j, "vocab_size", shape.vocab_size, who);
    require(c.num_attention_heads > 0 && c.hidden_size > 0, "DecoderConfig: hidden_size {} / heads {} must be > 0",
            c.hidden_size, c.num_attention_heads);
    // Qwen3Config's head_dim defaults to 128 whatever the width; the others' to hidden_size / heads.
    c.head_dim = field_or<int>(
        j, "head_dim", type == "qwen3" && !j.contains("head_dim") ? 128 : c.hidden_size / c.num_attention_heads, who);
    c.rms_norm_eps = field_or<double>(j, "rms_norm_eps", 1e-6, who);
    c.tie_word_embeddings = field_or<bool>(j, "tie_word_embeddings", false, who);
    // transformers' defaults per architecture (config.json written by save_pretrained always has it).
    const int default_max_positions = c.architecture == Architecture::Llama ? (mistral ? 4096 * 32 : 2048) : 32768;
    c.max_position_embeddings = field_or<int>(j, "max_position_embeddings", default_max_positions, who);

    // Biases: which fields the architecture's transformers module reads (the others must not be set).
    const bool reads_attention_bias = c.architecture != Architecture::Qwen2 && !mistral;
    const bool reads_mlp_bias = c.architecture == Architecture::Llama && !mistral;
    if (reads_attention_bias)
      c.attention_bias = field_or<bool>(j, "attention_bias", false, who);
    else
      require(!field_or<bool>(j, "attention_bias", false, who),
              "DecoderConfig: attention_bias true is not supported for {} (transformers' {} has no such option)", type,
              type);
    if (reads_mlp_bias)
      c.mlp_bias = field_or<bool>(j, "mlp_bias", false, who);
    else
      require(!field_or<bool>(j, "mlp_bias", false, who),
              "DecoderConfig: mlp_bias true is not supported for {} (transformers' {} MLP has no bias)", type, type);

    // Fields that change the math and that the decoder does not implement: errors naming them.
    const std::string act = field_or<std::string>(j, "hidden_act", "silu", who);
    require(act == "silu", "DecoderConfig: hidden_act \"{}\" is not supported (the decoder's MLP is SwiGLU with silu)",
            act);
    const double attention_dropout = field_or<double>(j, "attention_dropout", 0.0, who);
    require(attention_dropout == 0.0,
            "DecoderConfig: attention_dropout {} is not supported (the decoder has no attention dropout)",
            attention_dropout);
    require(!present(j, "quantization_config"),
            "DecoderConfig: quantization_config is not supported (a pre-quantized checkpoint: {}); load the "
            "unquantized weights, vidlora quantizes them itself",
            present(j, "quantization_config") ? j["quantization_config"].dump() : std::string());
    for (const char* key :
         {"final_logit_softcapping", "attn_logit_softcapping", "logits_scaling", "embedding_multiplier",
          "residual_multiplier", "attention_multiplier", "logit_scale", "use_qk_norm"})
      require(!present(j, key) || j[key] == false, "DecoderConfig: \"{}\" ({}) is not supported by the {} decoder", key,
              present(j, key) ? j[key].dump() : std::string(), type);
    c.sliding_window = sliding_window_of(j, c, type);

    // RoPE: transformers 5 writes rope_parameters {rope_type, rope_theta, ...}; 4.x wrote rope_theta and
    // rope_scaling (rope_scaling wins over rope_parameters when both are given, as in transformers).
    c.rope_theta = field_or<double>(j, "rope_theta", 10000.0, who);
    const char* rope_key =
        present(j, "rope_scaling") ? "rope_scaling" : (present(j, "rope_parameters") ? "rope_parameters" : nullptr);
    if (present(j, "partial_rotary_factor"))
      require(field_or<double>(j, "partial_rotary_factor", 1.0, who) == 1.0,
              "DecoderConfig: partial_rotary_factor {} is not supported (RoPE on the whole head only)",
              j["partial_rotary_factor"].dump());
    if (rope_key) {
      const auto& rp = j[rope_key];
      c.rope_scaling = RopeScaling::from_json(rp, rope_key);
      if (rp.is_object() && present(rp, "rope_theta"))
        c.rope_theta = field_or<double>(rp, "rope_theta", c.rope_theta, who);
      // Phi3-style top-level original_max_position_embeddings overrides the one in the dict (transformers).
      if ((c.rope_scaling.type == RopeType::Yarn || c.rope_scaling.type == RopeType::Llama3) &&
          present(j, "original_max_position_embeddings"))
        c.rope_scaling.original_max_position_embeddings = field_or<int>(j, "original_max_position_embeddings", 0, who);
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
    require(rope_scaling.type == RopeType::Default || max_position_embeddings > 0,
            "DecoderConfig: {} RoPE needs max_position_embeddings > 0 (got {})", rope_type_name(rope_scaling.type),
            max_position_embeddings);
  }

 private:
  // transformers' config class defaults for the fields that size the decoder (LlamaConfig: LLaMA-7B; MistralConfig:
  // Mistral-7B; Qwen2Config / Qwen3Config: their own). num_key_value_heads 0: num_attention_heads.
  struct DefaultShape {
    int hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads, vocab_size;
  };
  static DefaultShape default_shape(const std::string& type) {
    if (type == "mistral") return {4096, 14336, 32, 32, 8, 32000};
    if (type == "qwen2" || type == "qwen3") return {4096, 22016, 32, 32, 0, 151936};
    return {4096, 11008, 32, 32, 0, 32000};  // llama
  }

  // The attention window of sliding-window layers (0: none). Qwen2 / Qwen3: layer_types (or
  // use_sliding_window + max_window_layers when absent); Mistral: sliding_window unless null.
  static int sliding_window_of(const nlohmann::json& j, const DecoderConfig& c, const std::string& type) {
    using detail::field_or;
    using detail::present;
    const char* who = "DecoderConfig";
    if (type == "mistral") {  // MistralConfig's default window is 4096; null turns it off
      if (!j.contains("sliding_window")) return 4096;
      return present(j, "sliding_window") ? field_or<int>(j, "sliding_window", 0, who) : 0;
    }
    if (type == "llama") {
      require(!present(j, "sliding_window"), "DecoderConfig: sliding_window {} is not a llama option",
              present(j, "sliding_window") ? j["sliding_window"].dump() : std::string());
      return 0;
    }
    bool sliding = false;
    if (present(j, "layer_types")) {
      const auto& types = j["layer_types"];
      require(types.is_array() && static_cast<int>(types.size()) == c.num_hidden_layers,
              "DecoderConfig: layer_types {} is not a list of {} layer types", types.dump(), c.num_hidden_layers);
      for (const auto& t : types) {
        require(t == "full_attention" || t == "sliding_attention",
                "DecoderConfig: layer_types entry {} is not supported (full_attention or sliding_attention)", t.dump());
        sliding = sliding || t == "sliding_attention";
      }
    } else if (field_or<bool>(j, "use_sliding_window", false, who) &&
               (present(j, "sliding_window") || !j.contains("sliding_window"))) {
      sliding = field_or<int>(j, "max_window_layers", 28, who) < c.num_hidden_layers;
    }
    if (!sliding) return 0;
    // Qwen2Config / Qwen3Config's default window is 4096 when config.json leaves it out; null is an error.
    require(present(j, "sliding_window") || !j.contains("sliding_window"),
            "DecoderConfig: layer_types has sliding_attention layers but sliding_window is null");
    const int window = field_or<int>(j, "sliding_window", 4096, who);
    require(window > 0, "DecoderConfig: sliding_window {} must be > 0", window);
    return window;
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

  int grid() const { return image_size / patch_size; }  // patches per side (24 for ViT-L/14-336)
  int num_patches() const { return grid() * grid(); }   // 576 for ViT-L/14-336
  int head_dim() const { return hidden_size / num_attention_heads; }

  // From a CLIP vision config object, a CLIPVisionModel config.json, or a LLaVA one ("vision_config").
  static ClipVisionConfig from_json(const nlohmann::json& j) {
    using detail::field;
    using detail::field_or;
    const std::string outer = field_or<std::string>(j, "model_type", "");
    if (j.contains("vision_config")) return from_json(j["vision_config"]);
    // A LLaVA config without vision_config: transformers' LLaVA default tower, CLIP ViT-L/14-336.
    require(outer != "llava_onevision",
            "ClipVisionConfig: a llava_onevision config.json without \"vision_config\" is not supported (its default "
            "tower is SigLIP)");
    if (outer == "llava" || outer == "llava_next" || outer == "llava_next_video")
      return from_json(nlohmann::json{{"model_type", "clip_vision_model"},
                                      {"hidden_size", 1024},
                                      {"intermediate_size", 4096},
                                      {"num_hidden_layers", 24},
                                      {"num_attention_heads", 16},
                                      {"image_size", 336},
                                      {"patch_size", 14}});
    const char* who = "ClipVisionConfig";
    require(j.is_object(), "ClipVisionConfig: \"vision_config\" is not an object");
    const std::string type = field_or<std::string>(j, "model_type", "clip_vision_model");
    require(type == "clip_vision_model" || type == "clip", "ClipVisionConfig: unknown vision architecture \"{}\"",
            type);
    // Fields left out take CLIPVisionConfig's defaults (ViT-B/32), as transformers fills them.
    ClipVisionConfig c;
    c.hidden_size = field_or<int>(j, "hidden_size", 768, who);
    c.intermediate_size = field_or<int>(j, "intermediate_size", 3072, who);
    c.num_hidden_layers = field_or<int>(j, "num_hidden_layers", 12, who);
    c.num_attention_heads = field_or<int>(j, "num_attention_heads", 12, who);
    c.image_size = field_or<int>(j, "image_size", 224, who);
    c.patch_size = field_or<int>(j, "patch_size", 32, who);
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

// The LLaVA glue: which vision layer(s) feed the projector, the placeholder ids, the projector kind.
struct LlavaConfig {
  DecoderConfig text;
  ClipVisionConfig vision;
  int image_token_id = -1;
  int video_token_id = -1;                     // LLaVA-NeXT-Video only
  int vision_feature_layer = -2;               // hidden_states index (negative: from the end); the first of the list
  std::vector<int> vision_feature_layers{-2};  // several: their features are concatenated (transformers' list form)
  bool drop_cls = true;                        // vision_feature_select_strategy "default" (false: "full")
  bool projector_bias = true;                  // multimodal_projector_bias
  int spatial_pool_stride = 1;                 // 2 for LLaVA-NeXT-Video (average pooling, 576 -> 144)

  // Width of the features the projector reads: the vision hidden size times the number of layers.
  int projector_in_features() const { return vision.hidden_size * static_cast<int>(vision_feature_layers.size()); }

  static LlavaConfig from_json(const nlohmann::json& j) {
    using detail::field_or;
    using detail::present;
    const char* who = "LlavaConfig";
    const std::string type = field_or<std::string>(j, "model_type", "", who);
    require(type == "llava" || type == "llava_next_video",
            "LlavaConfig: model_type \"{}\" is not supported (llava, llava_next_video)", type);
    LlavaConfig c;
    c.text = DecoderConfig::from_json(j);
    c.vision = ClipVisionConfig::from_json(j);
    // transformers' defaults: LlavaConfig's image token 32000; LlavaNextVideoConfig's image 32001 and video 32000.
    const bool next_video = type == "llava_next_video";
    c.image_token_id =
        field_or<int>(j, "image_token_id", field_or<int>(j, "image_token_index", next_video ? 32001 : 32000, who), who);
    c.video_token_id =
        field_or<int>(j, "video_token_id", field_or<int>(j, "video_token_index", next_video ? 32000 : -1, who), who);
    if (present(j, "vision_feature_layer")) {
      const auto& layer = j["vision_feature_layer"];
      if (layer.is_number_integer()) {
        c.vision_feature_layers = {layer.get<int>()};
      } else {
        require(layer.is_array() && !layer.empty() &&
                    std::all_of(layer.begin(), layer.end(), [](const auto& v) { return v.is_number_integer(); }),
                "LlavaConfig: vision_feature_layer {} is neither an integer nor a non-empty list of integers",
                layer.dump());
        c.vision_feature_layers = layer.get<std::vector<int>>();
      }
    }
    const int states = c.vision.num_hidden_layers + 1;
    for (const int l : c.vision_feature_layers)
      require(l >= -states && l < states,
              "LlavaConfig: vision_feature_layer {} is outside the {} hidden states of a {}-layer vision tower", l,
              states, c.vision.num_hidden_layers);
    c.vision_feature_layer = c.vision_feature_layers.front();
    const std::string strategy = field_or<std::string>(j, "vision_feature_select_strategy", "default", who);
    require(strategy == "default" || strategy == "full",
            "LlavaConfig: vision_feature_select_strategy \"{}\" is not supported (default, full)", strategy);
    c.drop_cls = strategy == "default";
    c.projector_bias = field_or<bool>(j, "multimodal_projector_bias", true, who);
    if (type == "llava_next_video") {
      const std::string mode = field_or<std::string>(j, "spatial_pool_mode", "average", who);
      require(mode == "average", "LlavaConfig: spatial_pool_mode \"{}\" is not supported (only average)", mode);
      c.spatial_pool_stride = field_or<int>(j, "spatial_pool_stride", 2, who);
      require(c.spatial_pool_stride > 0 && c.vision.grid() % c.spatial_pool_stride == 0,
              "LlavaConfig: spatial_pool_stride {} does not divide the {}x{} patch grid", c.spatial_pool_stride,
              c.vision.grid(), c.vision.grid());
      // transformers' LlavaNextVideoPooler runs at every stride (1 included) and views the features as a square
      // grid, which the CLS token that "full" keeps does not fit: it raises there, so it is refused here.
      require(c.drop_cls,
              "LlavaConfig: vision_feature_select_strategy \"full\" with spatial_pool_stride {} is not supported "
              "(LLaVA-NeXT-Video pools the square patch grid, without the CLS token, at every stride)",
              c.spatial_pool_stride);
    }
    const std::string act = field_or<std::string>(j, "projector_hidden_act", "gelu", who);
    require(act == "gelu", "LlavaConfig: projector_hidden_act \"{}\" is not supported (Mlp2xGelu uses exact gelu)",
            act);
    return c;
  }
  static LlavaConfig from_file(const std::filesystem::path& config_json) {
    return from_json(detail::read_json_file(config_json));
  }
};

}  // namespace vidlora::model

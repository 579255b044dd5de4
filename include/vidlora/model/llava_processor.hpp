#pragma once
// LlavaProcessor: the text and pixel side of a LLaVA / LLaVA-NeXT-Video save_pretrained directory, as
// transformers' LlavaNextVideoProcessor (or LlavaProcessor) prepares a model's inputs:
//   frames ──video_preprocessor_config.json (else preprocessor_config.json): resize (bicubic), center crop,
//            rescale, normalise──▶ pixel values [frames, 3, H, W]
//   question ──the chat template (LLaVA-NeXT-Video's "USER: <video>\n… ASSISTANT:" or Qwen's ChatML)──▶ prompt
//            ──tokenizer.json / tokenizer.model──▶ ids, the one <video> placeholder expanded to
//            frames × tokens per frame (the processor's count: (H / patch / 2) · (W / patch / 2) for videos).
// Every preprocessing field that changes the result and is not supported is an error naming it and the file.

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include <vidlora/core/error.hpp>
#include <vidlora/model/config.hpp>
#include <vidlora/model/jinja_template.hpp>
#include <vidlora/model/tokenizer_chat_template.hpp>
#include <vidlora/model/tokenizer_loader.hpp>
#include <vidlora/video/clip_preprocess.hpp>

namespace vidlora::model {

// LLaVA-NeXT-Video's chat template as the llava-hf processors ship it (no system turn):
// "USER: <video>\n<question> ASSISTANT:", the answer after a space, ended by </s>.
inline constexpr ChatTemplate kLlavaNextVideoTemplate{
    .name = "llava_next_video",
    .format = "USER: {video}\n{user} ASSISTANT:",
    .default_system = "",
    .video_placeholder = "<video>",
    .response_prefix = " ",
    .response_suffix = "</s>",
};

// ChatML as LLaVA processors with a Qwen2/Qwen3 decoder render it (the template of transformers' LLaVA fixtures with
// the default Qwen system turn): the video placeholder and a newline open the user turn.
inline constexpr ChatTemplate kLlavaQwenChatMlTemplate{
    .name = "llava_qwen_chatml",
    .format =
        "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{video}\n{user}<|im_end|>\n"
        "<|im_start|>assistant\n",
    .default_system = "You are a helpful assistant.",
    .video_placeholder = "<video>",
    .response_prefix = "",
    .response_suffix = "<|im_end|>",
};

namespace detail {

inline nlohmann::json read_processor_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  require(in.good(), "cannot open {}", path.string());
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    fail("{} does not parse as JSON: {}", path.string(), e.what());
  }
}

// A "chat_template" field: a string, or named templates ({name: template}, or in tokenizer_config.json a list of
// {"name", "template"}) of which transformers takes "default".
inline std::string chat_template_text(const nlohmann::json& field, const std::filesystem::path& file) {
  const bool list_allowed = file.filename() == "tokenizer_config.json";
  if (field.is_string()) return field.get<std::string>();
  if (field.is_object()) {  // {name: template}, as a processor holds several
    require(field.contains("default") && field["default"].is_string(),
            "{}: \"chat_template\" names no template \"default\" (the one transformers uses)", file.string());
    return field["default"].get<std::string>();
  }
  require(field.is_array() && list_allowed,
          "{}: \"chat_template\" is neither a string nor named templates ({{name: template}}; a list of {{\"name\", "
          "\"template\"}} only in tokenizer_config.json, as transformers reads them)",
          file.string());
  for (const auto& entry : field) {
    require(entry.is_object() && entry.contains("name") && entry["name"].is_string() && entry.contains("template") &&
                entry["template"].is_string(),
            "{}: \"chat_template\" entry {} is not {{\"name\": …, \"template\": …}}", file.string(), entry.dump());
    if (entry["name"] == "default") return entry["template"].get<std::string>();
  }
  fail("{}: \"chat_template\" lists no template named \"default\" (the one transformers uses)", file.string());
}

// The variables transformers passes a chat template beside the messages: the tokenizer's special_tokens_map, the
// tokens tokenizer_config.json names by key (bos_token, eos_token, …, other "*_token" fields and an
// "extra_special_tokens" object's entries: detail::config_special_tokens). A template that reads one of the standard
// seven the directory does not name is an error naming it: transformers could fill it from the tokenizer class's
// defaults, vidlora would print nothing.
inline std::vector<std::pair<std::string, std::string>> template_special_tokens(const std::filesystem::path& dir,
                                                                                std::string_view template_text,
                                                                                const std::filesystem::path& from) {
  const auto path = dir / "tokenizer_config.json";
  nlohmann::json config;
  if (std::filesystem::is_regular_file(path)) config = read_processor_json(path);
  auto named = config_special_tokens(&config, path.string()).by_key;
  for (const char* key : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"})
    require(template_text.find(key) == std::string_view::npos ||
                std::any_of(named.begin(), named.end(), [&](const auto& e) { return e.first == key; }),
            "{}: the chat template reads {}, which tokenizer_config.json does not name", from.string(), key);
  return named;
}

// size / crop_size: {"shortest_edge": n}, {"height": h, "width": w} or a plain n.
struct SizeField {
  int shortest_edge = 0, height = 0, width = 0;
};
inline SizeField size_field(const nlohmann::json& j, const char* key, const std::string& file) {
  const auto& v = j[key];
  SizeField s;
  if (v.is_number_integer()) {
    s.height = s.width = v.get<int>();
    return s;
  }
  require(v.is_object(), "{}: \"{}\" is {}, expected an object or an integer", file, key, v.dump());
  for (const auto& [name, value] : v.items()) {
    require(value.is_number_integer() || value.is_null(), "{}: \"{}.{}\" is {}, expected an integer", file, key, name,
            value.dump());
    if (value.is_null()) continue;
    const int n = value.get<int>();
    if (name == "shortest_edge")
      s.shortest_edge = n;
    else if (name == "height")
      s.height = n;
    else if (name == "width")
      s.width = n;
    else
      fail("{}: \"{}.{}\" is not supported (vidlora reads shortest_edge, or height and width)", file, key, name);
  }
  require((s.shortest_edge > 0) != (s.height > 0 && s.width > 0),
          "{}: \"{}\" {} must give shortest_edge, or height and width", file, key, v.dump());
  return s;
}

inline std::array<float, 3> channel_triple(const nlohmann::json& j, const char* key, const std::string& file) {
  const auto& v = j[key];
  if (v.is_number()) return {v.get<float>(), v.get<float>(), v.get<float>()};
  require(v.is_array() && v.size() == 3 && v[0].is_number() && v[1].is_number() && v[2].is_number(),
          "{}: \"{}\" is {}, expected three numbers (R, G, B)", file, key, v.dump());
  return {v[0].get<float>(), v[1].get<float>(), v[2].get<float>()};
}

}  // namespace detail

// The frame preprocessing of a HF image/video processor config (the fields transformers applies to a
// video's frames). Throws, naming the field and the file, for anything that changes the pixels and is not
// reproduced: another resampling filter, size.longest_edge, padding, frame sampling by the processor.
// `file` names where the object came from in errors (a file, or "processor_config.json (video_processor)").
inline video::ClipPreprocessOptions frame_preprocessing_from_json(const nlohmann::json& j, const std::string& file) {
  using detail::present;
  require(j.is_object(), "{}: expected a JSON object", file);
  // Fields that do not change a video frame's pixel values (bookkeeping, output format, image-only anyres).
  static const std::set<std::string> inert{"image_processor_type",
                                           "video_processor_type",
                                           "feature_extractor_type",
                                           "processor_class",
                                           "_processor_class",
                                           "return_tensors",
                                           "device",
                                           "input_data_format",
                                           "do_convert_rgb",
                                           "default_to_square",
                                           "return_metadata",
                                           "video_metadata",
                                           "image_grid_pinpoints",
                                           "aspect_ratio_setting",
                                           "model_input_names",
                                           "image_seq_length",
                                           "num_frames",
                                           "fps",
                                           "disable_grouping",
                                           "auto_map"};
  static const std::set<std::string> types{"CLIPImageProcessor",           "CLIPImageProcessorFast",
                                           "LlavaNextImageProcessor",      "LlavaNextImageProcessorFast",
                                           "LlavaNextVideoImageProcessor", "LlavaNextVideoVideoProcessor",
                                           "LlavaNextVideoProcessor",      "LlavaProcessor"};
  video::ClipPreprocessOptions o;
  for (const auto& [key, value] : j.items()) {
    if (value.is_null()) continue;
    if (key == "image_processor_type" || key == "video_processor_type" || key == "feature_extractor_type") {
      require(value.is_string() && types.count(value.get<std::string>()) > 0,
              "{}: {} {} is not supported (CLIP / LLaVA-NeXT(-Video) image and video processors)", file, key,
              value.dump());
      // torchvision-based processors (video processors, "Fast" image processors) resize with torch's uint8 kernel.
      const std::string type = value.get<std::string>();
      if (type.ends_with("Fast") || type.ends_with("VideoProcessor"))
        o.resize_arithmetic = video::ResizeArithmetic::TorchUint8;
    } else if (key == "do_resize") {
      o.do_resize = value.get<bool>();
    } else if (key == "size") {
      const auto s = detail::size_field(j, "size", file);
      o.shortest_edge = s.shortest_edge;
      o.resize_height = s.shortest_edge > 0 ? 0 : s.height;
      o.resize_width = s.shortest_edge > 0 ? 0 : s.width;
    } else if (key == "resample") {
      require(value.is_number_integer() && value.get<int>() == 3,
              "{}: resample {} is not supported (only 3, PIL's BICUBIC, which CLIP and LLaVA use)", file, value.dump());
    } else if (key == "do_center_crop") {
      o.do_center_crop = value.get<bool>();
    } else if (key == "crop_size") {
      const auto s = detail::size_field(j, "crop_size", file);
      require(s.shortest_edge == 0, "{}: crop_size needs height and width, got {}", file, value.dump());
      o.crop_height = s.height;
      o.crop_width = s.width;
    } else if (key == "do_rescale") {
      o.do_rescale = value.get<bool>();
    } else if (key == "rescale_factor") {
      o.rescale_factor = value.get<double>();
    } else if (key == "do_normalize") {
      o.do_normalize = value.get<bool>();
    } else if (key == "image_mean") {
      o.mean = detail::channel_triple(j, "image_mean", file);
    } else if (key == "image_std") {
      o.std = detail::channel_triple(j, "image_std", file);
    } else if (key == "do_pad") {
      require(!value.get<bool>(), "{}: do_pad true is not supported for video frames", file);
    } else if (key == "do_sample_frames") {
      require(!value.get<bool>(),
              "{}: do_sample_frames true is not supported: vidlora's sampler (--sampler, --frames) chooses the frames",
              file);
    } else if (key == "data_format") {
      require(value == "channels_first", "{}: data_format {} is not supported (channels_first)", file, value.dump());
    } else if (inert.count(key) == 0) {
      fail("{}: field \"{}\" is not supported (vidlora reproduces resize, center crop, rescale and normalise)", file,
           key);
    }
  }
  require(!o.do_normalize || (o.std[0] != 0 && o.std[1] != 0 && o.std[2] != 0), "{}: image_std has a zero", file);
  return o;
}

class LlavaProcessor {
 public:
  // dir: a save_pretrained directory with config.json, the tokenizer, and the processor files.
  explicit LlavaProcessor(const std::filesystem::path& dir)
      : LlavaProcessor(dir, LlavaConfig::from_file(dir / "config.json")) {}

  LlavaProcessor(const std::filesystem::path& dir, const LlavaConfig& config)
      : tokenizer_(load_tokenizer(dir)), video_(config.video_token_id >= 0) {
    read_frame_preprocessing(dir);
    read_processor_config(dir, config);
    const std::string placeholder = video_ ? video_token_ : image_token_;
    const auto id = std::visit([&](const auto& t) { return t.token_to_id(placeholder); }, tokenizer_);
    require(id.has_value(), "LlavaProcessor: '{}': the tokenizer has no {} token", dir.string(), placeholder);
    placeholder_id_ = *id;
    const int want = video_ ? config.video_token_id : config.image_token_id;
    require(placeholder_id_ == want,
            "LlavaProcessor: '{}': the tokenizer's {} is id {} but config.json says {} (video_token_index / "
            "image_token_index)",
            dir.string(), placeholder, placeholder_id_, want);
    chat_ = read_chat_template(dir);
    // The processor's visual token count per frame must be what the model produces.
    const auto [h, w] = clip_output_size(config.vision.image_size, config.vision.image_size, frames_);
    require(h == config.vision.image_size && w == config.vision.image_size,
            "LlavaProcessor: '{}': the processor makes {}x{} frames but the vision tower takes {}x{} ({})",
            dir.string(), w, h, config.vision.image_size, config.vision.image_size, frames_source_);
    if (video_) {
      tokens_per_frame_ = (h / patch_size_ / 2) * (w / patch_size_ / 2);  // LlavaNextVideoProcessor: pooled by 2
    } else {
      tokens_per_frame_ = (h / patch_size_) * (w / patch_size_) + num_additional_image_tokens_;
      if (config.drop_cls) tokens_per_frame_ -= 1;
    }
    const int grid = config.vision.grid() / std::max(1, config.spatial_pool_stride);
    const int model_tokens = grid * grid + (config.drop_cls || config.spatial_pool_stride > 1 ? 0 : 1);
    require(tokens_per_frame_ == model_tokens,
            "LlavaProcessor: '{}': the processor counts {} visual tokens per frame but the model makes {} "
            "(patch_size {}, spatial_pool_stride {})",
            dir.string(), tokens_per_frame_, model_tokens, patch_size_, config.spatial_pool_stride);
  }

  const AnyTokenizer& tokenizer() const { return tokenizer_; }
  const ChatTemplate& chat_template() const { return chat_; }
  const video::ClipPreprocessOptions& frame_preprocessing() const { return frames_; }
  // The file the frame preprocessing came from, and that file with the object's key when it was nested.
  const std::filesystem::path& frame_preprocessing_file() const { return frames_file_; }
  const std::string& frame_preprocessing_source() const { return frames_source_; }
  int placeholder_id() const { return placeholder_id_; }
  int tokens_per_frame() const { return tokens_per_frame_; }

  // Pixel values [frames, 3, H, W] of RGB frames, as the processor's pixel_values_videos.
  video::ClipTensor preprocess(const std::vector<video::RgbImage>& frames) const {
    return video::clip_preprocess(frames, frames_);
  }

  // The prompt text of one question ("USER: <video>\n<question> ASSISTANT:"): the directory's chat template run over
  // one user turn (the video, then the question) with add_generation_prompt, else the fixed format.
  std::string prompt(std::string_view question) const {
    if (template_) return render_template(question, std::nullopt);
    std::string text = render_prompt(chat_, question);
    const std::size_t at = text.find(kSentinel);  // the template's {video}, replaced by the processor's token
    return text.replace(at, kSentinel.size(), video_ ? video_token_ : image_token_);
  }

  // The prompt's ids with one placeholder token (what LlavaModel::splice and the trainer take).
  // A prompt that begins with the BOS token's text gets no other special tokens (no second BOS), as
  // apply_chat_template(tokenize=True).
  std::vector<int> prompt_ids(std::string_view question) const {
    const std::string text = prompt(question);
    return std::visit(
        [&](const auto& t) {
          if (template_) {  // transformers compares tokenizer.bos_token: tokenizer_config.json's, else the model's
            const auto named = std::find_if(template_tokens_.begin(), template_tokens_.end(),
                                            [](const auto& e) { return e.first == "bos_token"; });
            const auto bos = t.bos_id();
            const std::string bos_text = named != template_tokens_.end() ? named->second
                                         : bos                           ? std::string(t.id_to_token(*bos))
                                                                         : std::string();
            if (!bos_text.empty() && text.starts_with(bos_text)) return t.encode(text, EncodeOptions{false, false});
          }
          return t.encode(text);
        },
        tokenizer_);
  }

  // input_ids as the HF processor gives them: the placeholder repeated frames × tokens_per_frame() times.
  std::vector<int> input_ids(std::string_view question, int frames) const {
    require(frames > 0, "LlavaProcessor::input_ids: {} frames", frames);
    const std::vector<int> ids = prompt_ids(question);
    std::vector<int> out;
    for (const int id : ids) {
      if (id != placeholder_id_) {
        out.push_back(id);
        continue;
      }
      out.insert(out.end(), static_cast<std::size_t>(frames) * tokens_per_frame_, id);
    }
    return out;
  }

  // Ids of an answer as the model learns it (response prefix + text, without the end-of-turn suffix).
  std::vector<int> answer_ids(std::string_view text) const {
    std::string s(chat_.response_prefix);
    s.append(text);
    return std::visit([&](const auto& t) { return t.encode(s, EncodeOptions{false, false}); }, tokenizer_);
  }

  std::string decode(std::span<const int> ids) const {
    return std::visit([&](const auto& t) { return t.decode(ids, true); }, tokenizer_);
  }

 private:
  // The first of: video_preprocessor_config.json, processor_config.json's "video_processor" (what
  // transformers 5 writes), preprocessor_config.json, processor_config.json's "image_processor"; the video
  // ones only for a video model.
  void read_frame_preprocessing(const std::filesystem::path& dir) {
    const auto processor_config = dir / "processor_config.json";
    nlohmann::json nested;
    if (std::filesystem::is_regular_file(processor_config)) nested = detail::read_processor_json(processor_config);
    const auto use = [&](const nlohmann::json& j, const std::filesystem::path& file, const std::string& source) {
      frames_file_ = file;
      frames_source_ = source;
      frames_ = frame_preprocessing_from_json(j, source);
      // transformers 5 prepares videos with its torchvision-based video processor, whichever file configures it.
      if (video_) frames_.resize_arithmetic = video::ResizeArithmetic::TorchUint8;
    };
    const auto sub = [&](const char* key) {
      return nested.is_object() && nested.contains(key) && nested[key].is_object();
    };
    if (video_ && std::filesystem::is_regular_file(dir / "video_preprocessor_config.json")) {
      use(detail::read_processor_json(dir / "video_preprocessor_config.json"), dir / "video_preprocessor_config.json",
          (dir / "video_preprocessor_config.json").string());
    } else if (video_ && sub("video_processor")) {
      use(nested["video_processor"], processor_config, processor_config.string() + " (video_processor)");
    } else if (std::filesystem::is_regular_file(dir / "preprocessor_config.json")) {
      use(detail::read_processor_json(dir / "preprocessor_config.json"), dir / "preprocessor_config.json",
          (dir / "preprocessor_config.json").string());
    } else if (sub("image_processor")) {
      use(nested["image_processor"], processor_config, processor_config.string() + " (image_processor)");
    } else {
      fail(
          "LlavaProcessor: '{}' has no {}preprocessor_config.json, and no processor_config.json with {} (the "
          "processor's frame preprocessing; save the processor with the model)",
          dir.string(), video_ ? "video_preprocessor_config.json or " : "",
          video_ ? "\"video_processor\" or \"image_processor\"" : "\"image_processor\"");
    }
  }

  // processor_config.json: patch_size, num_additional_image_tokens, the placeholder strings.
  void read_processor_config(const std::filesystem::path& dir, const LlavaConfig& config) {
    patch_size_ = config.vision.patch_size;
    const auto path = dir / "processor_config.json";
    if (!std::filesystem::is_regular_file(path)) return;
    const auto j = detail::read_processor_json(path);
    static const std::set<std::string> inert{"processor_class", "chat_template",   "vision_feature_select_strategy",
                                             "image_processor", "video_processor", "auto_map"};
    for (const auto& [key, value] : j.items()) {
      if (value.is_null()) continue;
      if (key == "patch_size")
        patch_size_ = value.get<int>();
      else if (key == "num_additional_image_tokens")
        num_additional_image_tokens_ = value.get<int>();
      else if (key == "video_token")
        video_token_ = value.get<std::string>();
      else if (key == "image_token")
        image_token_ = value.get<std::string>();
      else if (inert.count(key) == 0)
        fail("{}: field \"{}\" is not supported (patch_size, num_additional_image_tokens, video_token, image_token)",
             path.string(), key);
    }
    require(patch_size_ > 0, "{}: patch_size {} must be positive", path.string(), patch_size_);
    if (j.contains("vision_feature_select_strategy") && j["vision_feature_select_strategy"].is_string())
      require(j["vision_feature_select_strategy"] == (config.drop_cls ? "default" : "full"),
              "{}: vision_feature_select_strategy {} disagrees with config.json's", path.string(),
              j["vision_feature_select_strategy"].dump());
  }

  // The chat template, found as transformers' processors find theirs: processor_config.json's "chat_template", else
  // the legacy chat_template.json's, else chat_template.jinja, else additional_chat_templates/default.jinja (named
  // templates there beside chat_template.json, or none of them the default, are errors, as there; a chat_template.json
  // without the field is one even when processor_config.json has a template). Where the processor has none,
  // transformers' processor.apply_chat_template raises; vidlora renders the tokenizer's (tokenizer_config.json, what
  // tokenizer.apply_chat_template would), else the tokenizer kind's fixed format. The template is run
  // (jinja::Template) for every prompt; here it is parsed and rendered once with stand-ins, to fail early on what the
  // processor cannot use and to name the format.
  ChatTemplate read_chat_template(const std::filesystem::path& dir) {
    std::string text;
    std::filesystem::path from;
    const auto field = [&](const std::filesystem::path& file) -> bool {
      if (!std::filesystem::is_regular_file(file)) return false;
      const auto j = detail::read_processor_json(file);
      if (!j.is_object() || !j.contains("chat_template") || j["chat_template"].is_null()) return false;
      text = detail::chat_template_text(j["chat_template"], file);
      from = file;
      return true;
    };
    const auto read_file = [&](const std::filesystem::path& file) {
      std::ifstream in(file);
      text.assign(std::istreambuf_iterator<char>(in), {});
      from = file;
    };
    const auto named_dir = dir / "additional_chat_templates";
    bool named = false;
    if (std::filesystem::is_directory(named_dir))
      for (const auto& e : std::filesystem::directory_iterator(named_dir))
        named = named || (e.path().extension() == ".jinja" && e.is_regular_file());
    const auto legacy = dir / "chat_template.json";
    const bool has_legacy = std::filesystem::is_regular_file(legacy);
    require(!named || !has_legacy,
            "{}: chat_template.json beside named templates in additional_chat_templates/ (transformers refuses the "
            "combination: replace chat_template.json with chat_template.jinja)",
            dir.string());
    if (has_legacy) {  // read whenever present, as transformers does
      const auto j = detail::read_processor_json(legacy);
      require(j.is_object() && j.contains("chat_template"), "{}: no \"chat_template\"", legacy.string());
    }
    if (!field(dir / "processor_config.json")) {
      if (has_legacy) {
        field(legacy);  // the .jinja files are not read beside it
      } else if (std::filesystem::is_regular_file(dir / "chat_template.jinja")) {
        read_file(dir / "chat_template.jinja");
      } else if (std::filesystem::is_regular_file(named_dir / "default.jinja")) {
        read_file(named_dir / "default.jinja");
      } else {
        require(!named,
                "{}: additional_chat_templates/ holds named chat templates but none is the default (no "
                "chat_template.jinja, no default.jinja), which transformers needs",
                dir.string());
      }
      if (from.empty()) field(dir / "tokenizer_config.json");
    }
    ChatTemplate chat =
        std::holds_alternative<ByteLevelBpeTokenizer>(tokenizer_) ? kLlavaQwenChatMlTemplate : kLlavaNextVideoTemplate;
    chat.video_placeholder = kSentinel;
    if (from.empty()) return chat;
    try {
      template_ = jinja::Template::parse(text);
    } catch (const Error& e) {
      fail("{}: {}", from.string(), e.what());
    }
    template_file_ = from;
    template_tokens_ = detail::template_special_tokens(dir, text, from);

    // Stand-ins for the question and the answer: what the template prints around them is the format.
    constexpr std::string_view question = "VIDLORA_QUESTION", answer = "VIDLORA_ANSWER";
    const std::string prompt = render_template(question, std::nullopt);
    const std::string conversation = render_template(question, answer);
    const std::string& placeholder = video_ ? video_token_ : image_token_;
    const auto count = [](std::string_view haystack, std::string_view needle) {
      std::size_t n = 0;
      for (std::size_t at = haystack.find(needle); at != std::string_view::npos; at = haystack.find(needle, at + 1))
        ++n;
      return n;
    };
    require(count(prompt, placeholder) == 1,
            "{}: the chat template prints the {} placeholder '{}' {} times for one {} (the prompt: \"{}\"); it must "
            "print it once",
            from.string(), video_ ? "video" : "image", placeholder, count(prompt, placeholder),
            video_ ? "video" : "image", prompt);
    require(count(prompt, question) == 1, "{}: the chat template prints the question {} times (the prompt: \"{}\")",
            from.string(), count(prompt, question), prompt);
    // The answer follows the generation prompt, after what the template prints between them when its conversation
    // begins with that prompt; else directly (a template writing "<|im_start|>assistant \n" before an answer but
    // "<|im_start|>assistant\n" as the generation prompt: the model learns what it is given at inference).
    const std::size_t at = conversation.find(answer);
    require(at != std::string::npos, "{}: the chat template does not print the assistant's answer (\"{}\")",
            from.string(), conversation);
    if (conversation.starts_with(prompt) && at >= prompt.size())
      chat.response_prefix = intern(conversation.substr(prompt.size(), at - prompt.size()));
    else
      chat.response_prefix = "";

    // The name: the kind's when the template renders exactly its format, else the file's.
    std::string format = prompt;
    format.replace(format.find(placeholder), placeholder.size(), "{video}");
    format.replace(format.find(question), question.size(), "{user}");
    ChatTemplate fixed = chat;
    fixed.video_placeholder = placeholder;
    const bool known =
        render_prompt(fixed, question) == prompt &&
        chat.response_prefix == (std::holds_alternative<ByteLevelBpeTokenizer>(tokenizer_) ? kLlavaQwenChatMlTemplate
                                                                                           : kLlavaNextVideoTemplate)
                                    .response_prefix;
    if (!known) {
      chat.name = intern(from.filename().string());
      chat.format = intern(format);  // for reading only: prompt() runs the template
      chat.default_system = "";
    }
    return chat;
  }

  // The directory's template over one user turn (the video or image, then the question) and, with `answer`, the
  // assistant's reply, as transformers' apply_chat_template renders it: tools and documents None, the tokenizer's
  // named special tokens, add_generation_prompt without an answer.
  std::string render_template(std::string_view question, std::optional<std::string_view> answer) const {
    jinja::Array messages{
        jinja::Value{{"role", "user"},
                     {"content", jinja::Array{jinja::Value{{"type", video_ ? "video" : "image"}},
                                              jinja::Value{{"type", "text"}, {"text", std::string(question)}}}}}};
    if (answer)
      messages.push_back(
          jinja::Value{{"role", "assistant"},
                       {"content", jinja::Array{jinja::Value{{"type", "text"}, {"text", std::string(*answer)}}}}});
    jinja::Object context{{jinja::Value("messages"), jinja::Value(std::move(messages))},
                          {jinja::Value("tools"), jinja::Value(nullptr)},
                          {jinja::Value("documents"), jinja::Value(nullptr)},
                          {jinja::Value("add_generation_prompt"), jinja::Value(!answer.has_value())}};
    for (const auto& [name, token] : template_tokens_) context.emplace_back(jinja::Value(name), jinja::Value(token));
    try {
      return template_->render(jinja::Value::dict(std::move(context)));
    } catch (const Error& e) {
      fail("{}: {}", template_file_.string(), e.what());
    }
  }

  static constexpr std::string_view kSentinel = "\x01";

  // A string that lives as long as the program (ChatTemplate holds views; the processor may be moved).
  static std::string_view intern(const std::string& s) {
    static std::mutex mutex;
    static std::set<std::string> strings;
    std::lock_guard lock(mutex);
    return *strings.insert(s).first;
  }

  AnyTokenizer tokenizer_;
  bool video_ = true;
  video::ClipPreprocessOptions frames_{};
  std::filesystem::path frames_file_;
  std::string frames_source_;
  ChatTemplate chat_{};
  std::optional<jinja::Template> template_;  // the directory's chat template, run for every prompt
  std::filesystem::path template_file_;
  std::vector<std::pair<std::string, std::string>> template_tokens_;  // bos_token, eos_token, ... it names
  std::string video_token_ = "<video>", image_token_ = "<image>";
  int patch_size_ = 14;
  int num_additional_image_tokens_ = 0;
  int placeholder_id_ = -1;
  int tokens_per_frame_ = 0;
};

}  // namespace vidlora::model

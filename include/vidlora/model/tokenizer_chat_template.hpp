#pragma once
// Fixed prompt formats as plain strings: Vicuna v1 as LLaVA / LLaVA-NeXT-Video prompt it, and Qwen's ChatML with the
// Qwen2-VL video block; render_prompt fills {system}, {video} and {user}. (A checkpoint directory's own Jinja chat
// template is run by jinja::Template, model/jinja_template.hpp.)

#include <vidlora/core/error.hpp>

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace vidlora::model {

// One prompt format. `format` holds the placeholders {system}, {video} (required: where the frame tokens
// go) and {user}; the response is appended as response_prefix + text + response_suffix.
struct ChatTemplate {
  std::string_view name;
  std::string_view format;
  std::string_view default_system;
  std::string_view video_placeholder;  // what {video} expands to; its (last) token is replaced by frame tokens
  std::string_view response_prefix;
  std::string_view response_suffix;  // ends the assistant turn (the EOS the model learns to emit)
};

// LLaVA's conv_vicuna_v1 with the video token (LLaVA-NeXT-Video): "<system> USER: <video>\n<q> ASSISTANT: <a></s>".
inline constexpr ChatTemplate kVicunaVideoTemplate{
    .name = "vicuna_v1",
    .format = "{system} USER: {video}\n{user} ASSISTANT:",
    .default_system =
        "A chat between a curious human and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    .video_placeholder = "<video>",
    .response_prefix = " ",
    .response_suffix = "</s>",
};

// Qwen ChatML with Qwen2-VL's video block.
inline constexpr ChatTemplate kQwenChatMlVideoTemplate{
    .name = "qwen_chatml",
    .format =
        "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{video}{user}<|im_end|>\n<|im_start|>assistant\n",
    .default_system = "You are a helpful assistant.",
    .video_placeholder = "<|vision_start|><|video_pad|><|vision_end|>",
    .response_prefix = "",
    .response_suffix = "<|im_end|>\n",
};

// The prompt text for one user turn (the assistant's answer goes after it). Throws when the format has
// no {video} or {user}, or names an unknown placeholder.
inline std::string render_prompt(const ChatTemplate& chat, std::string_view user,
                                 std::optional<std::string_view> system = std::nullopt) {
  std::string out;
  bool saw_video = false, saw_user = false;
  const std::string_view f = chat.format;
  for (std::size_t pos = 0; pos < f.size();) {
    const std::size_t open = f.find('{', pos);
    if (open == std::string_view::npos) {
      out.append(f.substr(pos));
      break;
    }
    out.append(f.substr(pos, open - pos));
    const std::size_t close = f.find('}', open);
    require(close != std::string_view::npos, "chat template '{}': unclosed '{{' at offset {}", chat.name, open);
    const std::string_view field = f.substr(open + 1, close - open - 1);
    if (field == "system") {
      out.append(system.value_or(chat.default_system));
    } else if (field == "video") {
      out.append(chat.video_placeholder);
      saw_video = true;
    } else if (field == "user") {
      out.append(user);
      saw_user = true;
    } else {
      fail("chat template '{}': unknown placeholder '{{{}}}' (expected {{system}}, {{video}}, {{user}})", chat.name,
           field);
    }
    pos = close + 1;
  }
  require(saw_video && !chat.video_placeholder.empty(),
          "chat template '{}': the prompt has no video placeholder {{video}}", chat.name);
  require(saw_user, "chat template '{}': the prompt has no {{user}} placeholder", chat.name);
  return out;
}

// The assistant's answer as the model should learn it: prefix + response + end-of-turn suffix.
inline std::string render_response(const ChatTemplate& chat, std::string_view response) {
  std::string out(chat.response_prefix);
  out.append(response);
  out.append(chat.response_suffix);
  return out;
}

// Positions of `placeholder_id` in a tokenised prompt; throws when there is none (a prompt without
// the video placeholder cannot take the frame tokens).
inline std::vector<std::size_t> video_placeholder_positions(std::span<const int> ids, int placeholder_id) {
  std::vector<std::size_t> positions;
  for (std::size_t i = 0; i < ids.size(); ++i)
    if (ids[i] == placeholder_id) positions.push_back(i);
  require(!positions.empty(), "prompt of {} tokens has no video placeholder token (id {})", ids.size(), placeholder_id);
  return positions;
}

}  // namespace vidlora::model

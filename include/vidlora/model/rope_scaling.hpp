#pragma once
// RoPE frequency scaling as transformers 5 defines it (config.json "rope_parameters", or the older
// "rope_scaling"): default, linear, dynamic (NTK), yarn and llama3. Each type gives the inverse
// frequencies of the head_dim/2 rotation pairs and a factor applied to cos and sin ("attention
// scaling"; yarn's mscale, 1 for the others). The float32 steps follow transformers' rope init
// functions operation by operation, so the tables agree with theirs to the last bit or one ulp.
// Dynamic NTK depends on the sequence length of the forward that runs (model::RopeFrequencyState tracks it).

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/model/elementwise.hpp>
#include <vidlora/model/rope_frequencies.hpp>

namespace vidlora::model {

enum class RopeType { Default, Linear, Dynamic, Yarn, Llama3 };

constexpr std::string_view rope_type_name(RopeType t) {
  switch (t) {
    case RopeType::Default: return "default";
    case RopeType::Linear: return "linear";
    case RopeType::Dynamic: return "dynamic";
    case RopeType::Yarn: return "yarn";
    case RopeType::Llama3: return "llama3";
  }
  return "?";
}

// The rope_parameters a type reads (unused fields keep their defaults).
struct RopeScaling {
  RopeType type = RopeType::Default;
  double factor = 1.0;                       // linear, dynamic, yarn, llama3
  int original_max_position_embeddings = 0;  // yarn, llama3 (0: max_position_embeddings, as transformers defaults it)
  double low_freq_factor = 1.0;              // llama3
  double high_freq_factor = 4.0;             // llama3
  std::optional<double> attention_factor;    // yarn: explicit cos/sin factor
  std::optional<double> mscale, mscale_all_dim;  // yarn: attention_factor from these when it is absent
  double beta_fast = 32.0, beta_slow = 1.0;      // yarn
  bool truncate = true;                          // yarn: floor/ceil the correction range

  // From a rope_parameters / rope_scaling object (`key` names it in errors). Unknown types and a
  // partial_rotary_factor other than 1 are errors naming the field and the value.
  static RopeScaling from_json(const nlohmann::json& rp, std::string_view key) {
    require(rp.is_object(), "DecoderConfig: \"{}\" is {}, expected an object", key, rp.dump());
    const auto number = [&](const char* name) -> std::optional<double> {
      if (!rp.contains(name) || rp[name].is_null()) return std::nullopt;
      require(rp[name].is_number(), "DecoderConfig: {}.{} is {}, expected a number", key, name, rp[name].dump());
      return rp[name].get<double>();
    };
    std::string type = "default";
    for (const char* name : {"rope_type", "type"})
      if (rp.contains(name) && !rp[name].is_null()) {
        require(rp[name].is_string(), "DecoderConfig: {}.{} is {}, expected a string", key, name, rp[name].dump());
        type = rp[name].get<std::string>();
        break;
      }
    RopeScaling s;
    if (type == "default")
      s.type = RopeType::Default;
    else if (type == "linear")
      s.type = RopeType::Linear;
    else if (type == "dynamic")
      s.type = RopeType::Dynamic;
    else if (type == "yarn")
      s.type = RopeType::Yarn;
    else if (type == "llama3")
      s.type = RopeType::Llama3;
    else
      fail("DecoderConfig: {}.rope_type \"{}\" is not supported (supported: default, linear, dynamic, yarn, llama3)",
           key, type);
    if (const auto p = number("partial_rotary_factor"))
      require(*p == 1.0, "DecoderConfig: {}.partial_rotary_factor {} is not supported (RoPE on the whole head only)",
              key, *p);
    const auto required = [&](const char* name) {
      const auto v = number(name);
      require(v.has_value(), "DecoderConfig: {} of rope_type \"{}\" has no \"{}\"", key, type, name);
      return *v;
    };
    if (s.type != RopeType::Default) {
      s.factor = required("factor");
      require(s.factor >= 1.0, "DecoderConfig: {}.factor {} must be >= 1", key, s.factor);
    }
    if (s.type == RopeType::Yarn || s.type == RopeType::Llama3)
      if (const auto o = number("original_max_position_embeddings"))
        s.original_max_position_embeddings = static_cast<int>(*o);
    if (s.type == RopeType::Llama3) {
      s.low_freq_factor = required("low_freq_factor");
      s.high_freq_factor = required("high_freq_factor");
      require(s.high_freq_factor > s.low_freq_factor,
              "DecoderConfig: {}: high_freq_factor {} must exceed low_freq_factor {}", key, s.high_freq_factor,
              s.low_freq_factor);
      require(s.original_max_position_embeddings > 0 || !rp.contains("original_max_position_embeddings"),
              "DecoderConfig: {}.original_max_position_embeddings must be > 0", key);
    }
    if (s.type == RopeType::Yarn) {
      s.attention_factor = number("attention_factor");
      s.mscale = number("mscale");
      s.mscale_all_dim = number("mscale_all_dim");
      // transformers: `beta_fast or 32`, `beta_slow or 1` (a 0 also takes the default).
      if (const auto b = number("beta_fast"); b && *b != 0) s.beta_fast = *b;
      if (const auto b = number("beta_slow"); b && *b != 0) s.beta_slow = *b;
      if (rp.contains("truncate") && !rp["truncate"].is_null()) {
        require(rp["truncate"].is_boolean(), "DecoderConfig: {}.truncate is {}, expected true/false", key,
                rp["truncate"].dump());
        s.truncate = rp["truncate"].get<bool>();
      }
    }
    return s;
  }
};

// transformers' rope init functions. seq_len: the sequence length of the forward (dynamic only;
// 0 = at construction, i.e. max_position_embeddings).
inline RopeFrequencies rope_frequencies(const RopeScaling& s, int head_dim, double theta, int max_position_embeddings,
                                        std::int64_t seq_len = 0) {
  require(head_dim > 0 && head_dim % 2 == 0, "rope_frequencies: head_dim {} must be even", head_dim);
  const int half = head_dim / 2;
  RopeFrequencies out;
  out.inv_freq.resize(static_cast<std::size_t>(half));
  const float fdim = static_cast<float>(head_dim);
  const auto exponent = [&](int i) { return static_cast<float>(2 * i) / fdim; };  // arange(0, dim, 2).float() / dim
  const int original =
      s.original_max_position_embeddings > 0 ? s.original_max_position_embeddings : max_position_embeddings;
  switch (s.type) {
    case RopeType::Default: out = default_rope_frequencies(head_dim, theta); break;
    case RopeType::Linear: {
      const float factor = static_cast<float>(s.factor);
      for (int i = 0; i < half; ++i)
        out.inv_freq[static_cast<std::size_t>(i)] = rope_inv_freq(i, head_dim, theta) / factor;
      break;
    }
    case RopeType::Dynamic: {
      require(max_position_embeddings > 0, "rope_frequencies: dynamic RoPE needs max_position_embeddings > 0");
      if (seq_len <= 0) {
        // At construction transformers computes in double with seq_len = max_position_embeddings.
        const double base =
            theta * std::pow(s.factor * max_position_embeddings / max_position_embeddings - (s.factor - 1),
                             static_cast<double>(head_dim) / (head_dim - 2));
        for (int i = 0; i < half; ++i) out.inv_freq[static_cast<std::size_t>(i)] = rope_inv_freq(i, head_dim, base);
      } else {
        out.inv_freq = dynamic_ntk_inv_freq(head_dim, theta, s.factor, max_position_embeddings, seq_len);
      }
      break;
    }
    case RopeType::Yarn: {
      require(original > 0, "rope_frequencies: yarn RoPE needs original_max_position_embeddings > 0");
      const double factor = s.factor;
      const auto get_mscale = [](double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; };
      double attention = 1.0;
      if (s.attention_factor)
        attention = *s.attention_factor;
      else if (s.mscale && s.mscale_all_dim && *s.mscale != 0 && *s.mscale_all_dim != 0)
        attention = get_mscale(factor, *s.mscale) / get_mscale(factor, *s.mscale_all_dim);
      else
        attention = get_mscale(factor, 1.0);
      out.attention_scaling = static_cast<float>(attention);
      const double pi = 3.141592653589793;
      const auto correction_dim = [&](double rotations) {
        return (head_dim * std::log(original / (rotations * 2 * pi))) / (2 * std::log(theta));
      };
      double low = correction_dim(s.beta_fast), high = correction_dim(s.beta_slow);
      if (s.truncate) {
        low = std::floor(low);
        high = std::ceil(high);
      }
      low = std::max(low, 0.0);
      high = std::min(high, static_cast<double>(head_dim - 1));
      if (low == high) high += 0.001;
      const float flow = static_cast<float>(low), span = static_cast<float>(high - low);
      const float ffactor = static_cast<float>(factor);
      for (int i = 0; i < half; ++i) {
        const float pos_freq = static_cast<float>(std::pow(theta, static_cast<double>(exponent(i))));
        const float extrapolation = 1.0f / pos_freq;
        const float interpolation = 1.0f / (ffactor * pos_freq);
        const float ramp = std::clamp((static_cast<float>(i) - flow) / span, 0.0f, 1.0f);
        const float extrapolation_factor = 1.0f - ramp;
        const float a = interpolation * (1.0f - extrapolation_factor);
        const float b = extrapolation * extrapolation_factor;
        out.inv_freq[static_cast<std::size_t>(i)] = a + b;
      }
      break;
    }
    case RopeType::Llama3: {
      require(original > 0, "rope_frequencies: llama3 RoPE needs original_max_position_embeddings > 0");
      const float factor = static_cast<float>(s.factor);
      const float low_wavelen = static_cast<float>(original / s.low_freq_factor);
      const float high_wavelen = static_cast<float>(original / s.high_freq_factor);
      const float two_pi = static_cast<float>(2 * 3.141592653589793);
      const float fold = static_cast<float>(original), flow = static_cast<float>(s.low_freq_factor);
      const float fspan = static_cast<float>(s.high_freq_factor - s.low_freq_factor);
      for (int i = 0; i < half; ++i) {
        const float inv = rope_inv_freq(i, head_dim, theta);
        const float wavelen = two_pi / inv;
        float llama = wavelen > low_wavelen ? inv / factor : inv;
        const float smooth = (fold / wavelen - flow) / fspan;
        const float smoothed = (1.0f - smooth) * llama / factor + smooth * llama;
        if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) llama = smoothed;
        out.inv_freq[static_cast<std::size_t>(i)] = llama;
      }
      break;
    }
  }
  return out;
}

// The frequencies a model with this RoPE configuration starts from, held from forward to forward (dynamic NTK's
// change with each forward's length: RopeFrequencyState::prepare).
inline RopeFrequencyState rope_frequency_state(const RopeScaling& s, int head_dim, double theta,
                                               int max_position_embeddings) {
  RopeFrequencies initial = rope_frequencies(s, head_dim, theta, max_position_embeddings);
  if (s.type != RopeType::Dynamic) return RopeFrequencyState(std::move(initial));
  return RopeFrequencyState(std::move(initial), DynamicNtkRope{head_dim, theta, s.factor, max_position_embeddings});
}

}  // namespace vidlora::model

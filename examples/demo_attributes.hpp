#pragma once
// The demo captions' attributes, read back from the Korean grammar of tools/make_demo_data.sh:
//   "<bg> 배경에서 <colour> <shape> <motion>[ 장면이 바뀌어 <bg2> 배경이 나타난다.| 잠시 빠르게 흔들린다.]"
// so that a generated caption can be scored attribute by attribute against its reference: does it name
// the background, the shape's colour, the shape, the motion, the scene change (with its new background)
// and the shake right? A phrase the grammar does not have reads as "" and never matches.

#include <array>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

namespace demo {

struct CaptionAttributes {
  std::string background, colour, shape, motion, scene_change, shake;  // scene_change: the new background or "none"
};

inline constexpr std::array<std::string_view, 6> kAttributeNames{"background", "colour",       "shape",
                                                                 "motion",     "scene change", "shake"};

inline CaptionAttributes read_caption_attributes(std::string_view caption) {
  static constexpr std::array<std::string_view, 8> colours{"빨간", "파란", "초록", "노란",
                                                           "보라", "검은", "흰",   "주황"};
  static constexpr std::array<std::string_view, 3> shapes{"원이", "사각형이", "삼각형이"};
  static constexpr std::array<std::string_view, 5> motions{"왼쪽에서 오른쪽으로 움직인다.",
                                                           "오른쪽에서 왼쪽으로 움직인다.", "위에서 아래로 움직인다.",
                                                           "아래에서 위로 움직인다.", "제자리에 멈춰 있다."};
  CaptionAttributes a;
  // the word before " 배경에서" is the background, the two words after it the colour and the shape
  const auto bg_end = caption.find(" 배경에서 ");
  if (bg_end != std::string_view::npos) {
    const std::string_view bg = caption.substr(0, bg_end);
    for (auto c : colours)
      if (bg == c) a.background = c;
    std::string_view rest = caption.substr(bg_end + std::string_view(" 배경에서 ").size());
    for (auto c : colours)
      if (rest.substr(0, c.size() + 1) == fmt::format("{} ", c)) {
        a.colour = c;
        rest.remove_prefix(c.size() + 1);
        break;
      }
    for (auto s : shapes)
      if (rest.substr(0, s.size() + 1) == fmt::format("{} ", s)) {
        a.shape = s;
        rest.remove_prefix(s.size() + 1);
        break;
      }
    for (auto m : motions)
      if (rest.substr(0, m.size()) == m) a.motion = m;
  }
  a.scene_change = "none";
  if (const auto sc = caption.find("장면이 바뀌어 "); sc != std::string_view::npos) {
    a.scene_change = "";
    const std::string_view after = caption.substr(sc + std::string_view("장면이 바뀌어 ").size());
    for (auto c : colours)
      if (after.substr(0, c.size() + std::string_view(" 배경이 나타난다.").size()) ==
          fmt::format("{} 배경이 나타난다.", c))
        a.scene_change = c;
  }
  a.shake = caption.find("잠시 빠르게 흔들린다.") != std::string_view::npos ? "yes" : "no";
  return a;
}

inline std::array<std::string, 6> attribute_values(const CaptionAttributes& a) {
  return {a.background, a.colour, a.shape, a.motion, a.scene_change, a.shake};
}

// Per attribute (kAttributeNames order): how many generated captions name it as their reference does.
inline std::array<int, 6> attributes_right(const std::vector<std::string>& generated,
                                           const std::vector<std::string>& references) {
  std::array<int, 6> right{};
  for (std::size_t i = 0; i < generated.size() && i < references.size(); ++i) {
    const auto g = attribute_values(read_caption_attributes(generated[i]));
    const auto r = attribute_values(read_caption_attributes(references[i]));
    for (std::size_t k = 0; k < r.size(); ++k) right[k] += !r[k].empty() && g[k] == r[k] ? 1 : 0;
  }
  return right;
}

// Per attribute: the balanced accuracy, the mean over the values the references take (a shake, no shake;
// each motion, ...) of the share of those clips named right. Plain accuracy rewards never naming a rare
// event (20% of the clips shake: "never" is right on 80%); a captioner that always names the same value
// scores 1 / (number of values present), however rare the others are. An attribute no reference names
// (unparsable references) gets 0.
inline std::array<double, 6> attributes_balanced_accuracy(const std::vector<std::string>& generated,
                                                          const std::vector<std::string>& references) {
  std::array<std::map<std::string, std::array<int, 2>>, 6> per_value;  // value -> {right, clips}
  for (std::size_t i = 0; i < generated.size() && i < references.size(); ++i) {
    const auto g = attribute_values(read_caption_attributes(generated[i]));
    const auto r = attribute_values(read_caption_attributes(references[i]));
    for (std::size_t k = 0; k < r.size(); ++k) {
      if (r[k].empty()) continue;
      auto& counts = per_value[k][r[k]];
      counts[0] += g[k] == r[k] ? 1 : 0;
      counts[1] += 1;
    }
  }
  std::array<double, 6> balanced{};
  for (std::size_t k = 0; k < balanced.size(); ++k) {
    if (per_value[k].empty()) continue;
    double sum = 0;
    for (const auto& [value, counts] : per_value[k]) sum += static_cast<double>(counts[0]) / counts[1];
    balanced[k] = sum / static_cast<double>(per_value[k].size());
  }
  return balanced;
}

}  // namespace demo

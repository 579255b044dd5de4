#pragma once
// The training log: one JSON object per line for every step and every evaluation, flushed as it is
// written (a crash loses at most the line being written), and the loss and learning-rate curves drawn
// from it as a plain SVG file (axes, ticks, legend; no dependencies).

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <vidlora/core/error.hpp>
#include <vidlora/core/memory_stats.hpp>
#include <vidlora/io/atomic_file.hpp>

namespace vidlora::train {

// One optimizer step. Non-finite numbers are written as null (JSON has no NaN).
struct StepRecord {
  int stage = 1;
  int epoch = 0;
  long step = 0;  // global optimizer step, counted from 1
  long total_steps = 0;
  double loss = 0.0;
  double lr = 0.0;
  double grad_norm = 0.0;
  long tokens = 0;  // supervised tokens in this step
  double tokens_per_s = 0.0;
  double elapsed_s = 0.0;
  std::optional<MemoryStats> memory{};  // GPU runs: the device allocator's stats, peaks since the step began
  std::optional<double> loss_scale{};   // fp16 runs: optim::GradScaler's scale after this step's update
  std::optional<double> mfu{};          // device runs of a preset with a known peak: train::lora_mfu of the step
  std::string backend{};                // where the decoder's step ran ("Cpu", "Cuda"); empty: not written
};

// One evaluation: eval loss plus named metrics ("meteor", "cider_d", "unique_ratio", ...).
struct EvalRecord {
  int stage = 1;
  int epoch = 0;
  long step = 0;
  double eval_loss = 0.0;
  std::map<std::string, double> metrics{};
};

namespace detail {
inline nlohmann::json finite_or_null(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}
}  // namespace detail

inline nlohmann::json to_json(const StepRecord& r) {
  nlohmann::json j = {{"type", "step"},
                      {"stage", r.stage},
                      {"epoch", r.epoch},
                      {"step", r.step},
                      {"total_steps", r.total_steps},
                      {"loss", detail::finite_or_null(r.loss)},
                      {"lr", detail::finite_or_null(r.lr)},
                      {"grad_norm", detail::finite_or_null(r.grad_norm)},
                      {"tokens", r.tokens},
                      {"tokens_per_s", detail::finite_or_null(r.tokens_per_s)},
                      {"elapsed_s", detail::finite_or_null(r.elapsed_s)}};
  if (r.memory) j["memory"] = memory_stats_to_json(*r.memory);
  if (r.mfu) j["mfu"] = detail::finite_or_null(*r.mfu);
  if (r.loss_scale) j["loss_scale"] = detail::finite_or_null(*r.loss_scale);
  if (!r.backend.empty()) j["backend"] = r.backend;
  return j;
}

inline nlohmann::json to_json(const EvalRecord& r) {
  nlohmann::json j = {{"type", "eval"},
                      {"stage", r.stage},
                      {"epoch", r.epoch},
                      {"step", r.step},
                      {"eval_loss", detail::finite_or_null(r.eval_loss)}};
  for (const auto& [name, value] : r.metrics) j[name] = detail::finite_or_null(value);
  return j;
}

struct JsonlLogOptions {
  // -1: start a new log (truncate). >= 0: resuming from a checkpoint taken at this step; records with
  // a larger "step" (written after the checkpoint by the interrupted run) are dropped, the rest kept.
  long resume_from_step = -1;
};

class JsonlLog {
 public:
  explicit JsonlLog(std::filesystem::path path, JsonlLogOptions options = {}) : path_(std::move(path)) {
    if (path_.has_parent_path()) std::filesystem::create_directories(path_.parent_path());
    std::vector<std::string> kept;
    if (options.resume_from_step >= 0 && std::filesystem::exists(path_)) {
      std::ifstream in(path_, std::ios::binary);
      std::string line;
      while (std::getline(in, line)) {
        const auto j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_discarded() || !j.is_object()) continue;  // a line cut by the crash
        if (j.value("step", 0L) <= options.resume_from_step) kept.push_back(line);
      }
    }
    out_.open(path_, std::ios::binary | std::ios::trunc);
    require(out_.is_open(), "training log: cannot open {} for writing: {}", path_.string(), std::strerror(errno));
    for (const auto& line : kept) out_ << line << '\n';
    out_.flush();
    lines_ = kept.size();
  }

  void write(const nlohmann::json& record) {
    out_ << record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
    out_.flush();
    require(out_.good(), "training log: writing {} failed (disk full?)", path_.string());
    ++lines_;
  }
  void write(const StepRecord& r) { write(to_json(r)); }
  void write(const EvalRecord& r) { write(to_json(r)); }

  const std::filesystem::path& path() const { return path_; }
  std::size_t lines() const { return lines_; }

 private:
  std::filesystem::path path_;
  std::ofstream out_;
  std::size_t lines_ = 0;
};

// Every JSON object of a JSONL file (lines that do not parse are left out).
inline std::vector<nlohmann::json> read_jsonl(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  require(static_cast<bool>(in), "training log: cannot open {}", path.string());
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.is_object()) out.push_back(std::move(j));
  }
  return out;
}

// ---- SVG line charts ----

struct Series {
  std::string name{};
  std::vector<double> x{}, y{};  // non-finite y values leave a gap
  std::string color = "#1f77b4";
  bool markers = false;  // draw a dot at each point (sparse series such as eval loss)
  long best = -1;        // >= 0: the index of a point ringed and labelled "best"
};

// A dashed vertical line across a chart with a label at its top (where stage 2 starts, say).
struct XMark {
  double x = 0.0;
  std::string label{};
};

struct ChartOptions {
  std::string title{};
  std::string x_label = "step";
  std::string y_label{};
  int width = 720;
  int height = 300;
  std::vector<XMark> x_marks{};
  // < 1: the y axis ends at this quantile of the values, so that a few large ones (the first steps' loss)
  // do not flatten the rest; the points above are drawn on the top edge and the title gives the maximum.
  double y_clip_quantile = 1.0;
};

// "Nice" tick positions (1, 2 or 5 times a power of ten) covering [lo, hi] with about `target` ticks.
inline std::vector<double> nice_ticks(double lo, double hi, int target = 5) {
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / std::max(1, target);
  const int e = static_cast<int>(std::floor(std::log10(raw)));
  const double mag = std::pow(10.0, e);
  int m = 10;
  for (int c : {1, 2, 5, 10})
    if (c * mag >= raw) {
      m = c;
      break;
    }
  // tick k is k·m·10^e, computed from integers so that 0.6 prints as 0.6, not 0.6000000000000001
  auto tick = [&](long k) {
    return e >= 0 ? static_cast<double>(k * m) * mag : static_cast<double>(k * m) / std::pow(10.0, -e);
  };
  const double step = m * mag;
  std::vector<double> ticks;
  for (long k = static_cast<long>(std::ceil(lo / step - 1e-9)); tick(k) <= hi + step * 1e-9; ++k)
    ticks.push_back(tick(k));
  return ticks;
}

namespace detail {

inline std::string xml_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// The data range of the series, widened to whole ticks; a flat range is opened up around its value.
inline std::pair<double, double> axis_range(double lo, double hi) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {0.0, 1.0};
  if (hi <= lo) {
    const double pad = lo == 0 ? 1.0 : std::abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const auto ticks = nice_ticks(lo, hi);
  const double step = ticks.size() > 1 ? ticks[1] - ticks[0] : (hi - lo);
  return {std::floor(lo / step + 1e-9) * step, std::ceil(hi / step - 1e-9) * step};
}

// Draws one chart into the rectangle (x0, y0, w, h) of a larger SVG.
inline std::string chart_body(std::span<const Series> series, const ChartOptions& o, double x0, double y0) {
  constexpr double left = 70, right = 20, top = 30, bottom = 45;
  const double pw = o.width - left - right, ph = o.height - top - bottom;
  double xmin = std::numeric_limits<double>::infinity(), xmax = -xmin, ymin = xmin, ymax = -xmin;
  for (const auto& s : series) {
    require(s.x.size() == s.y.size(), "line chart: series '{}' has {} x values but {} y values", s.name, s.x.size(),
            s.y.size());
    for (std::size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      xmin = std::min(xmin, s.x[i]), xmax = std::max(xmax, s.x[i]);
      ymin = std::min(ymin, s.y[i]), ymax = std::max(ymax, s.y[i]);
    }
  }
  for (const auto& m : o.x_marks)
    if (std::isfinite(m.x)) xmin = std::min(xmin, m.x), xmax = std::max(xmax, m.x);
  const double data_ymax = ymax;
  if (o.y_clip_quantile < 1.0) {
    std::vector<double> ys;
    for (const auto& s : series)
      for (double y : s.y)
        if (std::isfinite(y)) ys.push_back(y);
    if (!ys.empty()) {
      std::sort(ys.begin(), ys.end());
      const double q = std::clamp(o.y_clip_quantile, 0.0, 1.0);
      ymax = ys[static_cast<std::size_t>(std::ceil(q * static_cast<double>(ys.size() - 1)))];
    }
  }
  const auto [xlo, xhi] = axis_range(xmin, xmax);
  const auto [ylo, yhi] = axis_range(ymin, ymax);
  const bool clipped = data_ymax > yhi;
  const double left_px = x0 + left, top_px = y0 + top;
  auto px = [&](double x) { return left_px + (x - xlo) / (xhi - xlo) * pw; };
  auto py = [&](double y) { return top_px + ph - (std::min(y, yhi) - ylo) / (yhi - ylo) * ph; };

  std::string svg = fmt::format(
      "<g class=\"chart\" data-x-min=\"{}\" data-x-max=\"{}\" data-y-min=\"{}\" data-y-max=\"{}\" "
      "data-left=\"{}\" data-top=\"{}\" data-width=\"{}\" data-height=\"{}\">\n",
      xlo, xhi, ylo, yhi, left_px, top_px, pw, ph);
  const std::string title =
      clipped ? fmt::format("{} (axis cut at {:g}; the largest value, {:.4g}, is drawn on the top edge)", o.title, yhi,
                            data_ymax)
              : o.title;
  svg +=
      fmt::format("<text class=\"title\" x=\"{:.2f}\" y=\"{:.2f}\" font-size=\"14\" text-anchor=\"middle\">{}</text>\n",
                  left_px + pw / 2, y0 + 18, xml_escape(title));
  // grid and ticks
  for (double t : nice_ticks(xlo, xhi)) {
    svg += fmt::format(
        "<line class=\"grid\" x1=\"{0:.2f}\" y1=\"{1:.2f}\" x2=\"{0:.2f}\" y2=\"{2:.2f}\" stroke=\"#e0e0e0\"/>\n",
        px(t), top_px, top_px + ph);
    svg += fmt::format(
        "<text class=\"x-tick\" data-value=\"{}\" x=\"{:.2f}\" y=\"{:.2f}\" font-size=\"11\" "
        "text-anchor=\"middle\">{:g}</text>\n",
        t, px(t), top_px + ph + 16, t);
  }
  for (double t : nice_ticks(ylo, yhi)) {
    svg += fmt::format(
        "<line class=\"grid\" x1=\"{0:.2f}\" y1=\"{1:.2f}\" x2=\"{2:.2f}\" y2=\"{1:.2f}\" stroke=\"#e0e0e0\"/>\n",
        left_px, py(t), left_px + pw);
    svg += fmt::format(
        "<text class=\"y-tick\" data-value=\"{}\" x=\"{:.2f}\" y=\"{:.2f}\" font-size=\"11\" "
        "text-anchor=\"end\">{:g}</text>\n",
        t, left_px - 6, py(t) + 4, t);
  }
  // axes and labels
  svg += fmt::format(
      "<line class=\"axis\" x1=\"{0:.2f}\" y1=\"{1:.2f}\" x2=\"{2:.2f}\" y2=\"{1:.2f}\" stroke=\"black\"/>\n", left_px,
      top_px + ph, left_px + pw);
  svg += fmt::format(
      "<line class=\"axis\" x1=\"{0:.2f}\" y1=\"{1:.2f}\" x2=\"{0:.2f}\" y2=\"{2:.2f}\" stroke=\"black\"/>\n", left_px,
      top_px, top_px + ph);
  svg += fmt::format("<text x=\"{:.2f}\" y=\"{:.2f}\" font-size=\"12\" text-anchor=\"middle\">{}</text>\n",
                     left_px + pw / 2, top_px + ph + 34, xml_escape(o.x_label));
  svg += fmt::format(
      "<text x=\"{0:.2f}\" y=\"{1:.2f}\" font-size=\"12\" text-anchor=\"middle\" "
      "transform=\"rotate(-90 {0:.2f} {1:.2f})\">{2}</text>\n",
      x0 + 16, top_px + ph / 2, xml_escape(o.y_label));
  for (const auto& m : o.x_marks) {
    if (!std::isfinite(m.x)) continue;
    svg += fmt::format(
        "<line class=\"x-mark\" data-x=\"{}\" x1=\"{:.2f}\" y1=\"{:.2f}\" x2=\"{:.2f}\" y2=\"{:.2f}\" "
        "stroke=\"#7f7f7f\" stroke-dasharray=\"5,4\"/>\n",
        m.x, px(m.x), top_px, px(m.x), top_px + ph);
    svg += fmt::format("<text x=\"{:.2f}\" y=\"{:.2f}\" font-size=\"11\" fill=\"#555555\">{}</text>\n", px(m.x) + 4,
                       top_px + 12, xml_escape(m.label));
  }
  // series: one polyline per run of finite points
  for (const auto& s : series) {
    std::string points;
    auto flush = [&] {
      if (!points.empty())
        svg += fmt::format(
            "<polyline class=\"series\" data-series=\"{}\" fill=\"none\" stroke=\"{}\" "
            "stroke-width=\"1.5\" points=\"{}\"/>\n",
            xml_escape(s.name), s.color, points);
      points.clear();
    };
    for (std::size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) {
        flush();
        continue;
      }
      points += fmt::format("{}{:.2f},{:.2f}", points.empty() ? "" : " ", px(s.x[i]), py(s.y[i]));
      if (s.markers)
        svg += fmt::format(
            "<circle class=\"marker\" data-series=\"{}\" cx=\"{:.2f}\" cy=\"{:.2f}\" r=\"3\" fill=\"{}\"/>\n",
            xml_escape(s.name), px(s.x[i]), py(s.y[i]), s.color);
    }
    flush();
    if (s.best >= 0 && static_cast<std::size_t>(s.best) < s.x.size() &&
        std::isfinite(s.y[static_cast<std::size_t>(s.best)])) {
      const double bx = px(s.x[static_cast<std::size_t>(s.best)]), by = py(s.y[static_cast<std::size_t>(s.best)]);
      svg += fmt::format(
          "<circle class=\"best\" data-series=\"{}\" data-x=\"{}\" cx=\"{:.2f}\" cy=\"{:.2f}\" r=\"7\" "
          "fill=\"none\" stroke=\"black\" stroke-width=\"1.5\"/>\n"
          "<text x=\"{:.2f}\" y=\"{:.2f}\" font-size=\"11\">best</text>\n",
          xml_escape(s.name), s.x[static_cast<std::size_t>(s.best)], bx, by, bx + 9,
          by - top_px < 40 ? by + 20 : by - 9);  // near the top (the legend), the label goes below
    }
  }
  // legend, top right inside the plot
  for (std::size_t k = 0; k < series.size(); ++k) {
    const double ly = top_px + 12 + 16 * static_cast<double>(k), lx = left_px + pw - 130;
    svg += fmt::format(
        "<g class=\"legend\"><line x1=\"{:.2f}\" y1=\"{:.2f}\" x2=\"{:.2f}\" y2=\"{:.2f}\" stroke=\"{}\" "
        "stroke-width=\"2\"/><text x=\"{:.2f}\" y=\"{:.2f}\" font-size=\"11\">{}</text></g>\n",
        lx, ly, lx + 20, ly, series[k].color, lx + 26, ly + 4, xml_escape(series[k].name));
  }
  svg += "</g>\n";
  return svg;
}

}  // namespace detail

// A complete SVG document with one line chart.
inline std::string line_chart_svg(std::span<const Series> series, const ChartOptions& options = {}) {
  return fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{2}</svg>\n",
      options.width, options.height, detail::chart_body(series, options, 0, 0));
}

// What the curves show besides the losses: the early-stopping metric, whose best evaluation is ringed.
struct CurvesOptions {
  std::string metric = "eval_loss";  // eval_loss, or a metric name of the eval records (meteor, cider_d, ...)
  bool higher_is_better = false;
  int width = 720;
};

// From the records of a JsonlLog: the loss chart (train loss per step, its axis cut at the 95th percentile
// so that the first steps do not flatten the rest; eval loss per evaluation), the early-stopping metric's
// chart when it is not the eval loss, and the learning-rate chart. A dashed line marks where stage 2
// starts; the evaluation that early stopping keeps is ringed.
inline std::string training_curves_svg(std::span<const nlohmann::json> records, const CurvesOptions& options) {
  const int width = options.width;
  Series loss{.name = "train loss", .color = "#1f77b4"};
  Series eval{.name = "eval loss", .color = "#d62728", .markers = true};
  Series metric{.name = options.metric, .color = "#9467bd", .markers = true};
  Series lr{.name = "learning rate", .color = "#2ca02c"};
  auto number = [](const nlohmann::json& j, const std::string& key) {
    const auto it = j.find(key);
    return it != j.end() && it->is_number() ? it->get<double>() : std::numeric_limits<double>::quiet_NaN();
  };
  std::vector<XMark> marks;
  for (const auto& r : records) {
    const double step = number(r, "step");
    if (r.value("type", "") == "step") {
      if (marks.empty() && r.value("stage", 1) == 2) marks.push_back({step - 0.5, "stage 2"});
      loss.x.push_back(step), loss.y.push_back(number(r, "loss"));
      lr.x.push_back(step), lr.y.push_back(number(r, "lr"));
    } else if (r.value("type", "") == "eval") {
      eval.x.push_back(step), eval.y.push_back(number(r, "eval_loss"));
      metric.x.push_back(step), metric.y.push_back(number(r, options.metric));
    }
  }
  Series& picked = options.metric == "eval_loss" ? eval : metric;
  for (std::size_t i = 0; i < picked.y.size(); ++i) {
    const double y = picked.y[i];
    if (!std::isfinite(y)) continue;
    if (picked.best < 0 || (options.higher_is_better ? y > picked.y[static_cast<std::size_t>(picked.best)]
                                                     : y < picked.y[static_cast<std::size_t>(picked.best)]))
      picked.best = static_cast<long>(i);
  }
  struct Chart {
    std::vector<Series> series;
    ChartOptions options;
  };
  std::vector<Chart> charts;
  charts.push_back(
      {{loss},
       {.title = "loss", .y_label = "loss", .width = width, .height = 300, .x_marks = marks, .y_clip_quantile = 0.95}});
  if (!eval.x.empty()) charts.back().series.push_back(eval);
  if (options.metric != "eval_loss" && !metric.x.empty())
    charts.push_back({{metric},
                      {.title = fmt::format("{} (early-stopping metric, {} is better)", options.metric,
                                            options.higher_is_better ? "higher" : "lower"),
                       .y_label = options.metric,
                       .width = width,
                       .height = 240,
                       .x_marks = marks}});
  charts.push_back(
      {{lr}, {.title = "learning rate", .y_label = "lr", .width = width, .height = 240, .x_marks = marks}});
  std::string body;
  int height = 0;
  for (const auto& c : charts) {
    body += detail::chart_body(c.series, c.options, 0, height);
    height += c.options.height;
  }
  return fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{2}</svg>\n",
      width, height, body);
}

inline std::string training_curves_svg(std::span<const nlohmann::json> records, int width = 720) {
  return training_curves_svg(records, CurvesOptions{.width = width});
}

// Draws the curves of a JSONL log into an SVG file, written atomically (never half a chart on disk).
inline void write_training_curves(const std::filesystem::path& jsonl, const std::filesystem::path& svg,
                                  const CurvesOptions& options = {}) {
  const auto records = read_jsonl(jsonl);
  io::write_file_atomically(svg, training_curves_svg(records, options));
}

}  // namespace vidlora::train

#include <catch2/catch.hpp>

#include <vidlora/train/training_log.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

using namespace vidlora;
namespace fs = std::filesystem;

namespace {

struct Element {
  std::string name;
  std::map<std::string, std::string> attrs;
  std::string text;  // character data right after the start tag
};

// A small XML reader for the SVG we write: checks that every start tag is closed in order and
// returns the elements in document order.
std::vector<Element> parse_xml(const std::string& xml) {
  std::vector<Element> out;
  std::vector<std::string> open;
  static const std::regex attr_re(R"re(([A-Za-z_:][-A-Za-z0-9_:.]*)="([^"<]*)")re");
  std::size_t pos = 0;
  while ((pos = xml.find('<', pos)) != std::string::npos) {
    const auto end = xml.find('>', pos);
    REQUIRE(end != std::string::npos);
    std::string tag = xml.substr(pos + 1, end - pos - 1);
    pos = end + 1;
    if (tag[0] == '/') {
      REQUIRE_FALSE(open.empty());
      CHECK(open.back() == tag.substr(1));
      open.pop_back();
      continue;
    }
    const bool self_closing = tag.back() == '/';
    if (self_closing) tag.pop_back();
    Element e;
    e.name = tag.substr(0, tag.find_first_of(" \n"));
    for (std::sregex_iterator it(tag.begin(), tag.end(), attr_re), stop; it != stop; ++it) e.attrs[(*it)[1]] = (*it)[2];
    e.text = xml.substr(pos, xml.find('<', pos) - pos);
    if (!self_closing) open.push_back(e.name);
    out.push_back(std::move(e));
  }
  CHECK(open.empty());
  return out;
}

std::vector<std::pair<double, double>> points_of(const Element& polyline) {
  std::vector<std::pair<double, double>> pts;
  std::istringstream in(polyline.attrs.at("points"));
  std::string pair;
  while (in >> pair) {
    const auto comma = pair.find(',');
    pts.emplace_back(std::stod(pair.substr(0, comma)), std::stod(pair.substr(comma + 1)));
  }
  return pts;
}

std::vector<Element> select(const std::vector<Element>& all, const std::string& name, const std::string& key = {},
                            const std::string& value = {}) {
  std::vector<Element> out;
  for (const auto& e : all)
    if (e.name == name && (key.empty() || (e.attrs.count(key) && e.attrs.at(key) == value))) out.push_back(e);
  return out;
}

double attr(const Element& e, const std::string& key) { return std::stod(e.attrs.at(key)); }

fs::path temp_file(const std::string& name) {
  return fs::temp_directory_path() / ("vidlora_test_" + name + "_" + std::to_string(::getpid()));
}

std::vector<std::string> lines_of(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

}  // namespace

TEST_CASE("line chart maps data to pixels on nice axes with ticks and a legend", "[train][svg]") {
  train::Series loss{.name = "train <loss> & more"};
  for (int s = 1; s <= 100; ++s) loss.x.push_back(s), loss.y.push_back(4.0 - 3.0 * (s - 1) / 99.0);
  const std::string svg = train::line_chart_svg(std::vector{loss}, {.title = "loss"});
  const auto doc = parse_xml(svg);
  REQUIRE(doc.front().name == "svg");
  CHECK(doc.front().attrs.at("xmlns") == "http://www.w3.org/2000/svg");
  CHECK(doc.front().attrs.at("width") == "720");

  const auto chart = select(doc, "g", "class", "chart");
  REQUIRE(chart.size() == 1);
  // 1..100 widens to [0, 100] (ticks of 20); 1..4 stays [1, 4] (ticks of 1)
  CHECK(attr(chart[0], "data-x-min") == 0.0);
  CHECK(attr(chart[0], "data-x-max") == 100.0);
  CHECK(attr(chart[0], "data-y-min") == 1.0);
  CHECK(attr(chart[0], "data-y-max") == 4.0);

  const auto lines = select(doc, "polyline", "data-series", "train &lt;loss&gt; &amp; more");
  REQUIRE(lines.size() == 1);
  const auto pts = points_of(lines[0]);
  REQUIRE(pts.size() == 100);
  // plot area: 70 px left margin, 30 px top, 630 x 225 px
  CHECK(pts.front().first == Approx(70 + 630 * 0.01).margin(0.006));
  CHECK(pts.front().second == Approx(30).margin(0.006));
  CHECK(pts.back().first == Approx(700).margin(0.006));
  CHECK(pts.back().second == Approx(255).margin(0.006));
  for (std::size_t i = 0; i < pts.size(); ++i) {
    CHECK(pts[i].first == Approx(70 + 6.3 * loss.x[i]).margin(0.006));
    CHECK(pts[i].second == Approx(30 + 225 - (loss.y[i] - 1.0) / 3.0 * 225).margin(0.006));
  }

  std::vector<double> xticks, yticks;
  for (const auto& t : select(doc, "text", "class", "x-tick")) {
    xticks.push_back(std::stod(t.text));
    CHECK(attr(t, "x") == Approx(70 + 6.3 * std::stod(t.text)).margin(0.006));
  }
  for (const auto& t : select(doc, "text", "class", "y-tick")) {
    yticks.push_back(std::stod(t.text));
    CHECK(attr(t, "y") - 4 == Approx(255 - (std::stod(t.text) - 1.0) / 3.0 * 225).margin(0.006));
  }
  CHECK(xticks == std::vector<double>{0, 20, 40, 60, 80, 100});
  CHECK(yticks == std::vector<double>{1, 2, 3, 4});
  CHECK(select(doc, "line", "class", "axis").size() == 2);
  bool legend = false;
  for (const auto& t : select(doc, "text")) legend |= t.text == "train &lt;loss&gt; &amp; more";
  CHECK(legend);
}

TEST_CASE("a non-finite value breaks the line and a flat series still gets a range", "[train][svg]") {
  train::Series s{
      .name = "lr", .x = {1, 2, 3, 4, 5}, .y = {1e-4, 1e-4, std::numeric_limits<double>::quiet_NaN(), 1e-4, 1e-4}};
  const auto doc = parse_xml(train::line_chart_svg(std::vector{s}));
  const auto lines = select(doc, "polyline", "data-series", "lr");
  REQUIRE(lines.size() == 2);
  CHECK(points_of(lines[0]).size() == 2);
  CHECK(points_of(lines[1]).size() == 2);
  const auto chart = select(doc, "g", "class", "chart").at(0);
  CHECK(attr(chart, "data-y-min") < 1e-4);
  CHECK(attr(chart, "data-y-max") > 1e-4);
  CHECK(train::nice_ticks(0.0, 1.0) == std::vector<double>{0, 0.2, 0.4, 0.6, 0.8, 1.0});
  CHECK(train::nice_ticks(0.0, 7.0) == std::vector<double>{0, 2, 4, 6});
}

TEST_CASE("jsonl log writes one flushed object per line and nulls for NaN", "[train][log]") {
  const auto path = temp_file("log.jsonl");
  {
    train::JsonlLog log(path);
    log.write(train::StepRecord{.stage = 1,
                                .epoch = 1,
                                .step = 1,
                                .total_steps = 10,
                                .loss = 2.5,
                                .lr = 1e-4,
                                .grad_norm = 0.5,
                                .tokens = 123,
                                .tokens_per_s = 1000,
                                .elapsed_s = 0.1});
    log.write(train::StepRecord{.step = 2, .loss = std::nan("")});
    log.write(train::EvalRecord{
        .stage = 1, .epoch = 1, .step = 2, .eval_loss = 2.25, .metrics = {{"meteor", 0.5}, {"unique_ratio", 0.9}}});
    const auto lines = lines_of(path);  // read while the log is still open: each write is flushed
    REQUIRE(lines.size() == 3);
    const auto first = nlohmann::json::parse(lines[0]);
    CHECK(first["type"] == "step");
    CHECK(first["loss"].get<double>() == 2.5);
    CHECK(first["tokens"].get<long>() == 123);
    CHECK(nlohmann::json::parse(lines[1])["loss"].is_null());
    const auto eval = nlohmann::json::parse(lines[2]);
    CHECK(eval["type"] == "eval");
    CHECK(eval["meteor"].get<double>() == 0.5);
    CHECK(eval["eval_loss"].get<double>() == 2.25);
  }
  fs::remove(path);
}

TEST_CASE("a jsonl log that cannot be opened is an error naming the file and the reason", "[train][log]") {
  // a directory where the log file should be
  const auto path = std::filesystem::temp_directory_path() / "vidlora_log_is_a_directory" / "train_log.jsonl";
  std::filesystem::create_directories(path);
  CHECK_THROWS_WITH(train::JsonlLog(path),
                    Catch::Contains("training log: cannot open " + path.string() + " for writing: Is a directory"));
  std::filesystem::remove_all(path.parent_path());
}

TEST_CASE("resuming the jsonl log drops records after the checkpoint step and a cut line", "[train][log]") {
  const auto path = temp_file("resume.jsonl");
  {
    train::JsonlLog log(path);
    for (long s = 1; s <= 10; ++s) {
      log.write(train::StepRecord{.step = s, .loss = 1.0 / s});
      if (s % 5 == 0) log.write(train::EvalRecord{.step = s, .eval_loss = 2.0 / s});
    }
  }
  std::ofstream(path, std::ios::app) << "{\"type\": \"step\", \"st";  // the crash cut this line
  {
    train::JsonlLog log(path, {.resume_from_step = 6});
    CHECK(log.lines() == 7);  // steps 1..6 and the eval at step 5
    log.write(train::StepRecord{.step = 7, .loss = 0.125});
  }
  const auto records = train::read_jsonl(path);
  REQUIRE(records.size() == 8);
  CHECK(records[5]["type"] == "eval");
  CHECK(records.back()["step"].get<long>() == 7);
  CHECK(records.back()["loss"].get<double>() == 0.125);

  // the curves drawn from it: loss with eval markers above, lr below
  const auto svg_path = temp_file("curves.svg");
  train::write_training_curves(path, svg_path);
  std::ifstream in(svg_path);
  const std::string svg((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto doc = parse_xml(svg);
  const auto charts = select(doc, "g", "class", "chart");
  REQUIRE(charts.size() == 2);
  CHECK(attr(charts[1], "data-top") == 300 + 30);
  CHECK(points_of(select(doc, "polyline", "data-series", "train loss").at(0)).size() == 7);
  CHECK(select(doc, "circle", "class", "marker").size() ==
        1);                                                   // the eval at step 5 (eval loss: the only marked series)
  CHECK(select(doc, "circle", "class", "best").size() == 1);  // ringed: the early-stopping pick
  CHECK(select(doc, "polyline", "data-series", "learning rate").size() == 1);
  fs::remove(path);
  fs::remove(svg_path);
}

TEST_CASE(
    "the curves mark where stage 2 starts, ring the best evaluation of the early-stopping metric and cut the "
    "loss axis above the first steps",
    "[train][log]") {
  std::vector<nlohmann::json> records;
  for (long s = 1; s <= 40; ++s) {
    const int stage = s <= 10 ? 1 : 2;
    const double loss = s == 1 ? 8.0 : 1.0 + 0.01 * static_cast<double>(40 - s);  // one huge first loss
    records.push_back(train::to_json(train::StepRecord{.stage = stage, .step = s, .loss = loss, .lr = 1e-3}));
    if (s % 10 == 0) {
      const double cider[] = {0.2, 0.9, 0.5, 0.7};  // best at the second evaluation (step 20)
      records.push_back(train::to_json(train::EvalRecord{.stage = stage,
                                                         .step = s,
                                                         .eval_loss = 2.0 - 0.01 * static_cast<double>(s),
                                                         .metrics = {{"cider_d", cider[s / 10 - 1]}}}));
    }
  }
  const auto doc = parse_xml(train::training_curves_svg(records, {.metric = "cider_d", .higher_is_better = true}));
  const auto charts = select(doc, "g", "class", "chart");
  REQUIRE(charts.size() == 3);  // loss, cider_d, learning rate
  // the stage-2 line sits between step 10 and 11 on every chart
  const auto marks = select(doc, "line", "class", "x-mark");
  REQUIRE(marks.size() == 3);
  for (const auto& m : marks) CHECK(attr(m, "data-x") == 10.5);
  // the ring is on cider_d's maximum, not on the lowest eval loss (step 40)
  const auto best = select(doc, "circle", "class", "best");
  REQUIRE(best.size() == 1);
  CHECK(best[0].attrs.at("data-series") == "cider_d");
  CHECK(attr(best[0], "data-x") == 20);
  // the loss axis ends near the later losses (at most 2), the 8.0 is drawn on the top edge and named in the title
  CHECK(attr(charts[0], "data-y-max") <= 2.0);
  const auto titles = select(doc, "text", "class", "title");
  REQUIRE(titles.size() == 3);
  CHECK(titles[0].text.find("the largest value, 8,") != std::string::npos);
  const auto loss_pts = points_of(select(doc, "polyline", "data-series", "train loss").at(0));
  CHECK(loss_pts.front().second == Approx(attr(charts[0], "data-top")));

  // with eval_loss as the metric, the ring is on the lowest eval loss and there is no metric chart
  const auto doc2 = parse_xml(train::training_curves_svg(records, {.metric = "eval_loss"}));
  CHECK(select(doc2, "g", "class", "chart").size() == 2);
  const auto best2 = select(doc2, "circle", "class", "best");
  REQUIRE(best2.size() == 1);
  CHECK(best2[0].attrs.at("data-series") == "eval loss");
  CHECK(attr(best2[0], "data-x") == 40);
}

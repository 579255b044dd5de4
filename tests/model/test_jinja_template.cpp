// The Jinja2 subset renders chat templates byte for byte as transformers' apply_chat_template does, and refuses
// what it does not implement (fixture: tools/reference/jinja_chat_templates.py).
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <fstream>
#include <string>

#include <vidlora/model/jinja_template.hpp>

#include "fixtures.hpp"

using namespace vidlora;
namespace jinja = model::jinja;
using OrderedJson = nlohmann::ordered_json;

namespace {

// Parsed keeping key order: Python dicts print and serialise in insertion order.
const OrderedJson& jinja_cases() {
  static const OrderedJson fixture = [] {
    const std::string path = test::fixture_path("model/jinja_cases.json");
    std::ifstream in(path);
    if (!in) throw Error("cannot open fixture " + path + " (regenerate with tools/reference/jinja_chat_templates.py)");
    return OrderedJson::parse(in);
  }();
  return fixture;
}

jinja::Value jinja_value(const OrderedJson& j) {
  switch (j.type()) {
    case OrderedJson::value_t::null: return jinja::Value(nullptr);
    case OrderedJson::value_t::boolean: return jinja::Value(j.get<bool>());
    case OrderedJson::value_t::number_integer:
    case OrderedJson::value_t::number_unsigned: return jinja::Value(j.get<std::int64_t>());
    case OrderedJson::value_t::number_float: return jinja::Value(j.get<double>());
    case OrderedJson::value_t::string: return jinja::Value(j.get<std::string>());
    case OrderedJson::value_t::array: {
      jinja::Array items;
      for (const auto& item : j) items.push_back(jinja_value(item));
      return jinja::Value::list(std::move(items));
    }
    case OrderedJson::value_t::object: {
      jinja::Object entries;
      for (const auto& [key, value] : j.items()) entries.emplace_back(jinja::Value(key), jinja_value(value));
      return jinja::Value::dict(std::move(entries));
    }
    default: throw Error("unexpected JSON value in the jinja fixture");
  }
}

std::string jinja_source(const OrderedJson& c) {
  if (c.contains("template")) return c["template"].get<std::string>();
  return jinja_cases()["chat_templates"][c["chat_template"].get<std::string>()].get<std::string>();
}

std::string render_jinja(std::string_view source, const jinja::Value& context = jinja::Value::dict({})) {
  return jinja::Template::parse(source).render(context);
}

const OrderedJson& jinja_case(const std::string& name) {
  for (const auto& c : jinja_cases()["cases"])
    if (c["name"] == name) return c;
  throw Error("no jinja fixture case named " + name);
}

}  // namespace

TEST_CASE("jinja renders every fixture case byte for byte as transformers does", "[model][chat][jinja]") {
  const auto& cases = jinja_cases()["cases"];
  REQUIRE(cases.size() >= 60);
  for (const auto& c : cases) {
    INFO("case '" << c["name"].get<std::string>() << "'");
    try {
      CHECK(jinja::Template::parse(jinja_source(c)).render(jinja_value(c["context"])) ==
            c["output"].get<std::string>());
    } catch (const Error& e) {
      FAIL_CHECK("threw: " << e.what());
    }
  }
}

TEST_CASE("jinja rejects every template jinja2 rejects or raises on", "[model][chat][jinja][errors]") {
  const auto& errors = jinja_cases()["errors"];
  REQUIRE(!errors.empty());
  const jinja::Value context = jinja_value(jinja_cases()["error_context"]);
  for (const auto& c : errors) {
    INFO("case '" << c["name"].get<std::string>() << "' (jinja2 raised " << c["exception"].get<std::string>() << ")");
    CHECK_THROWS_AS(jinja::Template::parse(jinja_source(c)).render(context), Error);
  }
}

TEST_CASE("jinja names the constructs it does not support", "[model][chat][jinja][errors]") {
  using Catch::Contains;
  CHECK_THROWS_WITH(render_jinja("{% macro m(a) %}{{ varargs }}{% endmacro %}{{ m(1, 2) }}"),
                    Contains("macro 'm' reads 'varargs'"));
  CHECK_THROWS_WITH(render_jinja("{% macro m() %}{{ kwargs }}{% endmacro %}"), Contains("reads 'kwargs'"));
  CHECK_THROWS_WITH(render_jinja("{% macro m() %}{% if t %}{{ caller() }}{% endif %}{% endmacro %}"),
                    Contains("reads 'caller'"));
  CHECK_THROWS_WITH(render_jinja("{% for i in [1] %}{% macro m() %}{{ i }}{% endmacro %}{{ m() }}{% endfor %}"),
                    Contains("macro 'm' is defined inside a for loop"));
  CHECK_THROWS_WITH(render_jinja("{% macro outer() %}{% macro inner() %}{% endmacro %}{% endmacro %}{{ outer() }}"),
                    Contains("macro 'inner' is defined inside"));
  CHECK_THROWS_WITH(render_jinja("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}"),
                    Contains("RecursionError: macro 'm' called more than 100 macro calls deep"));
  // This interpreter filters a loop's items before its body runs, jinja2 between iterations: a filter and a body
  // sharing a namespace are refused, through macros and other names too.
  const std::string bump = "{% set ns = namespace(k=0) %}{% macro bump(n) %}{% set n.k = n.k + 2 %}{% endmacro %}";
  CHECK_THROWS_WITH(render_jinja(bump + "{% for i in [1, 2, 3] if i > ns.k %}{{ bump(ns) }}{{ i }}{% endfor %}"),
                    Contains("changing namespace 'n', which the filter of a for loop still running reads"));
  CHECK_THROWS_WITH(render_jinja(bump + "{% for i in [1, 2, 3] if bump(ns) == '' %}{{ i }}{% endfor %}"),
                    Contains("a for-loop filter that changes namespace 'n'"));
  CHECK_THROWS_WITH(render_jinja("{% set ns = namespace(k=0) %}{% macro get() %}{{ ns.k }}{% endmacro %}"
                                 "{% for i in [1, 2, 3] if get()|int < 2 %}{% set ns.k = ns.k + 1 %}{% endfor %}"),
                    Contains("changing namespace 'ns', which the filter of a for loop still running reads"));
  CHECK_THROWS_WITH(render_jinja("{% set ns = namespace(k=0) %}{% set alias = ns %}"
                                 "{% for i in [1, 2] if i > ns.k %}{% set alias.k = 5 %}{% endfor %}"),
                    Contains("changing namespace 'alias'"));
  // A namespace the filter did not read may change (a filter's namespace read once the loop has ended, too).
  CHECK(render_jinja("{% set ns = namespace(k=0) %}{% set other = namespace(k=0) %}"
                     "{% for i in [1, 2, 3] if i > ns.k %}{% set other.k = other.k + i %}{% endfor %}"
                     "{% set ns.k = 9 %}{{ other.k }}{{ ns.k }}") == "69");
  CHECK_THROWS_WITH(render_jinja("{% include 'other.jinja' %}"), Contains("'include' tag"));
  CHECK_THROWS_WITH(render_jinja("{% call f() %}{% endcall %}"), Contains("'call' tag"));
  CHECK_THROWS_WITH(render_jinja("{{ strftime_now('%d %b %Y') }}"), Contains("strftime_now"));
  CHECK_THROWS_WITH(render_jinja("{% set xs = [1] %}{{ xs.append(2) }}"),
                    Contains("'append' of 'list' object is unsafe"));
  CHECK_THROWS_WITH(render_jinja("{{ 'a b'|wordcount }}"), Contains("'wordcount' filter"));
  CHECK_THROWS_WITH(render_jinja("{{ 'x {}'.format(1) }}"), Contains("str method 'format'"));
  CHECK_THROWS_WITH(render_jinja("{{ 'é'|upper }}"), Contains("U+00E9"));
  CHECK_THROWS_WITH(render_jinja("{% for i in [1] recursive %}{% endfor %}"), Contains("recursive"));
  CHECK_THROWS_WITH(render_jinja("{{ [1]|reverse }}"), Contains("printing a reversed object"));
  CHECK_THROWS_WITH(render_jinja("{{ 'a'|safe + '<b>' }}"), Contains("Markup"));
  CHECK_THROWS_WITH(render_jinja("{{ {'b': 1}|dictsort }}"), Contains("'dictsort' filter"));
}

// A macro's TypeErrors and its missing parameter name what jinja2's name (the fixture records its messages).
TEST_CASE("jinja macro errors say what jinja2 says", "[model][chat][jinja][errors]") {
  const jinja::Value context = jinja_value(jinja_cases()["error_context"]);
  int checked = 0;
  for (const auto& c : jinja_cases()["errors"]) {
    const std::string exception = c["exception"].get<std::string>(), message = c["message"].get<std::string>();
    if (c["name"].get<std::string>().rfind("macro", 0) != 0 ||
        (exception != "TypeError" && exception != "UndefinedError" && exception != "TemplateSyntaxError") ||
        message.find('\n') != std::string::npos || message.find("Jinja was looking") != std::string::npos ||
        message.find("can't assign to 'name'") != std::string::npos)  // jinja2 names its node type, vidlora the name
      continue;
    INFO("case '" << c["name"].get<std::string>() << "'");
    CHECK_THROWS_WITH(jinja::Template::parse(jinja_source(c)).render(context), Catch::Contains(message));
    ++checked;
  }
  CHECK(checked >= 6);
}

TEST_CASE("jinja errors name the line and column", "[model][chat][jinja][errors]") {
  using Catch::Contains;
  CHECK_THROWS_WITH(render_jinja("ok\n  {{ missing.attribute }}"),
                    Contains("line 2, column") && Contains("'missing' is undefined"));
  CHECK_THROWS_WITH(render_jinja("{% if x %}\n{% endfor %}"), Contains("line 2") && Contains("unknown tag 'endfor'"));
  CHECK_THROWS_WITH(render_jinja("{{ raise_exception('no system role') }}"),
                    Contains("chat template raised: no system role"));
}

TEST_CASE("jinja values built in C++ render as the same JSON context", "[model][chat][jinja]") {
  // The fixture's "llava_next_video_hf video_text generation prompt" context, spelled with the Value API.
  const jinja::Value messages = jinja::Value::list({jinja::Value{
      {"role", "user"},
      {"content", jinja::Value::list({jinja::Value{{"type", "video"}},
                                      jinja::Value{{"type", "text"}, {"text", "영상을 설명하세요."}}})}}});
  const jinja::Value context{
      {"messages", messages}, {"tools", nullptr}, {"documents", nullptr}, {"add_generation_prompt", true}};
  const auto& expected = jinja_case("llava_next_video_hf video_text generation prompt");
  const auto chat = jinja::Template::parse(jinja_source(expected));
  CHECK(chat.render(context) == expected["output"].get<std::string>());
  CHECK(chat.render(context) == chat.render(jinja_value(expected["context"])));  // a template renders repeatedly

  jinja::Value grown = context;
  grown.set("add_generation_prompt", false);
  CHECK(chat.render(grown) == jinja_case("llava_next_video_hf video_text")["output"].get<std::string>());
  CHECK(context.find("add_generation_prompt")->as_bool());  // copies do not share edits
}

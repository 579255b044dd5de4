#pragma once
// A Jinja2 subset interpreter for Hugging Face chat templates: renders a template byte for byte as transformers'
// apply_chat_template does (jinja2's ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks, loopcontrols and
// the {% generation %} tag; transformers' raise_exception, tojson, namespace and dict), so prompts are built without
// Python. The subset is what chat templates use: if/for/set/namespace, loop variables, macros defined at the top
// level (named parameters and defaults, as Qwen3-VL's render_content), the common filters, tests and str/dict
// methods, Python printing of values. Anything else (includes, {% call %}, a macro's varargs / kwargs / caller, other
// filters, case mapping of non-ASCII letters, ...) is a vidlora::Error naming the construct, never a silently
// different output.
// Checked against jinja2 by tests/model/test_jinja_template.cpp (fixture: tools/reference/jinja_chat_templates.py).

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/model/detail/jinja_renderer.hpp>
#include <vidlora/model/detail/jinja_syntax.hpp>
#include <vidlora/model/jinja_value.hpp>

namespace vidlora::model::jinja {

class Template {
 public:
  static Template parse(std::string_view source) {
    Template t;
    t.source_ = std::make_shared<const detail::Source>(source);
    try {
      detail::Parser parser(*t.source_, detail::Lexer(*t.source_).run());
      t.body_ = std::make_shared<const detail::Body>(parser.parse());
      t.root_undefined_ = std::make_shared<const std::vector<std::string>>(parser.root_undefined());
    } catch (const detail::EvalError& e) {  // invalid UTF-8 met by the lexer
      vidlora::fail("jinja template: {}", e.what());
    }
    return t;
  }

  // `context` is a dict of the template's variables (messages, add_generation_prompt, ...).
  std::string render(const Value& context) const {
    require(context.is_dict(), "jinja template: the render context must be a dict, got {}", detail::type_name(context));
    std::string out;
    detail::Renderer(*source_, context).render(*body_, *root_undefined_, out);
    return out;
  }

 private:
  std::shared_ptr<const detail::Source> source_;
  std::shared_ptr<const detail::Body> body_;
  std::shared_ptr<const std::vector<std::string>> root_undefined_;  // the names the top level starts undefined
};

}  // namespace vidlora::model::jinja

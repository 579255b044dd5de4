#pragma once
// The Jinja2 subset's evaluator: statements, expressions, filters, tests and globals over a parsed template, with
// jinja2's scoping. Internal to vidlora::model::jinja; include <vidlora/model.hpp>.

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/model/detail/jinja_python.hpp>
#include <vidlora/model/detail/jinja_syntax.hpp>
#include <vidlora/model/jinja_value.hpp>

namespace vidlora::model::jinja::detail {

// ---- evaluator ----------------------------------------------------------------------------------------------

using Kwargs = std::vector<std::pair<std::string, Value>>;

// Binds call arguments to a Python signature: `params` are the names after the operand, with defaults where optional.
inline std::vector<Value> bind_arguments(
    std::string_view function, std::initializer_list<std::pair<std::string_view, std::optional<Value>>> params,
    const Array& args, const Kwargs& kwargs) {
  if (args.size() > params.size())
    raise("TypeError: {}() takes at most {} arguments ({} given)", function, params.size(), args.size());
  std::vector<std::optional<Value>> bound(params.size());
  for (std::size_t k = 0; k < args.size(); ++k) bound[k] = args[k];
  for (const auto& kwarg : kwargs) {
    const std::string& key = kwarg.first;
    const Value& value = kwarg.second;
    auto it = std::find_if(params.begin(), params.end(), [&](const auto& p) { return p.first == key; });
    if (it == params.end()) raise("TypeError: {}() got an unexpected keyword argument '{}'", function, key);
    auto& slot = bound[static_cast<std::size_t>(it - params.begin())];
    if (slot) raise("TypeError: {}() got multiple values for argument '{}'", function, key);
    slot = value;
  }
  std::vector<Value> out;
  std::size_t k = 0;
  for (const auto& [name, fallback] : params) {
    if (!bound[k] && !fallback) raise("TypeError: {}() missing required argument '{}'", function, name);
    out.push_back(bound[k] ? *bound[k] : *fallback);
    ++k;
  }
  return out;
}

inline std::int64_t int_argument(const Value& v, std::string_view what) {
  if (!is_int_like(v)) raise("TypeError: {} must be an integer, not {}", what, type_name(v));
  return v.as_int();
}

// Python's int(str) and float(str) (ASCII digits only) return nullopt for what they reject.
// The stripped text, or nullopt when it holds a character of a script without digits (Hangul, CJK, ...); other
// non-ASCII characters may be Unicode digits, which Python accepts and this interpreter does not.
inline std::optional<std::string> stripped_ascii(std::string_view text) {
  const std::u32string cps = strip(decode(text), Value(nullptr), true, true);
  static constexpr std::pair<char32_t, char32_t> kNoDigits[] = {{0x80, 0x24F},    {0x1100, 0x11FF}, {0x2000, 0x206F},
                                                                {0x3000, 0x30FF}, {0x3130, 0x318F}, {0x3400, 0x4DBF},
                                                                {0x4E00, 0x9FFF}, {0xAC00, 0xD7AF}, {0x1F000, 0x1FAFF}};
  for (char32_t c : cps) {
    if (c < 0x80) continue;
    if (std::any_of(std::begin(kNoDigits), std::end(kNoDigits),
                    [c](const auto& r) { return c >= r.first && c <= r.second; }))
      return std::nullopt;
    raise("converting a string with the non-ASCII character U+{:04X} to a number is not supported",
          static_cast<std::uint32_t>(c));
  }
  return encode(cps);
}
inline std::optional<double> parse_python_float(std::string_view text) {
  const std::optional<std::string> ascii = stripped_ascii(text);
  if (!ascii) return std::nullopt;
  const std::string& s = *ascii;
  std::string clean;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '_') {
      if (i == 0 || i + 1 == s.size() || !std::isdigit(static_cast<unsigned char>(s[i - 1])) ||
          !std::isdigit(static_cast<unsigned char>(s[i + 1])))
        return std::nullopt;
      continue;
    }
    clean += static_cast<char>(std::tolower(static_cast<unsigned char>(s[i])));
  }
  std::string_view body = clean;
  const bool negative = !body.empty() && body[0] == '-';
  if (!body.empty() && (body[0] == '-' || body[0] == '+')) body.remove_prefix(1);
  if (body == "inf" || body == "infinity") return negative ? -HUGE_VAL : HUGE_VAL;
  if (body == "nan") return std::numeric_limits<double>::quiet_NaN();
  if (body.empty() || body[0] == '-' || body[0] == '+' ||
      body.find_first_not_of("0123456789.e+-") != std::string_view::npos)
    return std::nullopt;
  double value = 0;
  const auto [end, ec] = std::from_chars(body.data(), body.data() + body.size(), value);
  if (end != body.data() + body.size() || (ec != std::errc() && ec != std::errc::result_out_of_range))
    return std::nullopt;
  if (ec == std::errc::result_out_of_range)  // Python overflows to inf and underflows to 0
    value = body.find("e-") != std::string_view::npos ? 0.0 : HUGE_VAL;
  return negative ? -value : value;
}
inline std::optional<std::int64_t> parse_python_int(std::string_view text) {
  const std::optional<std::string> ascii = stripped_ascii(text);
  if (!ascii) return std::nullopt;
  const std::string& s = *ascii;
  std::string clean;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const bool digit = std::isdigit(static_cast<unsigned char>(s[i]));
    if (s[i] == '_' && i > 0 && i + 1 < s.size() && std::isdigit(static_cast<unsigned char>(s[i - 1])) &&
        std::isdigit(static_cast<unsigned char>(s[i + 1])))
      continue;
    if (!digit && !(i == 0 && (s[i] == '-' || s[i] == '+'))) return std::nullopt;
    if (s[i] != '+') clean += s[i];
  }
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(clean.data(), clean.data() + clean.size(), value);
  if (ec == std::errc::result_out_of_range) raise("integer out of the int64 range");
  if (ec != std::errc() || end != clean.data() + clean.size()) return std::nullopt;
  return value;
}

class Renderer {
 public:
  Renderer(const Source& source, const Value& context) : src_(source), context_(context) { scopes_.emplace_back(); }

  // root_undefined: Parser::root_undefined() of the template.
  void render(const Body& body, const std::vector<std::string>& root_undefined, std::string& out) {
    scopes_.front().undefined_first = &root_undefined;
    if (exec(body, out) != Flow::normal) src_.fail_at(0, "break or continue outside a loop");
  }

 private:
  enum class Flow { normal, break_, continue_ };
  // One jinja2 frame's variables, and the names it starts undefined (Node::undefined_first): a lookup reaching this
  // frame finds them Undefined until the frame stores them, instead of going on to the enclosing frames and the
  // context.
  struct Scope {
    std::map<std::string, Value, std::less<>> vars;
    const std::vector<std::string>* undefined_first = nullptr;
    Value& operator[](const std::string& name) { return vars[name]; }
  };

  const Source& src_;
  const Value& context_;
  std::vector<Scope> scopes_;
  std::vector<const Node*> macros_;  // a macro value's index: its definition (the template's tree outlives the render)
  int macro_depth_ = 0;
  // A filtered for loop filters its items before its body runs, where jinja2 filters between iterations: the same
  // unless the filter and the body touch one namespace. So a namespace change while a filter runs, and a change to a
  // namespace the filter of a loop still running read, are refused (through a macro or another name included).
  int filtering_ = 0;
  std::vector<std::vector<const Object*>> filter_reads_;  // per filtered loop: the namespaces its filter read
  void note_namespace_read(const Value& obj) {
    if (filtering_ > 0 && obj.kind() == Value::Kind::namespace_object)
      filter_reads_.back().push_back(obj.attributes().get());
  }
  static constexpr int kMaxMacroDepth = 100;  // nested macro calls (jinja2 stops at Python's recursion limit)

  // A macro call's scopes, as jinja2's closures see them: the template's top level (live: what it holds when the
  // macro runs, not when it was defined) and the call's own frame, never the caller's loops and blocks. Restores the
  // caller's scopes when the call ends, or fails.
  struct MacroScopes {
    std::vector<Scope>& scopes;
    std::vector<Scope> caller;
    int& depth;
    MacroScopes(std::vector<Scope>& s, Scope frame, int& d) : scopes(s), depth(d) {
      caller.swap(scopes);
      scopes.push_back(std::move(caller.front()));
      scopes.push_back(std::move(frame));
      ++depth;
    }
    ~MacroScopes() {
      caller.front() = std::move(scopes.front());
      scopes.swap(caller);
      --depth;
    }
  };

  struct ScopeGuard {
    std::vector<Scope>& scopes;
    explicit ScopeGuard(std::vector<Scope>& s, const std::vector<std::string>* undefined_first = nullptr) : scopes(s) {
      scopes.emplace_back().undefined_first = undefined_first;
    }
    ~ScopeGuard() { scopes.pop_back(); }
  };

  Value lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      if (auto found = it->vars.find(name); found != it->vars.end()) return found->second;
      if (it->undefined_first &&
          std::find(it->undefined_first->begin(), it->undefined_first->end(), name) != it->undefined_first->end())
        return Value::undefined(fmt::format("'{}' is undefined", name));
    }
    if (const Value* v = context_.find(name)) return *v;
    if (one_of(name, {"range", "dict", "namespace", "raise_exception", "strftime_now", "lipsum", "cycler", "joiner"}))
      return Value::callable(name);
    return Value::undefined(fmt::format("'{}' is undefined", name));
  }
  void assign(const std::vector<std::string>& targets, const Value& value) {
    if (targets.size() == 1) {
      scopes_.back()[targets[0]] = value;
      return;
    }
    const Array items = iterate(value);
    if (items.size() != targets.size())
      raise("ValueError: {} values to unpack (expected {}, got {})",
            items.size() > targets.size() ? "too many" : "not enough", targets.size(), items.size());
    for (std::size_t k = 0; k < targets.size(); ++k) scopes_.back()[targets[k]] = items[k];
  }

  Flow exec(const Body& body, std::string& out) {
    for (const Node& node : body) {
      try {
        if (const Flow flow = exec(node, out); flow != Flow::normal) return flow;
      } catch (const EvalError& e) {
        src_.fail_at(node.pos, e.what());
      }
    }
    return Flow::normal;
  }

  Flow exec(const Node& node, std::string& out) {
    switch (node.kind) {
      case Node::Kind::text: out += node.text; break;
      case Node::Kind::output: out += to_str(eval(*node.expr)); break;
      case Node::Kind::if_:
        for (const auto& [test, body] : node.branches)
          if (truthy(eval(*test))) return exec(body, out);
        return exec(node.else_body, out);
      case Node::Kind::for_: return exec_for(node, out);
      case Node::Kind::set: assign(node.targets, eval(*node.expr)); break;
      case Node::Kind::set_attribute: {
        const Value ns = lookup(node.text);
        if (ns.kind() != Value::Kind::namespace_object)
          raise("TemplateRuntimeError: cannot assign attribute on non-namespace object '{}'", node.text);
        if (node.attribute.starts_with("_"))
          raise("SecurityError: chat templates cannot store underscore-prefixed attributes on a namespace");
        if (filtering_ > 0)
          raise(
              "a for-loop filter that changes namespace '{}' is not supported (this interpreter filters the items "
              "before the loop runs, jinja2 between iterations)",
              node.text);
        for (const auto& reads : filter_reads_)
          if (std::find(reads.begin(), reads.end(), ns.attributes().get()) != reads.end())
            raise(
                "changing namespace '{}', which the filter of a for loop still running reads, is not supported (this "
                "interpreter filters the items before the loop runs, jinja2 between iterations)",
                node.text);
        set_attribute(*ns.attributes(), node.attribute, eval(*node.expr));
        break;
      }
      case Node::Kind::set_block: {  // the body has its own scope; a break in it leaves the loop unassigned
        std::string captured;
        Flow flow;
        {
          ScopeGuard scope(scopes_, &node.undefined_first);
          flow = exec(node.body, captured);
        }
        if (flow != Flow::normal) return flow;
        assign(node.targets, Value(std::move(captured)));
        break;
      }
      case Node::Kind::break_: return Flow::break_;
      case Node::Kind::continue_: return Flow::continue_;
      case Node::Kind::generation: {
        ScopeGuard scope(scopes_, &node.undefined_first);
        exec(node.body, out);
        break;
      }
      case Node::Kind::macro:
        if (scopes_.size() != 1)
          raise(
              "macro '{}' is defined inside a for loop, a macro or a {{% set %}} / {{% generation %}} block, which "
              "this jinja subset does not support (define it at the template's top level)",
              node.text);
        macros_.push_back(&node);
        scopes_.back()[node.text] = Value::callable(
            "macro", Value::tuple({Value(static_cast<std::int64_t>(macros_.size() - 1)), Value(node.text)}));
        break;
    }
    return Flow::normal;
  }

  // jinja2's Macro.__call__: positional arguments fill the parameters in order, keywords only the ones after them
  // (a keyword left over is an error before too many positional ones), a missing parameter takes its default,
  // evaluated in the macro's scope after every given one is bound, or is undefined; the body's output is the value.
  Value call_macro(const Node& m, const Array& args, const Kwargs& kwargs) {
    const std::vector<std::string>& params = m.targets;
    Scope frame;
    std::vector<bool> given(params.size(), false), used(kwargs.size(), false);
    for (std::size_t k = 0; k < std::min(args.size(), params.size()); ++k) {
      frame[params[k]] = args[k];
      given[k] = true;
    }
    for (std::size_t k = args.size(); k < params.size(); ++k)
      for (std::size_t j = 0; j < kwargs.size(); ++j)
        if (!used[j] && kwargs[j].first == params[k]) {
          frame[params[k]] = kwargs[j].second;
          given[k] = used[j] = true;
          break;
        }
    for (std::size_t j = 0; j < kwargs.size(); ++j)
      if (!used[j]) raise("TypeError: macro '{}' takes no keyword argument '{}'", m.text, kwargs[j].first);
    if (args.size() > params.size())
      raise("TypeError: macro '{}' takes not more than {} argument(s)", m.text, params.size());
    if (macro_depth_ >= kMaxMacroDepth)
      raise("RecursionError: macro '{}' called more than {} macro calls deep", m.text, kMaxMacroDepth);
    // A default reads the parameters before it (as bound by then) and none after it or itself: those are undefined
    // until their turn, as in jinja2's compiled macro, never the top level's or the context's value of that name.
    for (std::size_t k = 0; k < params.size(); ++k)
      if (!given[k]) frame[params[k]] = Value::undefined(fmt::format("'{}' is undefined", params[k]));
    frame.undefined_first = &m.undefined_first;
    MacroScopes scope(scopes_, std::move(frame), macro_depth_);
    const std::size_t first_default = params.size() - m.defaults.size();
    for (std::size_t k = 0; k < params.size(); ++k)
      if (!given[k])
        scopes_.back()[params[k]] = k >= first_default
                                        ? eval(*m.defaults[k - first_default])
                                        : Value::undefined(fmt::format("parameter '{}' was not provided", params[k]));
    std::string out;
    exec(m.body, out);  // the parser keeps break and continue inside the body's own loops
    return Value(std::move(out));
  }

  static void set_attribute(Object& attrs, const std::string& name, Value value) {
    for (auto& [key, v] : attrs)
      if (key.as_string() == name) {
        v = std::move(value);
        return;
      }
    attrs.emplace_back(Value(name), std::move(value));
  }

  Flow exec_for(const Node& node, std::string& out) {
    Array items = iterate(eval(*node.expr));
    struct FilterReads {  // the namespaces this loop's filter read, kept while its body runs
      std::vector<std::vector<const Object*>>* reads = nullptr;
      ~FilterReads() {
        if (reads) reads->pop_back();
      }
    } filter_reads;
    if (node.filter) {
      filter_reads_.emplace_back();
      filter_reads.reads = &filter_reads_;
      Array kept;
      for (const Value& item : items) {
        ScopeGuard scope(scopes_);
        assign(node.targets, item);
        ++filtering_;
        const bool keep = truthy(eval(*node.filter));
        --filtering_;
        if (keep) kept.push_back(item);
      }
      items = std::move(kept);
    }
    // jinja2 runs the else block unless some iteration reached the end of the body (break and continue skip it).
    bool completed = false;
    const auto n = static_cast<std::int64_t>(items.size());
    for (std::int64_t k = 0; k < n; ++k) {
      ScopeGuard scope(scopes_, &node.undefined_first);
      const auto at = static_cast<std::size_t>(k);
      Value loop = Value::make_namespace(
          {{Value("index"), Value(k + 1)},
           {Value("index0"), Value(k)},
           {Value("revindex"), Value(n - k)},
           {Value("revindex0"), Value(n - k - 1)},
           {Value("first"), Value(k == 0)},
           {Value("last"), Value(k == n - 1)},
           {Value("length"), Value(n)},
           {Value("depth"), Value(1)},
           {Value("depth0"), Value(0)},
           {Value("previtem"), k > 0 ? items[at - 1] : Value::undefined("there is no previous item")},
           {Value("nextitem"), k + 1 < n ? items[at + 1] : Value::undefined("there is no next item")}},
          Value::Kind::loop);
      loop.attributes()->emplace_back(Value("cycle"), Value::callable("loop.cycle", Value(k)));
      assign(node.targets, items[at]);
      scopes_.back()["loop"] = loop;
      const Flow flow = exec(node.body, out);
      if (flow == Flow::break_) break;
      completed = completed || flow == Flow::normal;
    }
    if (completed) return Flow::normal;
    ScopeGuard scope(scopes_, &node.else_undefined_first);
    return exec(node.else_body, out);  // a break here leaves the enclosing loop
  }

  Value eval(const Expr& e) {
    try {
      return eval_inner(e);
    } catch (const EvalError& error) {
      src_.fail_at(e.pos, error.what());
    }
  }

  Value eval_inner(const Expr& e) {
    switch (e.op) {
      case Expr::Op::constant: return e.value;
      case Expr::Op::name: return lookup(e.name);
      case Expr::Op::list:
      case Expr::Op::tuple: {
        Array items;
        for (const auto& a : e.args) items.push_back(eval(*a));
        return Value::sequence(e.op == Expr::Op::list ? Value::Kind::list : Value::Kind::tuple, std::move(items));
      }
      case Expr::Op::dict: {
        Object entries;
        for (std::size_t k = 0; k < e.args.size(); k += 2) {
          Value key = eval(*e.args[k]);
          if (!hashable(key)) raise("TypeError: unhashable type: '{}'", type_name(key));
          Value value = eval(*e.args[k + 1]);
          auto it = std::find_if(entries.begin(), entries.end(), [&](const auto& p) { return equals(p.first, key); });
          if (it != entries.end())
            it->second = std::move(value);
          else
            entries.emplace_back(std::move(key), std::move(value));
        }
        return Value::dict(std::move(entries));
      }
      case Expr::Op::getattr: {
        const Value obj = eval(*e.args[0]);
        note_namespace_read(obj);
        return get_attribute(obj, e.name);
      }
      case Expr::Op::getitem: {
        const Value obj = eval(*e.args[0]);
        note_namespace_read(obj);
        if (obj.is_markup()) raise("subscripting a |safe or |escape (Markup) string is not supported");
        if (e.args[1]->op == Expr::Op::slice) return slice(obj, *e.args[1]);
        return get_item(obj, eval(*e.args[1]));
      }
      case Expr::Op::slice: raise("a slice outside of a subscript");
      case Expr::Op::call: {
        const Value callee = eval(*e.args[0]);
        const auto [args, kwargs] = arguments(e);
        return call(callee, args, kwargs);
      }
      case Expr::Op::filter: {
        const Value operand = eval(*e.args[0]);
        const auto [args, kwargs] = arguments(e);
        return apply_filter(e.name, operand, args, kwargs);
      }
      case Expr::Op::test: {
        const Value operand = eval(*e.args[0]);
        const auto [args, kwargs] = arguments(e);
        return Value(apply_test(e.name, operand, args, kwargs));
      }
      case Expr::Op::cond:
        if (truthy(eval(*e.args[0]))) return eval(*e.args[1]);
        return e.args.size() > 2 ? eval(*e.args[2]) : Value::undefined("the conditional expression has no else branch");
      case Expr::Op::and_: {
        Value left = eval(*e.args[0]);
        return truthy(left) ? eval(*e.args[1]) : left;
      }
      case Expr::Op::or_: {
        Value left = eval(*e.args[0]);
        return truthy(left) ? left : eval(*e.args[1]);
      }
      case Expr::Op::not_: return Value(!truthy(eval(*e.args[0])));
      case Expr::Op::neg:
      case Expr::Op::pos: {
        const Value v = eval(*e.args[0]);
        if (v.is_undefined()) undefined_error(v);
        if (!v.is_number())
          raise("TypeError: bad operand type for unary {}: '{}'", e.op == Expr::Op::neg ? '-' : '+', type_name(v));
        if (e.op == Expr::Op::pos) return v.kind() == Value::Kind::floating ? v : Value(v.as_int());
        if (v.kind() == Value::Kind::floating) return Value(-v.as_double());
        return binary("-", Value(0), Value(v.as_int()));
      }
      case Expr::Op::binary: return binary(e.name, eval(*e.args[0]), eval(*e.args[1]));
      case Expr::Op::compare: {
        Value left = eval(*e.args[0]);
        for (std::size_t k = 0; k < e.ops.size(); ++k) {
          Value right = eval(*e.args[k + 1]);
          if (!compare(e.ops[k], left, right)) return Value(false);
          left = std::move(right);
        }
        return Value(true);
      }
      case Expr::Op::concat: {
        std::string out;
        for (const auto& a : e.args) out += to_str(eval(*a));
        return Value(std::move(out));
      }
    }
    raise("unknown expression");
  }

  static bool compare(std::string_view op, const Value& a, const Value& b) {
    if (op == "==") return equals(a, b);
    if (op == "!=") return !equals(a, b);
    if (op == "<") return less(a, b);
    if (op == ">") return less(b, a);
    if (op == "<=") return less(a, b) || equals(a, b);
    if (op == ">=") return less(b, a) || equals(a, b);
    if (op == "in") return contains(b, a);
    return !contains(b, a);  // not in
  }

  std::pair<Array, Kwargs> arguments(const Expr& e) {
    Array args;
    for (std::size_t k = 1; k < e.args.size(); ++k) args.push_back(eval(*e.args[k]));
    Kwargs kwargs;
    for (const auto& [key, value] : e.kwargs) kwargs.emplace_back(key, eval(*value));
    return {std::move(args), std::move(kwargs)};
  }

  Value slice(const Value& obj, const Expr& s) {
    Value parts[3];
    for (int k = 0; k < 3; ++k)
      parts[k] = s.args[static_cast<std::size_t>(k)] ? eval(*s.args[static_cast<std::size_t>(k)]) : Value(nullptr);
    if (obj.is_undefined()) undefined_error(obj);
    if (obj.is_string()) {
      const std::u32string cps = decode(obj.as_string());
      std::u32string out;
      for (std::size_t i : slice_indices(static_cast<std::int64_t>(cps.size()), parts[0], parts[1], parts[2]))
        out += cps[i];
      return Value(encode(out));
    }
    if (obj.kind() != Value::Kind::list && obj.kind() != Value::Kind::tuple)
      raise("slicing a {} object is not supported", type_name(obj));
    Array out;
    for (std::size_t i : slice_indices(static_cast<std::int64_t>(obj.items().size()), parts[0], parts[1], parts[2]))
      out.push_back(obj.items()[i]);
    return Value::sequence(obj.kind(), std::move(out));
  }

  // ---- calls: globals and methods ----

  static Object dict_arguments(std::string_view function, const Array& args, const Kwargs& kwargs) {
    Object out;
    if (args.size() > 1) raise("TypeError: {} expected at most 1 argument, got {}", function, args.size());
    if (!args.empty()) {
      if (args[0].is_dict())
        out = args[0].entries();
      else if (args[0].kind() == Value::Kind::namespace_object)
        out = *args[0].attributes();
      else
        raise("{}() from a {} is not supported (only from a dict)", function, type_name(args[0]));
    }
    for (const auto& kwarg : kwargs) {
      const std::string& key = kwarg.first;
      const Value& value = kwarg.second;
      auto it = std::find_if(out.begin(), out.end(), [&](const auto& p) { return equals(p.first, Value(key)); });
      if (it != out.end())
        it->second = value;
      else
        out.emplace_back(Value(key), value);
    }
    return out;
  }

  Value call(const Value& callee, const Array& args, const Kwargs& kwargs) {
    if (callee.is_undefined()) undefined_error(callee);
    if (callee.kind() != Value::Kind::callable) raise("TypeError: '{}' object is not callable", type_name(callee));
    const std::string& name = callee.as_string();
    const Value& self = callee.self();
    if (name == "raise_exception") {
      const auto bound = bind_arguments(name, {{"message", std::nullopt}}, args, kwargs);
      raise("chat template raised: {}", to_str(bound[0]));
    }
    if (name == "namespace") {
      Object attrs = dict_arguments(name, args, kwargs);
      for (const auto& [key, value] : attrs)
        if (key.is_string() && key.as_string().starts_with("_"))
          raise("SecurityError: chat templates cannot store underscore-prefixed attributes on a namespace");
      return Value::make_namespace(std::move(attrs));
    }
    if (name == "macro") return call_macro(*macros_[static_cast<std::size_t>(self.items()[0].as_int())], args, kwargs);
    if (name == "dict") return Value::dict(dict_arguments(name, args, kwargs));
    if (name == "range") return make_range(args, kwargs);
    if (name == "loop.cycle") {
      if (args.empty()) raise("TypeError: no items for cycling given");
      return args[static_cast<std::size_t>(self.as_int()) % args.size()];
    }
    if (name == "strftime_now") raise("strftime_now() is not supported (its output depends on the clock)");
    if (name.starts_with("str.")) {
      if (self.is_markup()) raise("methods of a |safe or |escape (Markup) string are not supported");
      return call_str_method(name.substr(4), self.as_string(), args, kwargs);
    }
    if (name == "dict.get") {
      if (!kwargs.empty()) raise("TypeError: dict.get() takes no keyword arguments");
      if (args.empty() || args.size() > 2) raise("TypeError: get expected 1 or 2 arguments, got {}", args.size());
      if (!hashable(args[0])) raise("TypeError: unhashable type: '{}'", type_name(args[0]));
      for (const auto& [k, v] : self.entries())
        if (equals(k, args[0])) return v;
      return args.size() > 1 ? args[1] : Value(nullptr);
    }
    if (name == "sequence.count" || name == "sequence.index") {
      if (!kwargs.empty() || args.size() != 1) raise("TypeError: {}() takes exactly one argument", name.substr(9));
      const auto& items = self.items();
      if (name == "sequence.count")
        return Value(std::count_if(items.begin(), items.end(), [&](const Value& x) { return equals(x, args[0]); }));
      const auto it = std::find_if(items.begin(), items.end(), [&](const Value& x) { return equals(x, args[0]); });
      if (it == items.end()) raise("ValueError: {} is not in {}", repr(args[0]), type_name(self));
      return Value(it - items.begin());
    }
    if (name == "dict.items" || name == "dict.keys" || name == "dict.values") {
      if (!args.empty() || !kwargs.empty()) raise("TypeError: {}() takes no arguments", name);
      Array items;
      for (const auto& [k, v] : self.entries())
        items.push_back(name == "dict.items" ? Value::tuple({k, v}) : name == "dict.keys" ? k : v);
      return Value::sequence(Value::Kind::dict_view, std::move(items), "dict_" + name.substr(5));
    }
    raise("{}() is not supported by this jinja subset", name);
  }

  static Value make_range(const Array& args, const Kwargs& kwargs) {
    if (!kwargs.empty() || args.empty() || args.size() > 3) raise("TypeError: range expected 1 to 3 integer arguments");
    std::int64_t start = 0, stop = 0, step = 1;
    if (args.size() == 1) {
      stop = int_argument(args[0], "range() argument");
    } else {
      start = int_argument(args[0], "range() argument");
      stop = int_argument(args[1], "range() argument");
      if (args.size() == 3) step = int_argument(args[2], "range() argument");
    }
    if (step == 0) raise("ValueError: range() arg 3 must not be zero");
    Array items;
    for (std::int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (items.size() >= 100000)
        raise("OverflowError: Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
      items.emplace_back(i);
    }
    return Value::range(start, stop, step, std::move(items));
  }

  static Value call_str_method(const std::string& method, const std::string& s, const Array& args,
                               const Kwargs& kwargs) {
    const std::string fn = "str." + method;
    if (method == "split") {
      const auto bound = bind_arguments(fn, {{"sep", Value(nullptr)}, {"maxsplit", Value(-1)}}, args, kwargs);
      return split(s, bound[0], int_argument(bound[1], "maxsplit"));
    }
    if (!kwargs.empty()) raise("TypeError: {}() takes no keyword arguments", fn);
    const auto arity = [&](std::size_t lo, std::size_t hi) {
      if (args.size() < lo || args.size() > hi)
        raise("TypeError: {}() takes {} to {} arguments ({} given)", fn, lo, hi, args.size());
    };
    const auto str_arg = [&](std::size_t k) -> const std::string& {
      if (!args[k].is_string()) raise("TypeError: {}() argument must be str, not {}", fn, type_name(args[k]));
      return args[k].as_string();
    };
    if (method == "upper" || method == "lower" || method == "title" || method == "capitalize") {
      arity(0, 0);
      if (method == "upper") return Value(map_case(s, to_upper));
      if (method == "lower") return Value(map_case(s, to_lower));
      return Value(method == "title" ? python_title(s) : capitalize(s));
    }
    if (method == "strip" || method == "lstrip" || method == "rstrip") {
      arity(0, 1);
      return Value(
          encode(strip(decode(s), args.empty() ? Value(nullptr) : args[0], method != "rstrip", method != "lstrip")));
    }
    if (method == "startswith" || method == "endswith") {
      arity(1, 1);
      Array candidates = args[0].kind() == Value::Kind::tuple ? args[0].items() : Array{args[0]};
      for (const Value& c : candidates) {
        if (!c.is_string())
          raise("TypeError: {} first arg must be str or a tuple of str, not {}", method, type_name(c));
        if (method == "startswith" ? s.starts_with(c.as_string()) : s.ends_with(c.as_string())) return Value(true);
      }
      return Value(false);
    }
    if (method == "replace") {
      arity(2, 3);
      return Value(replace(s, str_arg(0), str_arg(1), args.size() > 2 ? int_argument(args[2], "count") : -1));
    }
    if (method == "join") {
      arity(1, 1);
      std::string out;
      const Array items = iterate(args[0]);
      for (std::size_t k = 0; k < items.size(); ++k) {
        if (!items[k].is_string())
          raise("TypeError: sequence item {}: expected str instance, {} found", k, type_name(items[k]));
        out += (k ? s : "") + items[k].as_string();
      }
      return Value(std::move(out));
    }
    if (method == "find" || method == "count") {
      arity(1, 1);
      const std::string& sub = str_arg(0);
      if (method == "find") {
        const std::size_t hit = s.find(sub);
        return Value(hit == std::string::npos ? std::int64_t{-1}
                                              : static_cast<std::int64_t>(decode(s.substr(0, hit)).size()));
      }
      if (sub.empty()) return Value(static_cast<std::int64_t>(decode(s).size()) + 1);
      std::int64_t n = 0;
      for (std::size_t at = s.find(sub); at != std::string::npos; at = s.find(sub, at + sub.size())) ++n;
      return Value(n);
    }
    raise("the str method '{}' is not supported by this jinja subset", method);
  }

  // ---- filters ----

  // jinja2's make_attrgetter: "a.b.0" looks up each part with getitem (digits as integers).
  static Value attribute_of(Value item, const Value& attribute, const Value& fallback = Value()) {
    if (is_int_like(attribute)) {
      item = get_item(item, attribute);
    } else {
      if (!attribute.is_string()) raise("TypeError: attribute must be a string or an integer");
      const Value parts = split(attribute.as_string(), Value("."), -1);
      for (const Value& part : parts.items()) {
        const std::string& p = part.as_string();
        const bool digits = !p.empty() && std::all_of(p.begin(), p.end(), [](char c) { return c >= '0' && c <= '9'; });
        item = get_item(item, digits ? Value(*parse_python_int(p)) : part);
      }
    }
    if (item.is_undefined() && !fallback.is_undefined()) return fallback;
    return item;
  }
  static Value ignore_case(const Value& v) { return v.is_string() ? Value(map_case(v.as_string(), to_lower)) : v; }

  Value apply_filter(const std::string& name, const Value& v, const Array& args, const Kwargs& kwargs) {
    const auto params = [&](std::initializer_list<std::pair<std::string_view, std::optional<Value>>> p) {
      return bind_arguments(name, p, args, kwargs);
    };
    if (name == "length" || name == "count") return params({}), Value(length(v));
    if (v.is_markup() && !one_of(name, {"length", "count", "default", "d", "string", "safe", "e", "escape", "tojson",
                                        "list", "first", "last", "join", "replace", "int", "float"}))
      raise("the '{}' filter on a |safe or |escape (Markup) string is not supported", name);
    if (name == "string") return params({}), v.is_markup() ? v : Value(to_str(v));
    if (name == "safe") return params({}), Value::markup(to_str(v));
    if (name == "upper" || name == "lower")
      return params({}), Value(map_case(to_str(v), name == "upper" ? to_upper : to_lower));
    if (name == "capitalize") return params({}), Value(capitalize(to_str(v)));
    if (name == "title") {
      params({});
      std::u32string cps = decode(to_str(v));
      const auto boundary = [](char32_t c) {
        return is_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
      };
      for (std::size_t k = 0; k < cps.size(); ++k)
        cps[k] = (k == 0 || boundary(cps[k - 1])) && !boundary(cps[k]) ? to_upper(cps[k]) : to_lower(cps[k]);
      return Value(encode(cps));
    }
    if (name == "trim") {
      const auto a = params({{"chars", Value(nullptr)}});
      return Value(encode(strip(decode(to_str(v)), a[0], true, true)));
    }
    if (name == "default" || name == "d") {
      const auto a = params({{"default_value", Value("")}, {"boolean", Value(false)}});
      return v.is_undefined() || (truthy(a[1]) && !truthy(v)) ? a[0] : v;
    }
    if (name == "first" || name == "last") {
      params({});
      if (name == "first" && v.kind() == Value::Kind::iterator) {
        std::size_t& pos = *v.iterator_position();
        return pos < v.items().size() ? v.items()[pos++] : Value::undefined("no first item, sequence was empty");
      }
      if (name == "last" && v.kind() == Value::Kind::iterator)
        raise("TypeError: '{}' object is not reversible", type_name(v));
      const Array items = iterate(v);
      if (items.empty()) return Value::undefined(fmt::format("no {} item, sequence was empty", name));
      return name == "first" ? items.front() : items.back();
    }
    if (name == "join") {
      const auto a = params({{"d", Value("")}, {"attribute", Value(nullptr)}});
      std::string out;
      const std::string separator = to_str(a[0]);
      const Array items = iterate(v);
      for (std::size_t k = 0; k < items.size(); ++k)
        out += (k ? separator : "") + to_str(a[1].is_none() ? items[k] : attribute_of(items[k], a[1]));
      return Value(std::move(out));
    }
    if (name == "replace") {
      const auto a = params({{"old", std::nullopt}, {"new", std::nullopt}, {"count", Value(nullptr)}});
      return Value(replace(to_str(v), to_str(a[0]), to_str(a[1]), a[2].is_none() ? -1 : int_argument(a[2], "count")));
    }
    if (name == "list") return params({}), Value::list(iterate(v));
    if (name == "int") {
      const auto a = params({{"default", Value(0)}, {"base", Value(10)}});
      if (v.is_undefined()) undefined_error(v);
      if (v.is_string() && int_argument(a[1], "base") != 10) raise("the int filter supports base 10 only");
      if (is_int_like(v)) return Value(v.as_int());
      std::optional<double> d;
      if (v.is_string()) {
        if (auto i = parse_python_int(v.as_string())) return Value(*i);
        d = parse_python_float(v.as_string());
      } else if (v.kind() == Value::Kind::floating) {
        d = v.as_double();
      }
      if (!d || !std::isfinite(*d)) return a[0];
      if (std::abs(*d) >= 9.2e18) raise("integer out of the int64 range");
      return Value(static_cast<std::int64_t>(std::trunc(*d)));
    }
    if (name == "float") {
      const auto a = params({{"default", Value(0.0)}});
      if (v.is_undefined()) undefined_error(v);
      if (v.is_number()) return Value(v.as_double());
      if (v.is_string())
        if (auto d = parse_python_float(v.as_string())) return Value(*d);
      return a[0];
    }
    if (name == "abs") {
      params({});
      if (v.is_undefined()) undefined_error(v);
      if (v.kind() == Value::Kind::floating) return Value(std::abs(v.as_double()));
      if (is_int_like(v)) return v.as_int() < 0 ? binary("-", Value(0), Value(v.as_int())) : Value(v.as_int());
      raise("TypeError: bad operand type for abs(): '{}'", type_name(v));
    }
    if (name == "reverse") {
      params({});
      if (v.is_string()) {
        std::u32string cps = decode(v.as_string());
        std::reverse(cps.begin(), cps.end());
        return Value(encode(cps));
      }
      if (v.kind() == Value::Kind::iterator) {
        Array items = iterate(v);
        std::reverse(items.begin(), items.end());
        return Value::list(std::move(items));
      }
      if (v.is_none() || v.is_number() || v.kind() == Value::Kind::namespace_object || v.kind() == Value::Kind::loop ||
          v.kind() == Value::Kind::callable)
        raise("FilterArgumentError: argument must be iterable");
      Array items = iterate(v);
      std::reverse(items.begin(), items.end());
      return Value::iterator(std::move(items), "reversed");
    }
    if (name == "sort") {
      const auto a =
          params({{"reverse", Value(false)}, {"case_sensitive", Value(false)}, {"attribute", Value(nullptr)}});
      Array items = iterate(v);
      std::vector<std::pair<Value, std::size_t>> keyed;
      for (std::size_t k = 0; k < items.size(); ++k) {
        Array keys;
        if (a[2].is_none()) {
          keys.push_back(items[k]);
        } else if (a[2].is_string()) {
          const Value parts = split(a[2].as_string(), Value(","), -1);
          for (const Value& part : parts.items()) keys.push_back(attribute_of(items[k], part));
        } else {
          keys.push_back(attribute_of(items[k], a[2]));
        }
        for (Value& key : keys) key = truthy(a[1]) ? key : ignore_case(key);
        keyed.emplace_back(keys.size() == 1 ? keys[0] : Value::tuple(std::move(keys)), k);
      }
      const bool descending = truthy(a[0]);
      std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
        return descending ? less(y.first, x.first) : less(x.first, y.first);
      });
      Array out;
      for (const auto& [key, k] : keyed) out.push_back(items[k]);
      return Value::list(std::move(out));
    }
    if (name == "unique") {
      const auto a = params({{"case_sensitive", Value(false)}, {"attribute", Value(nullptr)}});
      Array seen, out;
      for (const Value& item : iterate(v)) {
        Value key = a[1].is_none() ? item : attribute_of(item, a[1]);
        if (!truthy(a[0])) key = ignore_case(key);
        if (!hashable(key)) raise("TypeError: unhashable type: '{}'", type_name(key));
        if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return equals(s, key); })) {
          seen.push_back(key);
          out.push_back(item);
        }
      }
      return Value::iterator(std::move(out), "generator");
    }
    if (name == "items") {
      params({});
      if (v.is_undefined()) return Value::iterator({}, "generator");
      if (!v.is_dict()) raise("TypeError: Can only get item pairs from a mapping.");
      Array out;
      for (const auto& [k, x] : v.entries()) out.push_back(Value::tuple({k, x}));
      return Value::iterator(std::move(out), "generator");
    }
    if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
      const bool by_attribute = name.ends_with("attr");
      if (by_attribute && args.empty()) raise("FilterArgumentError: Missing parameter for attribute name");
      Array out;
      if (truthy(v)) {
        const std::size_t test_at = by_attribute ? 1 : 0;
        const Array test_args(args.begin() + static_cast<std::ptrdiff_t>(std::min(args.size(), test_at + 1)),
                              args.end());
        for (const Value& item : iterate(v)) {
          const Value subject = by_attribute ? attribute_of(item, args[0]) : item;
          bool ok =
              args.size() > test_at ? apply_test(to_str(args[test_at]), subject, test_args, kwargs) : truthy(subject);
          if (ok == name.starts_with("select")) out.push_back(item);
        }
      }
      return Value::iterator(std::move(out), "generator");
    }
    if (name == "map") {
      Array out;
      if (truthy(v)) {
        const auto attribute =
            std::find_if(kwargs.begin(), kwargs.end(), [](const auto& p) { return p.first == "attribute"; });
        if (args.empty() && attribute != kwargs.end()) {
          Value fallback;
          for (const auto& [key, value] : kwargs) {
            if (key == "default")
              fallback = value;
            else if (key != "attribute")
              raise("FilterArgumentError: Unexpected keyword argument '{}'", key);
          }
          for (const Value& item : iterate(v)) out.push_back(attribute_of(item, attribute->second, fallback));
        } else {
          if (args.empty()) raise("FilterArgumentError: map requires a filter argument");
          const std::string filter = to_str(args[0]);
          if (!is_jinja_filter(filter)) raise("TemplateRuntimeError: No filter named '{}'.", filter);
          const Array rest(args.begin() + 1, args.end());
          for (const Value& item : iterate(v)) out.push_back(apply_filter(filter, item, rest, kwargs));
        }
      }
      return Value::iterator(std::move(out), "generator");
    }
    if (name == "attr") {
      const auto a = params({{"name", std::nullopt}});
      if (!a[0].is_string()) raise("TypeError: attribute name must be a string");
      if (auto found = python_attribute(v, a[0].as_string())) return *found;
      return missing(v, a[0]);
    }
    if (name == "escape" || name == "e") {
      params({});
      if (v.is_markup()) return v;
      std::string out;
      for (char c : to_str(v)) {
        switch (c) {
          case '&': out += "&amp;"; break;
          case '<': out += "&lt;"; break;
          case '>': out += "&gt;"; break;
          case '"': out += "&#34;"; break;
          case '\'': out += "&#39;"; break;
          default: out += c;
        }
      }
      return Value::markup(std::move(out));
    }
    if (name == "tojson") {
      const auto a = params({{"ensure_ascii", Value(false)},
                             {"indent", Value(nullptr)},
                             {"separators", Value(nullptr)},
                             {"sort_keys", Value(false)}});
      JsonOptions options;
      options.ensure_ascii = truthy(a[0]);
      if (is_int_like(a[1]))
        options.indent = std::string(static_cast<std::size_t>(std::max<std::int64_t>(0, a[1].as_int())), ' ');
      else if (a[1].is_string())
        options.indent = a[1].as_string();
      else if (!a[1].is_none())
        raise("tojson indent must be an integer, a string or None");
      if (options.indent) options.item_separator = ",";
      if (!a[2].is_none()) {
        if ((a[2].kind() != Value::Kind::list && a[2].kind() != Value::Kind::tuple) || a[2].items().size() != 2 ||
            !a[2].items()[0].is_string() || !a[2].items()[1].is_string())
          raise("tojson separators must be a pair of strings");
        options.item_separator = a[2].items()[0].as_string();
        options.key_separator = a[2].items()[1].as_string();
      }
      options.sort_keys = truthy(a[3]);
      std::string out;
      to_json(v, options, 0, out);
      return Value(std::move(out));
    }
    if (name == "indent") {
      const auto a = params({{"width", Value(4)}, {"first", Value(false)}, {"blank", Value(false)}});
      if (v.is_undefined()) undefined_error(v);
      if (!v.is_string()) raise("TypeError: unsupported operand type(s) for +=: '{}' and 'str'", type_name(v));
      const std::string pad =
          a[0].is_string()
              ? a[0].as_string()
              : std::string(static_cast<std::size_t>(std::max<std::int64_t>(0, int_argument(a[0], "width"))), ' ');
      const std::vector<std::u32string> lines = splitlines(decode(v.as_string() + "\n"));
      std::string out;
      for (std::size_t k = 0; k < lines.size(); ++k) {
        if (k) out += '\n';
        if (k && (truthy(a[2]) || !lines[k].empty())) out += pad;
        out += encode(lines[k]);
      }
      return Value(truthy(a[1]) ? pad + out : out);
    }
    raise("the '{}' filter is not supported by this jinja subset", name);
  }

  // ---- tests ----

  bool apply_test(const std::string& name, const Value& v, const Array& args, const Kwargs& kwargs) {
    if (!is_jinja_test(name)) raise("TemplateRuntimeError: No test named '{}'.", name);
    const auto params = [&](std::initializer_list<std::pair<std::string_view, std::optional<Value>>> p) {
      return bind_arguments(name, p, args, kwargs);
    };
    const Value::Kind k = v.kind();
    if (name == "defined") return params({}), !v.is_undefined();
    if (name == "undefined") return params({}), v.is_undefined();
    if (name == "none") return params({}), v.is_none();
    if (name == "boolean") return params({}), k == Value::Kind::boolean;
    if (name == "true" || name == "false")
      return params({}), k == Value::Kind::boolean && v.as_bool() == (name == "true");
    if (name == "integer") return params({}), k == Value::Kind::integer;
    if (name == "float") return params({}), k == Value::Kind::floating;
    if (name == "number") return params({}), v.is_number();
    if (name == "string") return params({}), v.is_string();
    if (name == "mapping") return params({}), k == Value::Kind::dict;
    if (name == "iterable")
      return params({}), v.is_undefined() || v.is_string() || v.is_dict() || v.is_sequence() || k == Value::Kind::loop;
    if (name == "sequence")
      return params({}), v.is_undefined() || v.is_string() || v.is_dict() ||
                             (v.is_sequence() && k != Value::Kind::iterator && k != Value::Kind::dict_view);
    if (name == "callable") return params({}), v.is_undefined() || k == Value::Kind::callable || k == Value::Kind::loop;
    if (name == "filter" || name == "test") {
      params({});
      if (!hashable(v)) raise("TypeError: unhashable type: '{}'", type_name(v));
      return v.is_string() && (name == "filter" ? is_jinja_filter(v.as_string()) : is_jinja_test(v.as_string()));
    }
    if (name == "lower" || name == "upper") {
      params({});
      bool cased = false;
      for (char32_t c : decode(to_str(v))) {
        check_caseless(c);
        if (name == "lower" ? is_upper_ascii(c) : is_lower_ascii(c)) return false;
        cased = cased || is_upper_ascii(c) || is_lower_ascii(c);
      }
      return cased;
    }
    if (name == "odd" || name == "even") {
      params({});
      const Value r = binary("%", v, Value(2));
      return equals(r, Value(name == "odd" ? 1 : 0));
    }
    if (name == "divisibleby") {
      const auto a = params({{"num", std::nullopt}});
      return equals(binary("%", v, a[0]), Value(0));
    }
    if (name == "sameas") {
      const auto a = params({{"other", std::nullopt}});
      const auto singleton = [](const Value& x) { return x.is_none() || x.kind() == Value::Kind::boolean; };
      if (!singleton(v) && !singleton(a[0])) raise("the 'sameas' test is supported for None, True and False only");
      return v.kind() == a[0].kind() && (v.is_none() || v.as_bool() == a[0].as_bool());
    }
    if (name == "in") return contains(params({{"seq", std::nullopt}})[0], v);
    if (name == "escaped") return params({}), v.is_markup();
    const Value other = params({{"other", std::nullopt}})[0];
    if (one_of(name, {"==", "eq", "equalto"})) return equals(v, other);
    if (one_of(name, {"!=", "ne"})) return !equals(v, other);
    if (one_of(name, {">", "gt", "greaterthan"})) return less(other, v);
    if (one_of(name, {">=", "ge"})) return less(other, v) || equals(v, other);
    if (one_of(name, {"<", "lt", "lessthan"})) return less(v, other);
    return less(v, other) || equals(v, other);  // <=, le
  }
};

}  // namespace vidlora::model::jinja::detail

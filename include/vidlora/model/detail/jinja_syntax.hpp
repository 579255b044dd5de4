#pragma once
// The Jinja2 subset's lexer (jinja2's, with trim_blocks and lstrip_blocks), syntax tree and recursive-descent
// parser (jinja2's precedence). Internal to vidlora::model::jinja; include <vidlora/model.hpp>.

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/model/detail/jinja_python.hpp>

namespace vidlora::model::jinja::detail {

// ---- lexer: jinja2's, with trim_blocks and lstrip_blocks -----------------------------------------------------

enum class Tok { data, variable_begin, variable_end, block_begin, block_end, name, string, integer, floating, op, eof };

struct Token {
  Tok type;
  std::string text;  // data, name, operator, or the decoded string literal
  std::size_t pos;   // byte offset in the normalised source
  std::int64_t integer = 0;
  double floating = 0;
  Token(Tok t, std::string s, std::size_t p) : type(t), text(std::move(s)), pos(p) {}
};

struct Source {
  std::string text;  // newlines normalised to \n, one trailing newline removed (keep_trailing_newline=False)
  explicit Source(std::string_view raw) {
    for (std::size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '\r') {
        text += '\n';
        if (i + 1 < raw.size() && raw[i + 1] == '\n') ++i;
      } else {
        text += raw[i];
      }
    }
    if (!text.empty() && text.back() == '\n') text.pop_back();
  }
  [[noreturn]] void fail_at(std::size_t pos, std::string_view message) const {
    pos = std::min(pos, text.size());
    const auto line = 1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(pos), '\n');
    const std::size_t newline = pos == 0 ? std::string::npos : text.rfind('\n', pos - 1);
    const std::size_t column = pos - (newline == std::string::npos ? 0 : newline + 1) + 1;
    vidlora::fail("jinja template line {}, column {}: {}", line, column, message);
  }
};

class Lexer {
 public:
  explicit Lexer(const Source& source) : src_(source), s_(source.text) {}

  std::vector<Token> run() {
    bool line_starting = true;  // the last tag ended with a newline (or nothing came before)
    while (pos_ < s_.size()) {
      std::size_t open = pos_;
      while ((open = s_.find('{', open)) != std::string::npos &&
             (open + 1 >= s_.size() || (s_[open + 1] != '{' && s_[open + 1] != '%' && s_[open + 1] != '#')))
        ++open;
      if (open == std::string::npos) {
        emit(Tok::data, s_.substr(pos_), pos_);
        break;
      }
      const char kind = s_[open + 1];
      std::size_t after = open + 2;
      const char sign = after < s_.size() && (s_[after] == '-' || s_[after] == '+') ? s_[after] : 0;
      if (sign) ++after;
      std::size_t raw_end = 0;
      const bool raw = kind == '%' && match_raw_begin(after, raw_end);
      emit(Tok::data, strip_before(s_.substr(pos_, open - pos_), sign, kind != '{', line_starting), pos_);
      if (raw) {
        pos_ = raw_end;
        line_starting = s_[raw_end - 1] == '\n';
        lex_raw_body(line_starting);
      } else if (kind == '#') {
        lex_comment(open, after);
      } else {
        emit(kind == '{' ? Tok::variable_begin : Tok::block_begin, "", open);
        pos_ = after;
        lex_tag(kind == '{');
      }
      line_starting = s_[pos_ - 1] == '\n';
    }
    emit(Tok::eof, "", s_.size());
    return std::move(tokens_);
  }

 private:
  const Source& src_;
  const std::string& s_;
  std::size_t pos_ = 0;
  std::vector<Token> tokens_;
  std::vector<char> balance_;

  void emit(Tok type, std::string text, std::size_t pos) {
    if (type == Tok::data && text.empty()) return;
    tokens_.emplace_back(type, std::move(text), pos);
  }
  std::size_t skip_space(std::size_t i) const {
    while (i < s_.size()) {
      std::size_t j = i;
      if (!is_space(next_code_point(s_, j))) break;
      i = j;
    }
    return i;
  }
  // The text before a tag: `-` strips all trailing whitespace; lstrip_blocks strips spaces between the line start
  // and a block or comment tag (not `{{`, not `+`).
  std::string strip_before(std::string text, char sign, bool lstrip_allowed, bool line_starting) const {
    if (sign == '-') {
      std::size_t keep = 0;
      for (std::size_t i = 0; i < text.size();)
        if (!is_space(next_code_point(text, i))) keep = i;
      text.resize(keep);
    } else if (sign != '+' && lstrip_allowed) {
      const std::size_t nl = text.rfind('\n');
      const std::size_t line = nl == std::string::npos ? 0 : nl + 1;
      if ((line > 0 || line_starting) && line < text.size()) {
        bool blank = true;
        for (std::size_t i = line; i < text.size() && blank;) blank = is_space(next_code_point(text, i));
        if (blank) text.resize(line);
      }
    }
    return text;
  }
  // `{%[-+]\s*raw\s*(-%}\s*|%})` at `after` (just past the sign).
  bool match_raw_begin(std::size_t after, std::size_t& end) const {
    std::size_t i = skip_space(after);
    if (s_.compare(i, 3, "raw") != 0) return false;
    i = skip_space(i + 3);
    if (s_.compare(i, 3, "-%}") == 0) {
      end = skip_space(i + 3);
      return true;
    }
    if (s_.compare(i, 2, "%}") == 0) {
      end = i + 2;
      return true;
    }
    return false;
  }
  void lex_raw_body(bool line_starting) {
    for (std::size_t at = pos_; (at = s_.find("{%", at)) != std::string::npos; ++at) {
      std::size_t i = at + 2;
      const char sign = i < s_.size() && (s_[i] == '-' || s_[i] == '+') ? s_[i] : 0;
      if (sign) ++i;
      i = skip_space(i);
      if (s_.compare(i, 6, "endraw") != 0) continue;
      i = skip_space(i + 6);
      std::size_t end = 0;
      if (s_.compare(i, 3, "+%}") == 0)
        end = i + 3;
      else if (s_.compare(i, 3, "-%}") == 0)
        end = skip_space(i + 3);
      else if (s_.compare(i, 2, "%}") == 0)
        end = i + 2 + (s_.compare(i + 2, 1, "\n") == 0 ? 1 : 0);
      else
        continue;
      emit(Tok::data, strip_before(s_.substr(pos_, at - pos_), sign, true, line_starting), pos_);
      pos_ = end;
      return;
    }
    src_.fail_at(pos_, "missing end of raw directive");
  }
  void lex_comment(std::size_t open, std::size_t after) {
    pos_ = s_.size();
    if (after >= s_.size()) return;  // jinja2's lexer stops silently at a `{#` that ends the template
    for (std::size_t i = after; i + 1 < s_.size(); ++i) {
      if ((s_[i] == '-' || s_[i] == '+') && s_.compare(i + 1, 2, "#}") == 0) {
        pos_ = s_[i] == '-' ? skip_space(i + 3) : i + 3;
        return;
      }
      if (s_.compare(i, 2, "#}") == 0) {
        pos_ = i + 2 + (s_.compare(i + 2, 1, "\n") == 0 ? 1 : 0);
        return;
      }
    }
    src_.fail_at(open, "missing end of comment tag");
  }
  // Digits with single underscores between them (`(\d+_)*\d+`); returns the end or npos.
  std::size_t digits(std::size_t i) const {
    if (i >= s_.size() || !std::isdigit(static_cast<unsigned char>(s_[i]))) return std::string::npos;
    while (i < s_.size() &&
           (std::isdigit(static_cast<unsigned char>(s_[i])) ||
            (s_[i] == '_' && i + 1 < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i + 1])))))
      ++i;
    return i;
  }
  static std::string without_underscores(std::string s) {
    s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
    return s;
  }
  void lex_tag(bool variable) {
    while (true) {
      if (pos_ >= s_.size()) src_.fail_at(pos_, "unexpected end of template (unclosed tag)");
      if (balance_.empty()) {
        if (!variable && s_.compare(pos_, 3, "+%}") == 0) return end_tag(Tok::block_end, pos_ + 3);
        if (s_.compare(pos_, 3, variable ? "-}}" : "-%}") == 0)
          return end_tag(variable ? Tok::variable_end : Tok::block_end, skip_space(pos_ + 3));
        if (s_.compare(pos_, 2, variable ? "}}" : "%}") == 0) {
          const bool newline = !variable && s_.compare(pos_ + 2, 1, "\n") == 0;
          return end_tag(variable ? Tok::variable_end : Tok::block_end, pos_ + 2 + (newline ? 1 : 0));
        }
      }
      const std::size_t start = pos_;
      const char c = s_[pos_];
      if (std::size_t ws = skip_space(pos_); ws > pos_) {
        pos_ = ws;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        lex_number();
      } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        while (pos_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '_')) ++pos_;
        emit(Tok::name, s_.substr(start, pos_ - start), start);
      } else if (c == '\'' || c == '"') {
        lex_string();
      } else {
        static constexpr std::string_view kOperators[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/",
                                                          "*",  "%",  "~",  "[",  "]",  "(",  ")", "{", "}",
                                                          "=",  "<",  ">",  ".",  ":",  "|",  ",", ";"};
        auto op = std::find_if(std::begin(kOperators), std::end(kOperators),
                               [&](std::string_view o) { return s_.compare(pos_, o.size(), o) == 0; });
        if (op == std::end(kOperators))
          src_.fail_at(pos_, fmt::format("unexpected character '{}'", s_.substr(pos_, 1)));
        const char o = (*op)[0];
        if (op->size() == 1 && (o == '(' || o == '[' || o == '{'))
          balance_.push_back(o == '(' ? ')' : o == '[' ? ']' : '}');
        if (op->size() == 1 && (o == ')' || o == ']' || o == '}')) {
          if (balance_.empty()) src_.fail_at(pos_, fmt::format("unexpected '{}'", o));
          if (balance_.back() != o)
            src_.fail_at(pos_, fmt::format("unexpected '{}', expected '{}'", o, balance_.back()));
          balance_.pop_back();
        }
        pos_ += op->size();
        emit(Tok::op, std::string(*op), start);
      }
    }
  }
  void end_tag(Tok type, std::size_t end) {
    emit(type, "", pos_);
    pos_ = end;
  }
  void lex_number() {
    const std::size_t start = pos_;
    if (s_[pos_] == '0' && pos_ + 1 < s_.size() &&
        std::string_view("bBoOxX").find(s_[pos_ + 1]) != std::string_view::npos)
      src_.fail_at(pos_, "binary, octal and hexadecimal integer literals are not supported");
    const bool after_dot = start > 0 && s_[start - 1] == '.';
    std::size_t end = digits(pos_);
    std::size_t float_end = std::string::npos;
    if (!after_dot) {
      std::size_t i = end;
      if (i < s_.size() && s_[i] == '.' && digits(i + 1) != std::string::npos) float_end = i = digits(i + 1);
      if (i < s_.size() && (s_[i] == 'e' || s_[i] == 'E')) {
        std::size_t j = i + 1;
        if (j < s_.size() && (s_[j] == '+' || s_[j] == '-')) ++j;
        if (digits(j) != std::string::npos) float_end = digits(j);
      }
    }
    if (float_end != std::string::npos) {
      Token t{Tok::floating, s_.substr(start, float_end - start), start};
      const std::string text = without_underscores(t.text);
      std::from_chars(text.data(), text.data() + text.size(), t.floating);
      tokens_.push_back(std::move(t));
      pos_ = float_end;
      return;
    }
    if (s_[start] == '0') {  // `0(_?0)*`
      end = start + 1;
      while (end < s_.size() && (s_[end] == '0' || (s_[end] == '_' && end + 1 < s_.size() && s_[end + 1] == '0')))
        ++end;
    }
    Token t{Tok::integer, s_.substr(start, end - start), start};
    const std::string text = without_underscores(t.text);
    if (std::from_chars(text.data(), text.data() + text.size(), t.integer).ec != std::errc())
      src_.fail_at(start, "integer literal out of the int64 range");
    tokens_.push_back(std::move(t));
    pos_ = end;
  }
  // A Python string literal, unescaped as jinja2 does (`unicode-escape`).
  void lex_string() {
    const std::size_t start = pos_;
    const char quote = s_[pos_++];
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) src_.fail_at(start, fmt::format("unexpected character '{}' (unterminated string)", quote));
      const char c = s_[pos_];
      if (c == quote) break;
      if (c != '\\') {
        out += c;
        ++pos_;
        continue;
      }
      if (pos_ + 1 >= s_.size()) continue;  // reported as unterminated
      const char e = s_[pos_ + 1];
      pos_ += 2;
      const auto hex = [&](int n) {
        std::uint32_t v = 0;
        for (int k = 0; k < n; ++k, ++pos_) {
          if (pos_ >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[pos_])))
            src_.fail_at(start, "truncated \\x, \\u or \\U escape in a string literal");
          v = v * 16 + static_cast<std::uint32_t>(std::stoi(std::string(1, s_[pos_]), nullptr, 16));
        }
        return v;
      };
      switch (e) {
        case '\n': break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'v': out += '\v'; break;
        case 'x': append_utf8(out, hex(2)); break;
        case 'u': append_utf8(out, hex(4)); break;
        case 'U': {
          const std::uint32_t v = hex(8);
          if (v > 0x10FFFF) src_.fail_at(start, "illegal Unicode character in a string literal");
          append_utf8(out, v);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            std::uint32_t v = static_cast<std::uint32_t>(e - '0');
            for (int k = 0; k < 2 && pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '7'; ++k, ++pos_)
              v = v * 8 + static_cast<std::uint32_t>(s_[pos_] - '0');
            append_utf8(out, v);
          } else if (e == 'N' || static_cast<unsigned char>(e) >= 0x80) {
            src_.fail_at(start, "\\N{...} escapes and backslashes before non-ASCII characters are not supported");
          } else {
            out += '\\';
            out += e;
          }
      }
    }
    ++pos_;
    emit(Tok::string, std::move(out), start);
  }
};

// ---- syntax tree --------------------------------------------------------------------------------------------

struct Expr;
using ExprPtr = std::shared_ptr<const Expr>;
struct Expr {
  enum class Op {
    constant,
    name,
    list,
    tuple,
    dict,
    getattr,
    getitem,
    slice,
    call,
    filter,
    test,
    cond,
    and_,
    or_,
    not_,
    neg,
    pos,
    binary,
    compare,
    concat
  };
  Op op;
  std::size_t pos;
  std::string name;           // variable, attribute, filter, test or operator
  std::vector<ExprPtr> args;  // operands; call/filter/test: the callee or operand first; slice: start, stop, step
  Value value;                // constant
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;  // compare: the operators between args
  Expr(Op o, std::size_t p, std::string n = {}, std::vector<ExprPtr> a = {})
      : op(o), pos(p), name(std::move(n)), args(std::move(a)) {}
};

struct Node;
using Body = std::vector<Node>;
struct Node {
  enum class Kind { text, output, if_, for_, set, set_attribute, set_block, break_, continue_, generation, macro };
  Kind kind;
  std::size_t pos;
  std::string text;  // text; set_attribute: the namespace variable
  Node(Kind k, std::size_t p, std::string t = {}) : kind(k), pos(p), text(std::move(t)) {}
  std::string attribute;             // set_attribute
  std::vector<std::string> targets;  // for / set / set_block; macro: its parameters
  std::vector<ExprPtr> defaults;     // macro: the defaults of its last parameters
  // The names the frame this node opens (a for loop's body, and its else; a macro, {% set %} block or
  // {% generation %} body) stores before any reference, with no enclosing frame referring to them: jinja2 starts them
  // undefined, so a nested frame reading one before it is stored gets Undefined, not the context's value.
  std::vector<std::string> undefined_first, else_undefined_first;
  ExprPtr expr;                                    // output, for's iterable, set's value
  ExprPtr filter;                                  // for ... if filter
  std::vector<std::pair<ExprPtr, Body>> branches;  // if / elif
  Body body, else_body;
};

// The filters and tests jinja2 defines; the ones this interpreter implements are dispatched in Renderer.
inline bool is_jinja_filter(std::string_view name) {
  return one_of(name, {"abs",       "attr",       "batch",       "capitalize", "center",  "count",
                       "d",         "default",    "dictsort",    "e",          "escape",  "filesizeformat",
                       "first",     "float",      "forceescape", "format",     "groupby", "indent",
                       "int",       "join",       "last",        "length",     "list",    "lower",
                       "items",     "map",        "min",         "max",        "pprint",  "random",
                       "reject",    "rejectattr", "replace",     "reverse",    "round",   "safe",
                       "select",    "selectattr", "slice",       "sort",       "string",  "striptags",
                       "sum",       "title",      "trim",        "truncate",   "unique",  "upper",
                       "urlencode", "urlize",     "wordcount",   "wordwrap",   "xmlattr", "tojson"});
}
inline bool is_jinja_test(std::string_view name) {
  return one_of(name, {"odd",     "even",   "divisibleby", "defined",  "undefined", "filter", "test",    "none",
                       "boolean", "false",  "true",        "integer",  "float",     "lower",  "upper",   "string",
                       "mapping", "number", "sequence",    "iterable", "callable",  "sameas", "escaped", "in",
                       "==",      "eq",     "equalto",     "!=",       "ne",        ">",      "gt",      "greaterthan",
                       "ge",      ">=",     "<",           "lt",       "lessthan",  "<=",     "le"});
}

// ---- parser: jinja2's recursive descent, same precedence -----------------------------------------------------

class Parser {
 public:
  Parser(const Source& source, std::vector<Token> tokens) : src_(source), t_(std::move(tokens)) {}

  Body parse() {
    Body body = subparse({});
    Frame root;
    frame_symbols(body, false, root);
    root_undefined_ = root.store_first;  // the root frame has no enclosing one
    std::vector<const Frame*> enclosing{&root};
    annotate_frames(body, enclosing);
    return body;
  }
  // The names the template's top level stores before any reference (Node::undefined_first's rule for the root).
  const std::vector<std::string>& root_undefined() const { return root_undefined_; }

 private:
  const Source& src_;
  std::vector<Token> t_;
  std::size_t i_ = 0;
  int loop_depth_ = 0;
  std::vector<std::string> root_undefined_;

  // ---- jinja2's symbol tracking (idtracking.FrameSymbolVisitor), for the names a frame starts undefined ----
  struct Frame {
    std::vector<std::string> refs;         // every name the frame's own nodes load or store
    std::vector<std::string> store_first;  // stored (outside any if) before any reference
    bool has(const std::string& name) const { return std::find(refs.begin(), refs.end(), name) != refs.end(); }
  };
  // One frame's own nodes, in order: loads and stores; the bodies of for loops, macros, {% set %} blocks and
  // {% generation %} are frames of their own (a for loop contributes its iterable's loads). A store inside an if
  // branch never starts a name undefined (jinja2's branch_update resolves it from the context).
  static void frame_symbols(const Body& body, bool in_branch, Frame& f) {
    const auto load = [&](const Expr& e) {
      std::vector<std::string> names;
      names_in(e, names);
      for (const auto& name : names)
        if (!f.has(name)) f.refs.push_back(name);
    };
    const auto store = [&](const std::string& name) {
      if (f.has(name)) return;
      f.refs.push_back(name);
      if (!in_branch) f.store_first.push_back(name);
    };
    for (const Node& n : body) switch (n.kind) {
        case Node::Kind::output: load(*n.expr); break;
        case Node::Kind::if_:
          for (const auto& [test, branch] : n.branches) {
            load(*test);
            frame_symbols(branch, true, f);
          }
          frame_symbols(n.else_body, true, f);
          break;
        case Node::Kind::for_: load(*n.expr); break;
        case Node::Kind::set:
          load(*n.expr);
          for (const auto& t : n.targets) store(t);
          break;
        case Node::Kind::set_attribute:
          load(*n.expr);
          if (!f.has(n.text)) f.refs.push_back(n.text);
          break;
        case Node::Kind::set_block:
          for (const auto& t : n.targets) store(t);
          break;
        case Node::Kind::macro: store(n.text); break;
        case Node::Kind::text:
        case Node::Kind::break_:
        case Node::Kind::continue_:
        case Node::Kind::generation: break;
      }
  }
  // A nested frame's store-first names that no enclosing frame refers to (jinja2 aliases the others to the outer
  // variable): the names it starts undefined.
  static std::vector<std::string> undefined_first(const Frame& f, const std::vector<const Frame*>& enclosing) {
    std::vector<std::string> out;
    for (const auto& name : f.store_first)
      if (std::none_of(enclosing.begin(), enclosing.end(), [&](const Frame* e) { return e->has(name); }))
        out.push_back(name);
    return out;
  }
  // Annotates every frame-opening node under `body` (one frame, whose enclosing frames are `enclosing`, innermost
  // last), then the frames inside them.
  static void annotate_frames(Body& body, std::vector<const Frame*>& enclosing) {
    const auto inner = [&](Body& frame_body, std::vector<std::string> params, std::vector<std::string>& out) {
      Frame f;
      f.refs = std::move(params);
      frame_symbols(frame_body, false, f);
      out = undefined_first(f, enclosing);
      enclosing.push_back(&f);
      annotate_frames(frame_body, enclosing);
      enclosing.pop_back();
    };
    for (Node& n : body) switch (n.kind) {
        case Node::Kind::if_:
          for (auto& branch : n.branches) annotate_frames(branch.second, enclosing);
          annotate_frames(n.else_body, enclosing);
          break;
        case Node::Kind::for_: {
          std::vector<std::string> params = n.targets;
          params.push_back("loop");
          inner(n.body, std::move(params), n.undefined_first);
          inner(n.else_body, {}, n.else_undefined_first);
          break;
        }
        case Node::Kind::macro: {  // jinja2 visits the parameters, then the defaults (reads), then the body
          std::vector<std::string> refs = n.targets;
          for (const ExprPtr& d : n.defaults) names_in(*d, refs);
          inner(n.body, std::move(refs), n.undefined_first);
          break;
        }
        case Node::Kind::set_block:
        case Node::Kind::generation: inner(n.body, {}, n.undefined_first); break;
        default: break;
      }
  }

  const Token& cur() const { return t_[i_]; }
  const Token& peek() const { return t_[std::min(i_ + 1, t_.size() - 1)]; }
  [[noreturn]] void error(std::string_view message) const { src_.fail_at(cur().pos, message); }
  bool is_op(std::string_view op) const { return cur().type == Tok::op && cur().text == op; }
  bool is_name(std::string_view name) const { return cur().type == Tok::name && cur().text == name; }
  std::string describe() const {
    switch (cur().type) {
      case Tok::eof: return "end of template";
      case Tok::block_end: return "end of statement block";
      case Tok::variable_end: return "end of print statement";
      case Tok::data: return "template data";
      default: return cur().text.empty() ? "string" : cur().text;
    }
  }
  bool skip_op(std::string_view op) {
    if (!is_op(op)) return false;
    ++i_;
    return true;
  }
  bool skip_name(std::string_view name) {
    if (!is_name(name)) return false;
    ++i_;
    return true;
  }
  void expect_op(std::string_view op) {
    if (!skip_op(op)) error(fmt::format("expected '{}', got '{}'", op, describe()));
  }
  void expect(Tok type, std::string_view what) {
    if (cur().type != type) error(fmt::format("expected {}, got '{}'", what, describe()));
    ++i_;
  }
  std::string expect_name() {
    if (cur().type != Tok::name) error(fmt::format("expected a name, got '{}'", describe()));
    return t_[i_++].text;
  }
  ExprPtr make(Expr::Op op, std::size_t pos, std::vector<ExprPtr> args = {}, std::string name = {}) const {
    return std::make_shared<const Expr>(op, pos, std::move(name), std::move(args));
  }

  // Statements until a block tag whose name is in `ends` (left as the current token).
  Body subparse(std::initializer_list<std::string_view> ends) {
    Body body;
    while (true) {
      const Token& t = cur();
      if (t.type == Tok::eof) {
        if (ends.size() != 0) error(fmt::format("unexpected end of template, expected '{}'", *ends.begin()));
        return body;
      }
      if (t.type == Tok::data) {
        body.push_back(Node{Node::Kind::text, t.pos, t.text});
        ++i_;
      } else if (t.type == Tok::variable_begin) {
        ++i_;
        Node node{Node::Kind::output, t.pos};
        node.expr = parse_tuple(true, {}, false);
        expect(Tok::variable_end, "end of print statement");
        body.push_back(std::move(node));
      } else {
        ++i_;
        if (cur().type == Tok::name && one_of(cur().text, ends)) return body;
        body.push_back(parse_statement());
        expect(Tok::block_end, "end of statement block");
      }
    }
  }
  // After a statement's head: `%}`, the body, and (drop_end) the end tag's name.
  Body parse_statements(std::initializer_list<std::string_view> ends, bool drop_end) {
    skip_op(":");
    expect(Tok::block_end, "end of statement block");
    Body body = subparse(ends);
    if (drop_end) ++i_;
    return body;
  }

  Node parse_statement() {
    if (cur().type != Tok::name) error("tag name expected");
    const std::string tag = cur().text;
    const std::size_t pos = cur().pos;
    if (tag == "for") return parse_for();
    if (tag == "if") return parse_if();
    if (tag == "set") return parse_set();
    if (tag == "break" || tag == "continue") {
      if (loop_depth_ == 0) error(fmt::format("'{}' outside loop", tag));
      ++i_;
      return Node{tag == "break" ? Node::Kind::break_ : Node::Kind::continue_, pos};
    }
    if (tag == "generation") {  // transformers' AssistantTracker: the body renders unchanged, in its own scope
      ++i_;
      Node node{Node::Kind::generation, pos};
      const int depth = std::exchange(loop_depth_, 0);
      node.body = parse_statements({"endgeneration"}, true);
      loop_depth_ = depth;
      return node;
    }
    if (tag == "macro") return parse_macro();
    if (one_of(tag, {"call", "filter", "include", "extends", "import", "from", "block", "with", "autoescape", "print"}))
      error(fmt::format("the '{}' tag is not supported by this jinja subset", tag));
    error(fmt::format("unknown tag '{}'", tag));
  }

  std::vector<std::string> parse_targets(std::string_view end_name, bool with_namespace, std::string* ns) {
    std::vector<std::string> names;
    const bool paren = skip_op("(");
    while (true) {
      if (cur().type != Tok::name || one_of(cur().text, {"true", "false", "True", "False", "none", "None"}))
        error(fmt::format("can't assign to '{}'", describe()));
      std::string name = expect_name();
      if (with_namespace && is_op(".")) {
        ++i_;
        if (!names.empty() || is_op(",")) error("unpacking into namespace attributes is not supported");
        *ns = name;
        return {expect_name()};
      }
      names.push_back(std::move(name));
      if (!skip_op(",")) break;
      if ((paren && is_op(")")) || is_name(end_name) || is_op("=") || cur().type == Tok::block_end) break;
    }
    if (paren) expect_op(")");
    return names;
  }

  Node parse_for() {
    Node node{Node::Kind::for_, cur().pos};
    ++i_;
    node.targets = parse_targets("in", false, nullptr);
    if (!skip_name("in")) error(fmt::format("expected 'in', got '{}'", describe()));
    node.expr = parse_tuple(false, {"recursive"}, false);
    if (skip_name("if")) node.filter = parse_expression(true);
    if (is_name("recursive")) error("recursive for loops are not supported");
    ++loop_depth_;
    node.body = parse_statements({"endfor", "else"}, false);
    --loop_depth_;
    // jinja2 evaluates the filter lazily, between iterations; this interpreter filters first, which differs only
    // when the body changes a namespace the filter reads.
    if (node.filter) {
      std::vector<std::string> read, written;
      names_in(*node.filter, read);
      namespaces_set_in(node.body, written);
      for (const auto& name : read)
        if (std::find(written.begin(), written.end(), name) != written.end())
          src_.fail_at(node.pos,
                       fmt::format("a for-loop filter reading namespace '{}', which the loop body changes, is "
                                   "not supported",
                                   name));
    }
    if (t_[i_++].text == "else") node.else_body = parse_statements({"endfor"}, true);
    // jinja2 refuses any store to `loop` inside a for loop (its targets, sets and set blocks at any depth).
    const auto stores_loop = [](const std::vector<std::string>& targets) {
      return std::find(targets.begin(), targets.end(), "loop") != targets.end();
    };
    bool assigns_loop = stores_loop(node.targets);
    const auto visit = [&](const Node& n) {
      if ((n.kind == Node::Kind::for_ || n.kind == Node::Kind::set || n.kind == Node::Kind::set_block) &&
          stores_loop(n.targets))
        assigns_loop = true;
    };
    for_each_node(node.body, visit);
    for_each_node(node.else_body, visit);
    if (assigns_loop) src_.fail_at(node.pos, "Can't assign to special loop variable in for-loop target");
    return node;
  }

  static void names_in(const Expr& e, std::vector<std::string>& out) {
    if (e.op == Expr::Op::name) out.push_back(e.name);
    for (const auto& a : e.args)
      if (a) names_in(*a, out);
    for (const auto& [key, a] : e.kwargs) names_in(*a, out);
  }
  // Every node of `body` and of the bodies under it, depth first.
  template <class F>
  static void for_each_node(const Body& body, const F& visit) {
    for (const Node& n : body) {
      visit(n);
      for_each_node(n.body, visit);
      for_each_node(n.else_body, visit);
      for (const auto& branch : n.branches) for_each_node(branch.second, visit);
    }
  }
  static void namespaces_set_in(const Body& body, std::vector<std::string>& out) {
    for_each_node(body, [&](const Node& n) {
      if (n.kind == Node::Kind::set_attribute) out.push_back(n.text);
    });
  }

  // {% macro name(a, b=default) %}body{% endmacro %}: jinja2's parse_signature. A body that reads varargs, kwargs
  // or caller (the extra arguments, a {% call %} block's body) is refused: this interpreter binds only the named
  // parameters.
  Node parse_macro() {
    Node node{Node::Kind::macro, cur().pos};
    ++i_;
    const auto assignable_name = [&] {
      if (cur().type != Tok::name || one_of(cur().text, {"true", "false", "True", "False", "none", "None"}))
        error(fmt::format("can't assign to '{}'", describe()));
      return expect_name();
    };
    node.text = assignable_name();
    expect_op("(");
    while (!is_op(")")) {
      if (!node.targets.empty()) expect_op(",");
      const std::string param = assignable_name();
      if (std::find(node.targets.begin(), node.targets.end(), param) != node.targets.end())
        error(fmt::format("duplicate argument '{}' in macro '{}'", param, node.text));
      if (skip_op("="))
        node.defaults.push_back(parse_expression(true));
      else if (!node.defaults.empty())
        error("non-default argument follows default argument");
      node.targets.push_back(param);
    }
    ++i_;
    const int depth = std::exchange(loop_depth_, 0);  // a break in the body cannot leave the caller's loop
    node.body = parse_statements({"endmacro"}, true);
    loop_depth_ = depth;
    std::vector<std::string> read;
    names_in(node.body, read);
    for (const char* special : {"varargs", "kwargs", "caller"})
      if (std::find(read.begin(), read.end(), special) != read.end())
        src_.fail_at(node.pos, fmt::format("macro '{}' reads '{}', which this jinja subset does not support (only the "
                                           "named parameters are bound)",
                                           node.text, special));
    return node;
  }
  static void names_in(const Body& body, std::vector<std::string>& out) {
    for_each_node(body, [&](const Node& n) {
      for (const ExprPtr& e : {n.expr, n.filter})
        if (e) names_in(*e, out);
      for (const ExprPtr& e : n.defaults) names_in(*e, out);
      for (const auto& branch : n.branches) names_in(*branch.first, out);
    });
  }

  Node parse_if() {
    Node node{Node::Kind::if_, cur().pos};
    ++i_;
    while (true) {
      ExprPtr test = parse_tuple(false, {}, false);
      Body body = parse_statements({"elif", "else", "endif"}, false);
      node.branches.emplace_back(std::move(test), std::move(body));
      const std::string& end = t_[i_++].text;
      if (end == "elif") continue;
      if (end == "else") node.else_body = parse_statements({"endif"}, true);
      return node;
    }
  }

  Node parse_set() {
    Node node{Node::Kind::set, cur().pos};
    ++i_;
    std::string ns;
    node.targets = parse_targets("", true, &ns);
    if (!ns.empty()) {
      node.kind = Node::Kind::set_attribute;
      node.text = ns;
      node.attribute = node.targets[0];
    }
    if (skip_op("=")) {
      node.expr = parse_tuple(true, {}, false);
      return node;
    }
    if (is_op("|")) error("filters on a {% set %} block are not supported");
    if (node.kind == Node::Kind::set_attribute) error("a {% set %} block into a namespace attribute is not supported");
    node.kind = Node::Kind::set_block;
    node.body = parse_statements({"endset"}, true);
    return node;
  }

  // parse_tuple: expressions separated by commas make a tuple.
  ExprPtr parse_tuple(bool with_condexpr, std::initializer_list<std::string_view> extra_ends, bool explicit_parens) {
    const std::size_t pos = cur().pos;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (cur().type == Tok::variable_end || cur().type == Tok::block_end || is_op(")") ||
          (cur().type == Tok::name && one_of(cur().text, extra_ends)))
        break;
      items.push_back(parse_expression(with_condexpr));
      if (is_op(","))
        is_tuple = true;
      else
        break;
    }
    if (!is_tuple) {
      if (!items.empty()) return items[0];
      if (!explicit_parens) error(fmt::format("expected an expression, got '{}'", describe()));
    }
    return make(Expr::Op::tuple, pos, std::move(items));
  }
  ExprPtr parse_expression(bool with_condexpr) { return with_condexpr ? parse_condexpr() : parse_or(); }
  ExprPtr parse_condexpr() {
    ExprPtr expr = parse_or();
    while (is_name("if")) {
      const std::size_t pos = cur().pos;
      ++i_;
      ExprPtr test = parse_or();
      std::vector<ExprPtr> args{test, expr};
      if (skip_name("else")) args.push_back(parse_condexpr());
      expr = make(Expr::Op::cond, pos, std::move(args));
    }
    return expr;
  }
  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) {
      const std::size_t pos = t_[i_++].pos;
      left = make(Expr::Op::or_, pos, {left, parse_and()});
    }
    return left;
  }
  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) {
      const std::size_t pos = t_[i_++].pos;
      left = make(Expr::Op::and_, pos, {left, parse_not()});
    }
    return left;
  }
  ExprPtr parse_not() {
    if (is_name("not")) {
      const std::size_t pos = t_[i_++].pos;
      return make(Expr::Op::not_, pos, {parse_not()});
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    const std::size_t pos = cur().pos;
    ExprPtr first = parse_math1();
    std::vector<ExprPtr> args{first};
    std::vector<std::string> ops;
    while (true) {
      if (cur().type == Tok::op && one_of(cur().text, {"==", "!=", "<", "<=", ">", ">="})) {
        ops.push_back(t_[i_++].text);
      } else if (is_name("in")) {
        ++i_;
        ops.push_back("in");
      } else if (is_name("not") && peek().type == Tok::name && peek().text == "in") {
        i_ += 2;
        ops.push_back("not in");
      } else {
        break;
      }
      args.push_back(parse_math1());
    }
    if (ops.empty()) return first;
    auto node = std::make_shared<Expr>(Expr::Op::compare, pos, "", std::move(args));
    node->ops = std::move(ops);
    return node;
  }
  ExprPtr parse_binary_level(ExprPtr (Parser::*next)(), std::initializer_list<std::string_view> ops) {
    ExprPtr left = (this->*next)();
    while (cur().type == Tok::op && one_of(cur().text, ops)) {
      const Token& op = t_[i_++];
      left = make(Expr::Op::binary, op.pos, {left, (this->*next)()}, op.text);
    }
    return left;
  }
  ExprPtr parse_math1() { return parse_binary_level(&Parser::parse_concat, {"+", "-"}); }
  ExprPtr parse_concat() {
    const std::size_t pos = cur().pos;
    std::vector<ExprPtr> args{parse_math2()};
    while (skip_op("~")) args.push_back(parse_math2());
    return args.size() == 1 ? args[0] : make(Expr::Op::concat, pos, std::move(args));
  }
  ExprPtr parse_math2() { return parse_binary_level(&Parser::parse_pow, {"*", "/", "//", "%"}); }
  ExprPtr parse_pow() { return parse_binary_level(&Parser::parse_unary_filtered, {"**"}); }
  ExprPtr parse_unary_filtered() { return parse_unary(true); }
  ExprPtr parse_unary(bool with_filter) {
    const std::size_t pos = cur().pos;
    ExprPtr node;
    if (skip_op("-"))
      node = make(Expr::Op::neg, pos, {parse_unary(false)});
    else if (skip_op("+"))
      node = make(Expr::Op::pos, pos, {parse_unary(false)});
    else
      node = parse_primary();
    node = parse_postfix(node);
    return with_filter ? parse_filter_expr(node) : node;
  }
  ExprPtr parse_primary() {
    const Token& t = cur();
    auto constant = [&](Value v) {
      auto node = std::make_shared<Expr>(Expr::Op::constant, t.pos);
      node->value = std::move(v);
      return node;
    };
    if (t.type == Tok::name) {
      ++i_;
      if (one_of(t.text, {"true", "True"})) return constant(Value(true));
      if (one_of(t.text, {"false", "False"})) return constant(Value(false));
      if (one_of(t.text, {"none", "None"})) return constant(Value(nullptr));
      return make(Expr::Op::name, t.pos, {}, t.text);
    }
    if (t.type == Tok::string) {
      std::string text;
      while (cur().type == Tok::string) text += t_[i_++].text;  // adjacent literals concatenate
      return constant(Value(std::move(text)));
    }
    if (t.type == Tok::integer) return ++i_, constant(Value(t.integer));
    if (t.type == Tok::floating) return ++i_, constant(Value(t.floating));
    if (skip_op("(")) {
      ExprPtr inner = parse_tuple(true, {}, true);
      expect_op(")");
      return inner;
    }
    if (is_op("[") || is_op("{")) {
      const bool list = is_op("[");
      ++i_;
      std::vector<ExprPtr> items;
      const std::string close = list ? "]" : "}";
      while (!is_op(close)) {
        if (!items.empty()) expect_op(",");
        if (is_op(close)) break;
        items.push_back(parse_expression(true));
        if (!list) {
          expect_op(":");
          items.push_back(parse_expression(true));
        }
      }
      ++i_;
      return make(list ? Expr::Op::list : Expr::Op::dict, t.pos, std::move(items));
    }
    error(fmt::format("unexpected '{}'", describe()));
  }
  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      if (is_op(".") || is_op("["))
        node = parse_subscript(node);
      else if (is_op("("))
        node = parse_call(Expr::Op::call, node, "");
      else
        return node;
    }
  }
  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      if (is_op("|")) {
        ++i_;
        node = parse_filter_or_test(Expr::Op::filter, node);
      } else if (is_name("is")) {
        const std::size_t pos = t_[i_++].pos;
        const bool negated = skip_name("not");
        node = parse_filter_or_test(Expr::Op::test, node);
        if (negated) node = make(Expr::Op::not_, pos, {node});
      } else if (is_op("(")) {
        node = parse_call(Expr::Op::call, node, "");
      } else {
        return node;
      }
    }
  }
  ExprPtr parse_filter_or_test(Expr::Op op, ExprPtr operand) {
    const std::size_t pos = cur().pos;
    std::string name = expect_name();
    while (skip_op(".")) name += "." + expect_name();
    if (op == Expr::Op::filter ? !is_jinja_filter(name) : !is_jinja_test(name))
      src_.fail_at(pos, fmt::format("no {} named '{}'", op == Expr::Op::filter ? "filter" : "test", name));
    if (is_op("(")) return parse_call(op, operand, name);
    auto node = std::make_shared<Expr>(op, pos, name, std::vector<ExprPtr>{operand});
    const Tok type = cur().type;
    if (op == Expr::Op::test &&
        (type == Tok::name || type == Tok::string || type == Tok::integer || type == Tok::floating || is_op("[") ||
         is_op("{")) &&
        !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) error("you cannot chain multiple tests with is");
      node->args.push_back(parse_postfix(parse_primary()));  // `x is divisibleby 3`
    }
    return node;
  }
  ExprPtr parse_subscript(ExprPtr node) {
    const Token& t = t_[i_++];
    if (t.text == ".") {
      const Token& attr = cur();
      ++i_;
      if (attr.type == Tok::name) return make(Expr::Op::getattr, t.pos, {node}, attr.text);
      if (attr.type != Tok::integer) src_.fail_at(attr.pos, "expected name or number");
      auto key = std::make_shared<Expr>(Expr::Op::constant, attr.pos);
      key->value = Value(attr.integer);
      return make(Expr::Op::getitem, t.pos, {node, key});
    }
    std::vector<ExprPtr> args;
    while (!is_op("]")) {
      if (!args.empty()) expect_op(",");
      args.push_back(parse_subscribed());
    }
    ++i_;
    ExprPtr key = args.size() == 1 ? args[0] : make(Expr::Op::tuple, t.pos, std::move(args));
    return make(Expr::Op::getitem, t.pos, {node, key});
  }
  ExprPtr parse_subscribed() {
    const std::size_t pos = cur().pos;
    std::vector<ExprPtr> parts;
    if (!skip_op(":")) {
      ExprPtr first = parse_expression(true);
      if (!skip_op(":")) return first;
      parts.push_back(first);
    } else {
      parts.push_back(nullptr);
    }
    parts.push_back(is_op(":") || is_op("]") || is_op(",") ? nullptr : parse_expression(true));
    if (skip_op(":"))
      parts.push_back(is_op("]") || is_op(",") ? nullptr : parse_expression(true));
    else
      parts.push_back(nullptr);
    return make(Expr::Op::slice, pos, std::move(parts));
  }
  ExprPtr parse_call(Expr::Op op, ExprPtr callee, std::string name) {
    const std::size_t pos = cur().pos;
    expect_op("(");
    auto node = std::make_shared<Expr>(op, pos, std::move(name), std::vector<ExprPtr>{callee});
    bool need_comma = false;
    while (!is_op(")")) {
      if (need_comma) {
        expect_op(",");
        if (is_op(")")) break;
      }
      if (is_op("*") || is_op("**")) error("*args and **kwargs in calls are not supported");
      if (cur().type == Tok::name && peek().type == Tok::op && peek().text == "=") {
        std::string key = t_[i_].text;
        i_ += 2;
        node->kwargs.emplace_back(std::move(key), parse_expression(true));
      } else {
        if (!node->kwargs.empty()) error("invalid syntax for function call expression");
        node->args.push_back(parse_expression(true));
      }
      need_comma = true;
    }
    ++i_;
    return node;
  }
};

}  // namespace vidlora::model::jinja::detail

#pragma once
// jinja::Value: a Python value as a chat template sees it (None, bool, int, float, str, list, tuple, dict, and the
// interpreter's namespace, loop, dict views, ranges, generators and bound methods). Part of the Jinja2 subset of
// model/jinja_template.hpp; build a template's context (messages, add_generation_prompt, ...) with it.

#include <algorithm>
#include <array>
#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <vidlora/core/error.hpp>

namespace vidlora::model::jinja {

class Value;
using Array = std::vector<Value>;
using Object = std::vector<std::pair<Value, Value>>;  // insertion-ordered, as a Python dict

// A Python value as a template sees it. Lists and dicts are immutable once built (the sandbox forbids mutating
// them) and share their storage; a namespace is the one mutable, reference-like object.
class Value {
 public:
  enum class Kind {
    undefined,  // jinja2's Undefined: prints "", falsy, iterates empty, errors on use
    none,
    boolean,
    integer,
    floating,
    string,  // UTF-8
    list,
    tuple,
    dict,
    namespace_object,  // namespace(...), mutable through {% set ns.attr = ... %}
    loop,              // the `loop` variable of a for loop
    dict_view,         // dict.keys() / values() / items()
    range,
    iterator,  // a one-shot generator (select, map, reverse, ...)
    callable,  // a bound method or global function
  };

  Value() = default;
  Value(std::nullptr_t) : kind_(Kind::none) {}
  Value(bool b) : kind_(Kind::boolean), int_(b ? 1 : 0) {}
  template <std::integral T>
  requires(!std::same_as<T, bool>) Value(T v) : kind_(Kind::integer), int_(static_cast<std::int64_t>(v)) {
    if constexpr (std::is_unsigned_v<T> && sizeof(T) >= sizeof(std::int64_t))
      require(v <= static_cast<T>(std::numeric_limits<std::int64_t>::max()), "jinja: integer {} exceeds int64", v);
  }
  template <std::floating_point T>
  Value(T v) : kind_(Kind::floating), float_(static_cast<double>(v)) {}
  Value(const char* s) : Value(std::string(s)) {}
  Value(std::string_view s) : Value(std::string(s)) {}
  Value(std::string s) : kind_(Kind::string), str_(std::move(s)) {}
  Value(Array items) : kind_(Kind::list), array_(std::make_shared<const Array>(std::move(items))) {}
  // A dict: Value{{"role", "user"}, {"content", "hi"}}.
  Value(std::initializer_list<std::pair<std::string, Value>> entries) : kind_(Kind::dict) {
    Object object;
    for (const auto& [key, value] : entries) object.emplace_back(Value(key), value);
    object_ = std::make_shared<const Object>(std::move(object));
  }

  // markupsafe's Markup (what |safe and |escape return): prints as a str, but + and its methods escape their
  // other operands, which this interpreter refuses rather than imitates.
  static Value markup(std::string s) {
    Value v(std::move(s));
    v.markup_ = true;
    return v;
  }
  static Value list(Array items) { return Value(std::move(items)); }
  static Value tuple(Array items) { return sequence(Kind::tuple, std::move(items)); }
  static Value dict(Object entries) {
    Value v;
    v.kind_ = Kind::dict;
    v.object_ = std::make_shared<const Object>(std::move(entries));
    return v;
  }
  // Interpreter-made values.
  static Value undefined(std::string hint) {
    Value v;
    v.str_ = std::move(hint);
    return v;
  }
  static Value sequence(Kind kind, Array items, std::string type_name = {}) {
    Value v(std::move(items));
    v.kind_ = kind;
    v.str_ = std::move(type_name);
    return v;
  }
  static Value make_namespace(Object attrs, Kind kind = Kind::namespace_object) {
    Value v;
    v.kind_ = kind;
    v.attrs_ = std::make_shared<Object>(std::move(attrs));
    return v;
  }
  static Value range(std::int64_t start, std::int64_t stop, std::int64_t step, Array items) {
    Value v = sequence(Kind::range, std::move(items));
    v.range_ = {start, stop, step};
    return v;
  }
  static Value callable(std::string name) { return callable(std::move(name), Value()); }
  static Value callable(std::string name, Value self) {
    Value v;
    v.kind_ = Kind::callable;
    v.str_ = std::move(name);
    v.self_ = std::make_shared<const Value>(std::move(self));
    return v;
  }

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::undefined; }
  bool is_none() const { return kind_ == Kind::none; }
  bool is_string() const { return kind_ == Kind::string; }
  bool is_markup() const { return markup_; }
  bool is_number() const { return kind_ == Kind::boolean || kind_ == Kind::integer || kind_ == Kind::floating; }
  bool is_dict() const { return kind_ == Kind::dict; }
  bool is_sequence() const { return array_ != nullptr; }  // list, tuple, dict view, range, iterator

  bool as_bool() const { return int_ != 0; }
  std::int64_t as_int() const { return int_; }  // integer or boolean
  double as_double() const { return kind_ == Kind::floating ? float_ : static_cast<double>(int_); }
  const std::string& as_string() const { return str_; }  // string; undefined: the hint; callable: the name
  const Array& items() const { return *array_; }
  const Object& entries() const { return *object_; }
  const std::shared_ptr<Object>& attributes() const { return attrs_; }  // namespace / loop
  const Value& self() const { return *self_; }                          // a callable's bound object
  const std::array<std::int64_t, 3>& range_arguments() const { return range_; }
  std::size_t* iterator_position() const { return position_.get(); }

  // Dict lookup by string key; nullptr when absent.
  const Value* find(std::string_view key) const {
    for (const auto& [k, v] : *object_)
      if (k.kind_ == Kind::string && k.str_ == key) return &v;
    return nullptr;
  }
  // Building values from C++ (copy on write: other copies keep their contents).
  void push_back(Value item) {
    require(kind_ == Kind::list, "jinja: push_back on a value that is not a list");
    auto copy = std::make_shared<Array>(*array_);
    copy->push_back(std::move(item));
    array_ = std::move(copy);
  }
  void set(const std::string& key, Value value) {
    require(kind_ == Kind::dict, "jinja: set('{}') on a value that is not a dict", key);
    auto copy = std::make_shared<Object>(*object_);
    auto it = std::find_if(copy->begin(), copy->end(),
                           [&](const auto& e) { return e.first.kind_ == Kind::string && e.first.str_ == key; });
    if (it != copy->end())
      it->second = std::move(value);
    else
      copy->emplace_back(Value(key), std::move(value));
    object_ = std::move(copy);
  }
  // A generator over `items`: iterating it (or taking |first) consumes it, as in Python.
  static Value iterator(Array items, std::string type_name) {
    Value v = sequence(Kind::iterator, std::move(items), std::move(type_name));
    v.position_ = std::make_shared<std::size_t>(0);
    return v;
  }

 private:
  Kind kind_ = Kind::undefined;
  std::int64_t int_ = 0;
  double float_ = 0;
  std::string str_;
  std::shared_ptr<const Array> array_;
  std::shared_ptr<const Object> object_;
  std::shared_ptr<Object> attrs_;
  std::shared_ptr<const Value> self_;
  std::shared_ptr<std::size_t> position_;
  std::array<std::int64_t, 3> range_{};
  bool markup_ = false;
};

}  // namespace vidlora::model::jinja

#pragma once
// CaptionTokenizer: the tokenisation policy of the caption metrics. A model turns one caption into its
// tokens (text in, tokens out) and names itself, so that a score can say which tokens it was computed on:
//
//   struct MyAnalyser {
//     std::vector<std::string> tokenize(std::string_view text);  // may keep state (an analyser's lattice)
//     std::string name() const;                                  // e.g. "Okt morphemes (JVM bridge)"
//   };
//
// The built-in models are WhitespaceTokenizer and CharacterTokenizer (eval/tokenize.hpp) and, with MeCab,
// MecabKoTokenizer (eval/mecab_tokenizer.hpp). AnyCaptionTokenizer holds any model behind one type, for
// options structs and configs that cannot be templates.

#include <concepts>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <vidlora/core/error.hpp>

namespace vidlora::eval {

template <class T>
concept CaptionTokenizer = requires(T& tokenizer, const T& const_tokenizer, std::string_view text) {
  { tokenizer.tokenize(text) } -> std::same_as<std::vector<std::string>>;
  { const_tokenizer.name() } -> std::convertible_to<std::string>;
};

// Readable failure for a type that is not a tokenizer (used by the templates that take one).
template <class T>
constexpr void check_caption_tokenizer() {
  static_assert(CaptionTokenizer<T>,
                "vidlora::eval: a caption tokenizer needs `std::vector<std::string> tokenize(std::string_view)` and "
                "`name() const` returning a string (see eval/caption_tokenizer.hpp)");
}

// Any CaptionTokenizer behind one copyable type. Copies share the wrapped tokenizer (an analyser is
// loaded once); like the wrapped tokenizer, one instance is for one thread at a time. Empty when
// default-constructed; tokenize() on an empty one is an error.
class AnyCaptionTokenizer {
 public:
  AnyCaptionTokenizer() = default;

  template <class T>
  requires(!std::same_as<std::remove_cvref_t<T>, AnyCaptionTokenizer>)
      AnyCaptionTokenizer(T&& tokenizer)  // NOLINT(google-explicit-constructor): a tokenizer is one
      : impl_(std::make_shared<Model<std::remove_cvref_t<T>>>(std::forward<T>(tokenizer))) {
    check_caption_tokenizer<std::remove_cvref_t<T>>();
  }

  explicit operator bool() const { return impl_ != nullptr; }

  std::vector<std::string> tokenize(std::string_view text) {
    require(impl_ != nullptr, "AnyCaptionTokenizer: no tokenizer set");
    return impl_->tokenize(text);
  }
  std::string name() const { return impl_ ? impl_->name() : std::string("(none)"); }

 private:
  struct Concept {
    virtual ~Concept() = default;
    virtual std::vector<std::string> tokenize(std::string_view text) = 0;
    virtual std::string name() const = 0;
  };
  template <class T>
  struct Model final : Concept {
    template <class U>
    explicit Model(U&& t) : tokenizer(std::forward<U>(t)) {}
    std::vector<std::string> tokenize(std::string_view text) override { return tokenizer.tokenize(text); }
    std::string name() const override { return std::string(tokenizer.name()); }
    T tokenizer;
  };
  std::shared_ptr<Concept> impl_;
};

}  // namespace vidlora::eval

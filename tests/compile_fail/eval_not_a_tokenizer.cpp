// expect: a caption tokenizer needs
// The caption metrics take any CaptionTokenizer; a type without tokenize()/name() is rejected readably.
#include <vidlora/eval.hpp>

#include <string>
#include <vector>

struct NotATokenizer {
  std::vector<std::string> split(const std::string& text) const { return {text}; }  // wrong name, no name()
};

int main() {
  const std::vector<std::string> candidates = {"a b"};
  const std::vector<std::vector<std::string>> references = {{"a b"}};
  NotATokenizer tokenizer;
  return static_cast<int>(vidlora::eval::meteor(candidates, references, tokenizer).meteor);
}

// demo::korean_morpheme_tokenizer (demo_common.hpp), compiled once for the demo programs.
#include <optional>

#include <fmt/format.h>

#include <vidlora/core/error.hpp>
#include <vidlora/eval/caption_tokenizer.hpp>
#if VIDLORA_DEMO_MECAB  // examples/CMakeLists.txt defines it when vidlora::mecab (MeCab) is available
#include <vidlora/eval/caching_tokenizer.hpp>
#include <vidlora/eval/mecab_tokenizer.hpp>
#endif

namespace demo {

std::optional<vidlora::eval::AnyCaptionTokenizer> korean_morpheme_tokenizer() {
#if VIDLORA_DEMO_MECAB
  try {
    return vidlora::eval::AnyCaptionTokenizer(
        vidlora::eval::CachingTokenizer<vidlora::eval::MecabKoTokenizer>(vidlora::eval::MecabKoTokenizer()));
  } catch (const vidlora::Error& e) {
    fmt::print("(no Korean morpheme METEOR: {})\n", e.what());
    return std::nullopt;
  }
#else
  fmt::print("(no Korean morpheme METEOR: built without MeCab, see tools/install-deps.sh)\n");
  return std::nullopt;
#endif
}

}  // namespace demo

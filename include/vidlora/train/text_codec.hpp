#pragma once
// TextCodec: the text side of the model as the Trainer sees it (tokenizer functions, the prompt with its video
// placeholder, the special ids).

#include <functional>
#include <string>
#include <vector>

namespace vidlora::train {

// Text side of the model: tokenizer functions and the prompt (holding the video placeholder).
struct TextCodec {
  std::function<std::vector<int>(const std::string&)> encode;  // caption text -> ids (no BOS/EOS)
  std::function<std::string(const std::vector<int>&)> decode;  // ids -> text (specials dropped)
  std::vector<int> prompt_ids;                                 // the rendered prompt with one placeholder token
  int placeholder_id = 0;
  int eos_id = -1;
  int pad_id = 0;
};

}  // namespace vidlora::train

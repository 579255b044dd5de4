// expect: Format is not a 4-bit format
// Quantizer<Format> needs a code-book tag (NF4, FP4); a plain type is refused with a readable message.
#include <vidlora/quant.hpp>

#include <vector>

struct Int4 {};  // no name, no 16 code values

int main() {
  const std::vector<float> x(64, 1.0f);
  return static_cast<int>(vidlora::Quantizer<Int4>::quantize(x).numel);
}

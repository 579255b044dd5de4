// expect: BlockSize must be a power of two in 32\.\.4096
// bitsandbytes quantizes 4-bit weights in blocks of 32, 64, ..., 4096; Quantizer<NF4, 48> is refused.
#include <vidlora/quant.hpp>

#include <vector>

int main() {
  const std::vector<float> x(96, 1.0f);
  return static_cast<int>(vidlora::Quantizer<vidlora::NF4, 48>::quantize(x).numel);
}

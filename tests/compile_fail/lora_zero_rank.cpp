// expect: Rank must be a positive integer
// LoraLinear<0, ...> has no low-rank branch: rejected at compile time with a readable message.
#include <vidlora/lora.hpp>

int main() {
  vidlora::LoraLinear<0, 8> layer(vidlora::Matrix::Ones(4, 4));
  return static_cast<int>(layer.scaling());
}

// expect: Base must satisfy vidlora::lora::FrozenWeight
// A Base without apply / apply_transposed / to_dense / add_dense is not a frozen weight.
#include <vidlora/lora.hpp>

struct NotAWeight {
  using scalar_type = float;
  long out_features() const { return 4; }
  long in_features() const { return 4; }
};

int main() {
  vidlora::LoraLinear<2, 4, NotAWeight>* layer = nullptr;
  return layer ? static_cast<int>(layer->scaling()) : sizeof(vidlora::LoraLinear<2, 4, NotAWeight>) > 0 ? 0 : 1;
}

// expect: gpu_vram_gb must be positive
// select_lora_rank is constexpr: a non-positive VRAM in a constant expression is a compile error naming it.
#include <vidlora/lora.hpp>

constexpr int rank = vidlora::select_lora_rank(5000, 0);

int main() { return rank; }

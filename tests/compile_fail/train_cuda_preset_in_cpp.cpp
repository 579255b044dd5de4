// expect: needs a CUDA translation unit
// A GPU preset's Trainer runs its decoder step on the device (train/cuda/decoder_step.cuh): a plain C++ translation
// unit cannot build it, and says how to (compile the source with nvcc, or build for the Cpu preset).
#include <vidlora/presets.hpp>
#include <vidlora/train/trainer.hpp>

int main() { return sizeof(vidlora::Trainer<vidlora::presets::T4>) > 0 ? 0 : 1; }

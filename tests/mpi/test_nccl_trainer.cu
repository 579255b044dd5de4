// The CUDA Trainer over comm::Nccl (the gradients summed over the ranks on the device, before they reach the host;
// or comm::BasicNccl<Single> without MPI: nccl_test_bootstrap.hpp)
// against the same Trainer over comm::Single, one rank (mpiexec -np 1; NCCL refuses two ranks on one GPU): an NCCL
// sum over one rank is the identity, so every loss and every LoRA and projector value must agree bit for bit, with
// the float64 per-clip sums (batch_invariant) and with the float32 micro-batch sums, comm::Nccl held directly and
// through comm::AnyCommunicator (train_captioner's), each block's sums overlapped with the last backward (the default)
// and after it. Ten steps over stage 1 (projector only: the device sums skip the
// LoRA gradients) and stage 2 of the tiny captioning problem (tests/support/tiny_captioning.hpp), LoRA dropout on.
// Exits 77 (SKIPPED) without a CUDA device.
#include <cuda_runtime.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <vidlora/comm/any_communicator.hpp>
#include <vidlora/comm/single.hpp>
#include <vidlora/core/backend.hpp>
#include <vidlora/model/cuda/cuda_mlp2x_gelu.cuh>
#include <vidlora/train/projector_tensors.hpp>
#include <vidlora/train/trainer.hpp>

#include "../support/tiny_captioning.hpp"
#include "nccl_test_bootstrap.hpp"

namespace fs = std::filesystem;
using namespace vidlora;
namespace tiny = test::tiny;

namespace {

template <class Comm>
using DeviceTrainer = Trainer<presets::Cpu, model::cuda::CudaMlp2xGelu, lora::DenseWeight, Comm, backend::Cuda>;

struct Run {
  std::vector<double> losses;
  std::vector<float> values;  // every LoRA factor, then the projector's tensors, flattened
};

template <class Comm>
Run run(TrainerConfig c, Comm comm) {
  fs::remove_all(c.output_dir);
  const auto weights = model::random_decoder_weights(tiny::decoder_config(), 3);
  DeviceTrainer<Comm> trainer(
      c, tiny::decoder_config(), weights,
      model::cuda::CudaMlp2xGelu(model::Mlp2xGelu(tiny::kVision, tiny::kHidden, 11)), tiny::codec(),
      [](const train::Clip& clip) { return tiny::features(clip); }, std::move(comm));
  Run r;
  r.losses = trainer.train(tiny::clips(10), {}).losses;
  const auto put = [&](const auto& m) { r.values.insert(r.values.end(), m.data(), m.data() + m.size()); };
  trainer.decoder().for_each_lora([&](const std::string&, auto& l) {
    put(l.lora_A());
    put(l.lora_B());
  });
  const train::ProjectorTensors p = train::projector_tensors(trainer.projector());
  for (const auto& [name, m] : p.weights) put(*m);
  for (const auto& [name, v] : p.biases) put(*v);
  fs::remove_all(c.output_dir);
  return r;
}

// Ten steps: 10 clips in steps of 2, one epoch of stage 1 and one of stage 2.
TrainerConfig config(bool batch_invariant) {
  // float32: two micro-batches of one clip a step, summed on the device
  TrainerConfig c = tiny::two_stage_config(fs::temp_directory_path() / "vidlora_nccl_trainer", batch_invariant ? 2 : 1,
                                           batch_invariant ? 1 : 2);
  c.stages[0].epochs = 1;
  c.stages[1].epochs = 1;
  c.lora_dropout = 0.1;
  c.batch_invariant = batch_invariant;
  return c;
}

int compare(const char* name, const Run& want, const Run& got) {
  const bool same = want.losses == got.losses && want.values == got.values && !want.losses.empty();
  std::printf("%s: %zu steps, %zu values: %s\n", name, got.losses.size(), got.values.size(),
              same ? "bit for bit as comm::Single" : "DIFFERENT from comm::Single");
  for (std::size_t s = 0; !same && s < want.losses.size() && s < got.losses.size(); ++s)
    std::printf("  step %zu: single %.9g, nccl %.9g\n", s + 1, want.losses[s], got.losses[s]);
  return same ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipping the NCCL trainer tests\n");
    return 77;
  }
  nccl_test::Session session(&argc, &argv);
  int bad = 0;
  try {
    for (const bool batch_invariant : {true, false}) {
      const TrainerConfig c = config(batch_invariant);
      const Run single = run(c, comm::Single{});
      const Run nccl = run(c, nccl_test::make_nccl());
      bad += compare(batch_invariant ? "comm::Nccl, float64 per-clip sums" : "comm::Nccl, float32 micro-batch sums",
                     single, nccl);
      if (batch_invariant) {
        const Run any = run(c, comm::AnyCommunicator(nccl_test::make_nccl()));
        bad += compare("comm::AnyCommunicator(comm::Nccl)", single, any);
      }
      TrainerConfig after = c;  // every block's sums after the step's last backward (the default overlaps them)
      after.overlap_gradient_sums = false;
      bad += compare(
          batch_invariant ? "comm::Nccl, float64 sums, not overlapped" : "comm::Nccl, float32 sums, not overlapped",
          single, run(after, nccl_test::make_nccl()));
    }
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
  return bad ? 1 : 0;
}

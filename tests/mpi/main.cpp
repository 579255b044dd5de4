// vidlora_mpi_tests: the Catch2 tests of data-parallel training, run under mpiexec (MPI_Init here), and the
// fault programs tests/mpi/fault.sh starts:
//   fault-kill DIR   rank 1 kills itself (SIGKILL) while fetching a clip of step 4
//   fault-hang DIR   rank 1 hangs there instead; the others' 3-second timeout must stop the job
//   check-checkpoint DIR FIRST LAST   (no MPI) DIR/checkpoints/last.safetensors is whole, at a step in
//                                     [FIRST, LAST]
// Built with VIDLORA_TEST_TCP it is vidlora_tcp_tests: the same over comm::Tcp, no MPI, the ranks started by
// tests/mpi/tcp_run.sh as torchrun would (a rank that fails exits, which closes its sockets and stops the others).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#if defined(VIDLORA_TEST_TCP)
#include <vidlora/comm/tcp.hpp>
#else
#include <vidlora/comm/mpi.hpp>
#endif
#include <vidlora/io/safetensors.hpp>

#include "tiny_run.hpp"

namespace fs = std::filesystem;
using namespace vidlora;

namespace {

int check_checkpoint(const fs::path& dir, long first, long last) {
  try {
    const auto f = io::SafetensorsFile::open(dir / "checkpoints" / "last.safetensors");
    const auto state = nlohmann::json::parse(f.metadata().at("trainer_state"));
    const long saved = state.at("global_step").get<long>();
    (void)f.matrix("param/multi_modal_projector.linear_1.weight");  // the tensors read back
    std::cout << "checkpoint " << (dir / "checkpoints" / "last.safetensors").string() << " is whole, at step " << saved
              << '\n';
    return saved >= first && saved <= last ? 0 : 1;
  } catch (const std::exception& e) {
    std::cout << "checkpoint unreadable: " << e.what() << '\n';
    return 1;
  }
}

#if defined(VIDLORA_TEST_TCP)
int fault(const std::string& mode, const fs::path& dir) {
  const int rank = comm::tcp_options_from_environment().rank;
#else
int fault(const comm::MpiSession& session, const std::string& mode, const fs::path& dir) {
  const int rank = session.rank();
#endif
  auto config = test::tiny_config(dir, 1, 1);  // one clip per rank per step
  config.checkpoint_every = 1;
  config.progress = &std::cerr;
  config.progress_newlines = true;
  int calls = 0;
  const auto features = [&](const train::Clip& clip) {
    if (rank == 1 && ++calls == 4) {  // step 4 (steps 1-3 checkpointed)
      if (mode == "kill") std::raise(SIGKILL);
      std::this_thread::sleep_for(std::chrono::minutes(5));
    }
    return test::tiny::features(clip);
  };
  try {
#if defined(VIDLORA_TEST_TCP)
    auto trainer = test::make_tiny(config, comm::Tcp::from_environment(std::chrono::seconds(3)), features);
#else
    auto trainer = test::make_tiny(config, comm::Mpi({.timeout = std::chrono::seconds(3)}), features);
#endif
    trainer.train(test::tiny::clips(10), test::tiny::clips(2, 10));
  } catch (const std::exception& e) {
    std::cerr << "vidlora_data_parallel_tests: rank " << rank << ": " << e.what() << '\n' << std::flush;
#if defined(VIDLORA_TEST_TCP)
    std::_Exit(1);  // its sockets close: the other ranks' next collective names this one
#else
    session.abort(1);
#endif
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 5 && std::strcmp(argv[1], "check-checkpoint") == 0)
    return check_checkpoint(argv[2], std::stol(argv[3]), std::stol(argv[4]));
#if defined(VIDLORA_TEST_TCP)
  if (argc == 3 && std::strncmp(argv[1], "fault-", 6) == 0) return fault(argv[1] + 6, argv[2]);
#else
  comm::MpiSession session(&argc, &argv);
  if (argc == 3 && std::strncmp(argv[1], "fault-", 6) == 0) return fault(session, argv[1] + 6, argv[2]);
#endif
  return Catch::Session().run(argc, argv);
}

// comm::Tcp, its ranks as threads of this process on the loopback (each with its own sockets, as processes have):
// the collectives' results (sums in rank order, the same bits on every rank), the rendezvous (two communicators
// on one port, one after the other), and every way a world goes wrong: a rank that stops, one that does not answer,
// one out of step, a wrong world size, a missing rank, nobody listening, a launcher's environment.
#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <future>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <vidlora/comm/tcp.hpp>

using namespace vidlora;

namespace {

using Seconds = std::chrono::duration<double>;

// A port nobody listens on now (bound to 0 and closed: free until someone takes it).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  REQUIRE(::bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// Runs body(rank, options) on `size` threads; options carry the rank, the size, a port all share (`port`, or else
// rank 0 listens on a free one and tells the others) and the timeout. Returns each rank's error ("" when none).
std::vector<std::string> run_world(int size, const std::function<void(int, comm::TcpOptions)>& body,
                                   double timeout_s = 20.0, int fixed_port = 0) {
  std::promise<int> port;
  std::shared_future<int> known = port.get_future().share();
  std::vector<std::string> errors(static_cast<std::size_t>(size));
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r)
    threads.emplace_back([&, r] {
      try {
        comm::TcpOptions o;
        o.rank = r;
        o.size = size;
        o.timeout = Seconds(timeout_s);
        if (fixed_port > 0) {
          o.port = fixed_port;
        } else if (r == 0) {
          o.port = 0;
          o.on_listening = [&port](int p) { port.set_value(p); };
        } else {
          if (known.wait_for(std::chrono::seconds(30)) != std::future_status::ready)
            throw std::runtime_error("rank 0 never listened");
          o.port = known.get();
        }
        body(r, o);
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(r)] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  return errors;
}

bool none(const std::vector<std::string>& errors) {
  for (const auto& e : errors)
    if (!e.empty()) {
      UNSCOPED_INFO(e);
      return false;
    }
  return true;
}

}  // namespace

TEST_CASE("comm::Tcp: sums in rank order, the same bits everywhere, and broadcast, gather, barrier over three ranks",
          "[comm][tcp]") {
  constexpr int kRanks = 3;
  // Values whose float sum depends on the order: the expected result is ((x0 + x1) + x2).
  const auto part = [](int r) { return std::vector<float>{1e8f * (r == 1 ? -1.0f : 1.0f), 1.0f + 0.1f * r, 3.0f}; };
  std::vector<float> want = part(0);
  for (int r = 1; r < kRanks; ++r)
    for (std::size_t i = 0; i < want.size(); ++i) want[i] += part(r)[i];
  std::vector<std::vector<float>> sums(kRanks);
  std::vector<std::vector<double>> big(kRanks);
  std::vector<std::string> broadcasts(kRanks);
  std::vector<std::vector<std::string>> gathers(kRanks);
  const std::string long_text(300000, 'x');  // more than a socket buffer: partial sends and receives
  const auto errors = run_world(kRanks, [&](int r, comm::TcpOptions o) {
    comm::Tcp c(o);
    CHECK(c.rank() == r);
    CHECK(c.size() == kRanks);
    std::vector<float> x = part(r);
    c.all_reduce_sum(std::span<float>(x), "step 1: loss");
    sums[static_cast<std::size_t>(r)] = x;
    std::vector<double> d(1 << 18, 0.5 * (r + 1));  // 2 MB
    c.all_reduce_sum(std::span<double>(d), "step 1: gradients");
    big[static_cast<std::size_t>(r)] = d;
    std::string s = r == 0 ? "hello " + long_text : "";
    c.broadcast(s, "the evaluation");
    broadcasts[static_cast<std::size_t>(r)] = s;
    gathers[static_cast<std::size_t>(r)] = c.gather(std::string(static_cast<std::size_t>(r), 'a' + r), "captions");
    c.barrier("the end");
    std::vector<float> empty;
    c.all_reduce_sum(std::span<float>(empty), "nothing");
  });
  REQUIRE(none(errors));
  for (int r = 0; r < kRanks; ++r) {
    INFO("rank " << r);
    CHECK(sums[static_cast<std::size_t>(r)] == want);  // bit for bit, the rank order's rounding
    CHECK(big[static_cast<std::size_t>(r)] == std::vector<double>(1 << 18, 3.0));
    CHECK(broadcasts[static_cast<std::size_t>(r)] == "hello " + long_text);
  }
  CHECK(want[0] == 1e8f);  // (1e8 - 1e8) + 1e8: the order mattered for the other elements, not this one
  CHECK(gathers[0] == std::vector<std::string>{"", "b", "cc"});
  CHECK(gathers[1].empty());
  CHECK(gathers[2].empty());
}

TEST_CASE("comm::Tcp: a second communicator over the same ranks and port, the first still open", "[comm][tcp]") {
  // As a Trainer takes a communicator of its own beside the program's: rank 0 closes its listening socket once a
  // world is connected, before it welcomes the ranks, so the next rendezvous on that port is a new one.
  const int port = free_port();
  std::vector<double> totals(2);
  const auto errors = run_world(
      2,
      [&](int r, comm::TcpOptions o) {
        comm::Tcp first(o);
        comm::Tcp second(o);
        std::vector<double> a{1.0 + r}, b{10.0 * (r + 1)};
        second.all_reduce_sum(std::span<double>(b), "second");
        first.all_reduce_sum(std::span<double>(a), "first");
        totals[static_cast<std::size_t>(r)] = a[0] + b[0];
        comm::Tcp moved = std::move(second);
        moved.barrier("moved");
      },
      20.0, port);
  REQUIRE(none(errors));
  CHECK(totals == std::vector<double>{33.0, 33.0});
}

TEST_CASE("comm::Tcp: a rank that stops ends the others' collective at once, naming it", "[comm][tcp]") {
  const auto start = std::chrono::steady_clock::now();
  const auto errors = run_world(
      3,
      [&](int r, comm::TcpOptions o) {
        comm::Tcp c(o);
        if (r == 2) return;  // stops: its sockets close
        std::vector<float> x{1.0f};
        c.all_reduce_sum(std::span<float>(x), "step 4: token counts");
      },
      60.0);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(20));  // not the 60 s timeout
  CHECK_THAT(errors[0], Catch::Contains("rank 0 of 3: step 4: token counts: rank 2 closed its connection"));
  CHECK_THAT(errors[1], Catch::Contains("rank 1 of 3: step 4: token counts: rank 0 closed its connection"));
  CHECK(errors[2].empty());
}

TEST_CASE("comm::Tcp: a rank that does not answer ends the collective at the timeout, naming the step", "[comm][tcp]") {
  std::atomic<bool> rank0_done{false};
  const auto errors = run_world(
      2,
      [&](int r, comm::TcpOptions o) {
        comm::Tcp c(o);
        if (r == 1) {  // hangs until rank 0 gave up
          while (!rank0_done) std::this_thread::sleep_for(std::chrono::milliseconds(10));
          return;
        }
        try {
          std::vector<double> x{1.0};
          c.all_reduce_sum(std::span<double>(x), "step 7: loss");
        } catch (...) {
          rank0_done = true;
          throw;
        }
      },
      0.5);
  CHECK_THAT(errors[0],
             Catch::Contains("rank 0 of 2: step 7: loss did not complete within 0.5 s (waiting for rank 1)"));
  CHECK(errors[1].empty());
}

TEST_CASE("comm::Tcp: a rank out of step is named, not summed", "[comm][tcp]") {
  const auto errors = run_world(2, [&](int r, comm::TcpOptions o) {
    comm::Tcp c(o);
    std::vector<float> x(r == 0 ? 3 : 4, 1.0f);
    c.all_reduce_sum(std::span<float>(x), "step 2: gradients");
  });
  CHECK_THAT(errors[0], Catch::Contains("rank 0 of 2: step 2: gradients: rank 1 is out of step: it sent a float sum "
                                        "of 4, this rank is in a float sum of 3"));
  CHECK_THAT(errors[1], Catch::Contains("closed its connection"));
  const auto other = run_world(2, [&](int r, comm::TcpOptions o) {
    comm::Tcp c(o);
    if (r == 1) {
      c.barrier("a barrier");
      return;
    }
    std::string s = "x";
    c.gather(s, "captions");
  });
  CHECK_THAT(other[0], Catch::Contains("rank 1 is out of step: it sent a barrier of 0, this rank is in a gather"));
}

TEST_CASE("comm::Tcp: the rendezvous names a wrong world size, a missing rank and an absent rank 0", "[comm][tcp]") {
  const auto sizes = run_world(
      2,
      [&](int r, comm::TcpOptions o) {
        if (r == 1) o.size = 3;  // started with another WORLD_SIZE
        comm::Tcp c(o);
      },
      5.0);
  CHECK_THAT(sizes[0], Catch::Contains("a process says it is rank 1 of 3 (another world size)"));
  CHECK_FALSE(sizes[1].empty());

  const auto missing = run_world(
      3,
      [&](int r, comm::TcpOptions o) {
        if (r == 2) return;  // never started
        comm::Tcp c(o);
      },
      0.5);
  CHECK_THAT(missing[0], Catch::Contains("only 2 of 3 ranks connected within 0.5 s (missing: 2)"));
  CHECK_FALSE(missing[1].empty());  // waiting for the welcome: rank 0 gave up and closed

  comm::TcpOptions alone;
  alone.rank = 1;
  alone.size = 2;
  alone.port = free_port();
  alone.timeout = Seconds(0.3);
  CHECK_THROWS_WITH(comm::Tcp(alone), Catch::Contains("rank 1 of 2: could not connect to rank 0 at 127.0.0.1:") &&
                                          Catch::Contains("within 0.3 s"));
  comm::TcpOptions bad;
  bad.rank = 2;
  bad.size = 2;
  CHECK_THROWS_WITH(comm::Tcp(bad), Catch::Contains("rank 2 of 2 is not a rank of the world"));
  comm::Tcp one(comm::TcpOptions{});  // a world of one: no socket, every collective a no-op
  std::vector<float> x{2.0f};
  one.all_reduce_sum(std::span<float>(x), "x");
  CHECK(x[0] == 2.0f);
  CHECK(one.gather("me", "g") == std::vector<std::string>{"me"});
}

TEST_CASE("comm::Tcp: the world from a launcher's environment (torchrun's names, then Slurm's)", "[comm][tcp]") {
  for (const char* n : {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID", "SLURM_NTASKS",
                        "SLURM_JOB_ID", "SLURM_STEP_ID", "VIDLORA_TCP_JOB", "TORCHELASTIC_RUN_ID"})
    ::unsetenv(n);
  CHECK(comm::tcp_launched_world_size() == 1);
  comm::TcpOptions o = comm::tcp_options_from_environment();
  CHECK(o.rank == 0);
  CHECK(o.size == 1);
  ::setenv("WORLD_SIZE", "4", 1);
  ::setenv("RANK", "3", 1);
  ::setenv("MASTER_ADDR", "node17", 1);
  ::setenv("MASTER_PORT", "29611", 1);
  o = comm::tcp_options_from_environment();
  CHECK(comm::tcp_launched_world_size() == 4);
  CHECK(o.rank == 3);
  CHECK(o.size == 4);
  CHECK(o.address == "node17");
  CHECK(o.port == 29611);
  ::unsetenv("RANK");
  CHECK_THROWS_WITH(comm::tcp_options_from_environment(),
                    Catch::Contains("WORLD_SIZE says 4 processes but RANK is not set"));
  ::setenv("RANK", "x1", 1);
  CHECK_THROWS_WITH(comm::tcp_options_from_environment(), Catch::Contains("RANK=x1 is not a non-negative integer"));
  for (const char* n : {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}) ::unsetenv(n);
  ::setenv("SLURM_NTASKS", "2", 1);
  ::setenv("SLURM_PROCID", "1", 1);
  CHECK(comm::tcp_launched_world_size() == 1);  // not a launcher's statement: a batch script sees it too
  o = comm::tcp_options_from_environment();
  CHECK(o.rank == 1);
  CHECK(o.size == 2);
  CHECK(o.address == "127.0.0.1");
  CHECK(o.port == 29500);
  CHECK(o.job.empty());
  ::setenv("SLURM_JOB_ID", "77", 1);  // the job's token: another job's ranks on the port are turned away
  ::setenv("SLURM_STEP_ID", "2", 1);
  CHECK(comm::tcp_options_from_environment().job == "77.2");
  ::setenv("VIDLORA_TCP_JOB", "mine", 1);
  CHECK(comm::tcp_options_from_environment().job == "mine");
  for (const char* n : {"SLURM_NTASKS", "SLURM_PROCID", "SLURM_JOB_ID", "SLURM_STEP_ID", "VIDLORA_TCP_JOB"})
    ::unsetenv(n);
}

TEST_CASE("comm::Tcp: a barrier holds every rank until the last one comes", "[comm][tcp]") {
  const auto start = std::chrono::steady_clock::now();
  std::vector<double> left(3);
  const auto errors = run_world(3, [&](int r, comm::TcpOptions o) {
    comm::Tcp c(o);
    c.barrier("all here");  // connected
    const auto t0 = std::chrono::steady_clock::now();
    if (r == 2) std::this_thread::sleep_for(std::chrono::milliseconds(300));
    c.barrier("after the late one");
    left[static_cast<std::size_t>(r)] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  });
  REQUIRE(none(errors));
  for (const double s : left) CHECK(s >= 0.29);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(10));
}

namespace {

// Rank `rank` of a world of two on `port`, of job `job`.
comm::TcpOptions job_options(int rank, int port, std::string job, double timeout_s) {
  comm::TcpOptions o;
  o.rank = rank;
  o.size = 2;
  o.port = port;
  o.job = std::move(job);
  o.timeout = Seconds(timeout_s);
  return o;
}

// Joins the world of `o` and sums `value` over it: the sum, or NaN with the error in `error`.
double joined_sum(const comm::TcpOptions& o, double value, std::string& error) {
  try {
    comm::Tcp c(o);
    std::vector<double> x{value};
    c.all_reduce_sum(std::span<double>(x), "sum");
    return x[0];
  } catch (const std::exception& e) {
    error = e.what();
    return std::nan("");
  }
}

}  // namespace

TEST_CASE("comm::Tcp: another job's process and a silent connection are turned away at the rendezvous", "[comm][tcp]") {
  // Rank 0 of job "a" listens; a process of job "b" that says it is rank 1 of 2 connects first, then one that says
  // nothing; job a's own rank 1 comes last and the world is job a's: its sum is 1 + 2.
  std::promise<int> port;
  std::shared_future<int> known = port.get_future().share();
  std::string error0, error1, stranger_error;
  double sum0 = 0.0, sum1 = 0.0;
  comm::TcpOptions first = job_options(0, 0, "a", 20.0);
  first.hello_timeout = Seconds(0.3);
  first.on_listening = [&port](int p) { port.set_value(p); };
  std::thread rank0([&] { sum0 = joined_sum(first, 1.0, error0); });
  REQUIRE(known.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
  const int p = known.get();
  std::thread stranger([&] {  // job b's rank 1: turned away (its welcome never comes)
    (void)joined_sum(job_options(1, p, "b", 1.0), 5.0, stranger_error);
  });
  const int silent = ::socket(AF_INET, SOCK_STREAM, 0);  // connects and says nothing
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(p));
  CHECK(::connect(silent, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  std::thread rank1([&] { sum1 = joined_sum(job_options(1, p, "a", 20.0), 2.0, error1); });
  rank0.join();
  rank1.join();
  stranger.join();
  ::close(silent);
  CHECK(error0.empty());
  CHECK(error1.empty());
  CHECK(sum0 == 3.0);
  CHECK(sum1 == 3.0);
  CHECK_FALSE(stranger_error.empty());  // rank 0 closed its connection, or it timed out waiting for a welcome
}

TEST_CASE("comm::Tcp: after a collective failed, the next one is an error, not another rank's late data",
          "[comm][tcp]") {
  std::atomic<bool> rank0_gave_up{false};
  const auto errors = run_world(
      2,
      [&](int r, comm::TcpOptions o) {
        comm::Tcp c(o);
        std::vector<double> x{10.0 * (r + 1)};
        if (r == 1) {
          while (!rank0_gave_up) std::this_thread::sleep_for(std::chrono::milliseconds(10));
          c.all_reduce_sum(std::span<double>(x), "step 1: loss");  // late: rank 0 already gave up on step 1
          return;
        }
        try {
          c.all_reduce_sum(std::span<double>(x), "step 1: loss");
        } catch (const comm::CommError&) {
          rank0_gave_up = true;  // caught: the program goes on (the Trainer does not)
        }
        std::vector<double> y{1.0};
        c.all_reduce_sum(std::span<double>(y), "step 2: loss");
      },
      0.3);
  CHECK_THAT(errors[0], Catch::Contains("step 2: loss: this communicator failed in an earlier collective") &&
                            Catch::Contains("step 1: loss did not complete within 0.3 s"));
}

TEST_CASE("comm::Tcp: a broadcast against a gather is out of step, whatever the sizes", "[comm][tcp]") {
  for (const std::size_t bytes : {std::size_t{1}, std::size_t{8} << 20}) {
    INFO(bytes << " bytes");
    const auto errors = run_world(
        2,
        [&](int r, comm::TcpOptions o) {
          comm::Tcp c(o);
          std::string s(bytes, 'x');
          if (r == 0)
            c.broadcast(s, "the evaluation");
          else
            (void)c.gather(s, "captions");
        },
        10.0);
    CHECK_THAT(errors[0], Catch::Contains("rank 1 is out of step: it sent a gather of " + std::to_string(bytes) +
                                          ", this rank is in a broadcast of 0"));
    CHECK_FALSE(errors[1].empty());
  }
}

TEST_CASE("comm::Tcp: communicators of two generations on one port never mix", "[comm][tcp]") {
  // Each rank makes its communicators in the same order (Tcp::from_environment counts them): generation 0, then 1,
  // both on one port. Rank 0 is slow to listen for generation 1: the fast rank 1 is refused and retries until it does
  // (rank 0 closed generation 0's listener before its welcome, so rank 1 never meets the old one).
  const int port = free_port();
  std::vector<double> sums(2);
  const auto errors = run_world(
      2,
      [&](int r, comm::TcpOptions o) {
        o.job = "gen";
        comm::Tcp first(o);
        if (r == 0) std::this_thread::sleep_for(std::chrono::milliseconds(200));
        o.generation = 1;
        comm::Tcp second(o);
        std::vector<double> x{static_cast<double>(r + 1)};
        second.all_reduce_sum(std::span<double>(x), "second");
        std::vector<double> y{10.0 * (r + 1)};
        first.all_reduce_sum(std::span<double>(y), "first");
        sums[static_cast<std::size_t>(r)] = x[0] + y[0];
      },
      20.0, port);
  REQUIRE(none(errors));
  CHECK(sums == std::vector<double>{33.0, 33.0});
}

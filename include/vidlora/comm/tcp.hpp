#pragma once
// comm::Tcp: data-parallel ranks over TCP sockets, host buffers, no MPI. For launchers that start the processes
// themselves and say who is who in the environment (torchrun's RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; a plain
// Slurm srun's SLURM_PROCID and SLURM_NTASKS), and the bootstrap of comm::BasicNccl<comm::Tcp> there: NCCL's unique id
// and the host's few collectives (comm/cuda/basic_nccl.hpp). POSIX sockets; nothing to link.
//
// Rendezvous: rank 0 listens on the port, every other rank connects to the address (retrying until rank 0 listens)
// and says its rank and the world size; once all have come, rank 0 closes its listening socket and answers each, so
// the constructor returns on every rank only when the whole world is connected, and the next Tcp (a new communicator
// over the same ranks: a Trainer takes one of its own) can listen on the same port. Every rank must construct its
// Tcp objects in the same order, as they do with comm::Mpi's duplicated communicators.
//
// A star: a collective sends every rank's part to rank 0, which combines them in rank order (a sum is
// ((x0 + x1) + x2) + …, the same bits on every rank and in every run) and sends the result back. That suits what
// crosses the hosts in a run: the token counts and the loss of every step, the CPU presets' gradients (a few MB) and
// the evaluation's captions; comm::Mpi's algorithms scale better for large host buffers over many ranks.
//
// Faults, as comm::Mpi: every wait on a socket ends at TcpOptions::timeout with a CommError naming this rank, the
// rank waited for and the operation ("step 12: token counts"); a rank whose connection closes (the process died or
// stopped on an error) ends the collective at once with a CommError naming it; rank 0 checks that every rank is in
// the same collective with the same size (every collective starts with each rank's header to rank 0), and names one
// that is not instead of summing it. A collective that threw leaves the communicator failed: its later collectives
// throw at once (their messages would be out of step). Every message carries the job's token (TcpOptions::job and
// generation), so a process of another job that reaches the port during the rendezvous is turned away, not counted
// as a rank; so is a connection that says nothing within TcpOptions::hello_timeout.

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <vidlora/comm/communicator.hpp>

namespace vidlora::comm {

struct TcpOptions {
  int rank = 0;
  int size = 1;
  std::string address = "127.0.0.1";  // rank 0's host name or address (MASTER_ADDR)
  int port = 29500;                   // rank 0's port (MASTER_PORT); 0 on rank 0: any free port (on_listening)
  // How long a collective, and the rendezvous, may wait for the other ranks (as MpiOptions::timeout; at most 1e9 s).
  std::chrono::duration<double> timeout = std::chrono::seconds(600);
  std::function<void(int)> on_listening;  // rank 0: called with its port once it listens (before the others come)
  // The job these ranks belong to (every rank the same; tcp_options_from_environment: VIDLORA_TCP_JOB, torchrun's
  // TORCHELASTIC_RUN_ID or Slurm's SLURM_JOB_ID.SLURM_STEP_ID) and which of its communicators this is (0, 1, …: each
  // rank counts the ones it makes, in the same order; Tcp::from_environment counts them per process).
  std::string job;
  std::uint64_t generation = 0;
  // How long rank 0 waits for a new connection's hello before it drops it (a port scanner, a health check).
  std::chrono::duration<double> hello_timeout = std::chrono::seconds(5);
};

namespace detail {
inline const char* env_first(std::initializer_list<const char*> names) {
  for (const char* n : names)
    if (const char* v = std::getenv(n); v && *v) return v;
  return nullptr;
}
inline int env_int(const char* value, const char* name) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(value, &end, 10);
  if (errno != 0 || end == value || *end != '\0' || v < 0 || v > 1 << 30)
    throw CommError(detail::message("comm::Tcp: {}={} is not a non-negative integer", name, value));
  return static_cast<int>(v);
}
}  // namespace detail

// How many processes a launcher without MPI says it started: torchrun's WORLD_SIZE, 1 when unset. (Slurm's
// SLURM_NTASKS is not taken as such a statement: a batch script's single process sees its allocation's task count
// too; tcp_options_from_environment reads it for a program told to meet over TCP.)
inline int tcp_launched_world_size() {
  const char* v = detail::env_first({"WORLD_SIZE"});
  return v ? std::max(1, detail::env_int(v, "WORLD_SIZE")) : 1;
}

// `base` with the rank, size, address and port a launcher without MPI gives: RANK / WORLD_SIZE (torchrun), else
// SLURM_PROCID / SLURM_NTASKS (srun); MASTER_ADDR and MASTER_PORT when set (base's otherwise). A size above 1
// without a rank is an error naming the variables.
inline TcpOptions tcp_options_from_environment(TcpOptions base = {}) {
  const bool torchrun = detail::env_first({"WORLD_SIZE"}) != nullptr;
  base.size = 1;
  if (torchrun)
    base.size = tcp_launched_world_size();
  else if (const char* n = detail::env_first({"SLURM_NTASKS"}))
    base.size = std::max(1, detail::env_int(n, "SLURM_NTASKS"));
  const char* rank_name = torchrun ? "RANK" : "SLURM_PROCID";
  if (const char* r = detail::env_first({rank_name}))
    base.rank = detail::env_int(r, rank_name);
  else if (base.size > 1)
    throw CommError(detail::message("comm::Tcp: {} says {} processes but {} is not set: which rank is this one?",
                                    torchrun ? "WORLD_SIZE" : "SLURM_NTASKS", base.size, rank_name));
  else
    base.rank = 0;
  if (const char* a = detail::env_first({"MASTER_ADDR"})) base.address = a;
  if (const char* p = detail::env_first({"MASTER_PORT"})) base.port = detail::env_int(p, "MASTER_PORT");
  if (const char* j = detail::env_first({"VIDLORA_TCP_JOB", "TORCHELASTIC_RUN_ID"})) {
    base.job = j;
  } else if (const char* slurm = detail::env_first({"SLURM_JOB_ID"})) {
    const char* step = detail::env_first({"SLURM_STEP_ID"});
    base.job = std::string(slurm) + "." + (step ? step : "");
  }
  return base;
}

class Tcp {
 public:
  static constexpr Buffers buffers = Buffers::Host;

  // Connects the world: returns on every rank once all `options.size` ranks are connected (or throws CommError
  // after options.timeout naming who is missing).
  explicit Tcp(TcpOptions options) : options_(std::move(options)) {
    if (options_.size < 1 || options_.rank < 0 || options_.rank >= options_.size)
      throw CommError(
          detail::message("comm::Tcp: rank {} of {} is not a rank of the world", options_.rank, options_.size));
    if (options_.port < 0 || options_.port > 65535 || (options_.rank != 0 && options_.port == 0))
      throw CommError(detail::message("comm::Tcp: port {} (rank {})", options_.port, options_.rank));
    options_.timeout = std::min(options_.timeout, std::chrono::duration<double>(1e9));  // a representable deadline
    if (options_.size == 1) return;
    token_ = job_token(options_.job, options_.generation);
    peers_.assign(static_cast<std::size_t>(options_.size), -1);
    try {
      if (options_.rank == 0)
        accept_world();
      else
        join_world();
    } catch (...) {
      close_all();
      throw;
    }
  }
  // The world a launcher without MPI started (tcp_options_from_environment), the process's next communicator of it.
  static Tcp from_environment(std::chrono::duration<double> timeout = std::chrono::seconds(600)) {
    static std::atomic<std::uint64_t> made{0};
    TcpOptions o;
    o.timeout = timeout;
    o = tcp_options_from_environment(std::move(o));
    if (o.size > 1) o.generation = made++;
    return Tcp(std::move(o));
  }
  Tcp(const Tcp&) = delete;
  Tcp& operator=(const Tcp&) = delete;
  Tcp(Tcp&& o) noexcept
      : options_(std::move(o.options_)),
        peers_(std::exchange(o.peers_, {})),
        token_(o.token_),
        failed_(std::exchange(o.failed_, {})) {
    o.options_.size = 1;  // a moved-from communicator is a world of one
    o.options_.rank = 0;
  }
  Tcp& operator=(Tcp&& o) noexcept {
    if (this != &o) {
      close_all();
      options_ = std::move(o.options_);
      peers_ = std::exchange(o.peers_, {});
      token_ = o.token_;
      failed_ = std::exchange(o.failed_, {});
      o.options_.size = 1;
      o.options_.rank = 0;
    }
    return *this;
  }
  ~Tcp() { close_all(); }

  int rank() const { return options_.rank; }
  int size() const { return options_.size; }
  const TcpOptions& options() const { return options_; }

  void all_reduce_sum(std::span<float> x, std::string_view what) {
    guarded(what, [&] { sum(x, Op::SumFloat, what); });
  }
  void all_reduce_sum(std::span<double> x, std::string_view what) {
    guarded(what, [&] { sum(x, Op::SumDouble, what); });
  }

  // Every rank first says it is in the broadcast (rank 0 checks), then rank 0 sends the string.
  void broadcast(std::string& s, std::string_view what) {
    guarded(what, [&] {
      const Clock::time_point deadline = deadline_from_now();
      if (rank() == 0) {
        for (int r = 1; r < size(); ++r) (void)receive_header(r, Op::Broadcast, 0, deadline, what);
        for (int r = 1; r < size(); ++r) {
          send_header(r, Op::Broadcast, s.size(), deadline, what);
          send_bytes(r, s.data(), s.size(), deadline, what);
        }
        return;
      }
      send_header(0, Op::Broadcast, 0, deadline, what);
      const std::uint64_t n = receive_header(0, Op::Broadcast, kAnyCount, deadline, what);
      s.assign(static_cast<std::size_t>(n), '\0');
      receive_bytes(0, s.data(), s.size(), deadline, what);
    });
  }

  // Rank 0 receives every rank's string in rank order; the others an empty vector, once rank 0 has them all.
  std::vector<std::string> gather(const std::string& mine, std::string_view what) {
    if (size() == 1) return {mine};
    std::vector<std::string> all;
    guarded(what, [&] {
      const Clock::time_point deadline = deadline_from_now();
      if (rank() != 0) {
        send_header(0, Op::Gather, mine.size(), deadline, what);
        send_bytes(0, mine.data(), mine.size(), deadline, what);
        (void)receive_header(0, Op::Gather, 0, deadline, what);  // rank 0 took it (and checked it was a gather)
        return;
      }
      all.push_back(mine);
      for (int r = 1; r < size(); ++r) {
        const std::uint64_t n = receive_header(r, Op::Gather, kAnyCount, deadline, what);
        std::string& s = all.emplace_back(static_cast<std::size_t>(n), '\0');
        receive_bytes(r, s.data(), s.size(), deadline, what);
      }
      for (int r = 1; r < size(); ++r) send_header(r, Op::Gather, 0, deadline, what);
    });
    return all;
  }

  void barrier(std::string_view what) {
    guarded(what, [&] {
      const Clock::time_point deadline = deadline_from_now();
      if (rank() != 0) {
        send_header(0, Op::Barrier, 0, deadline, what);
        (void)receive_header(0, Op::Barrier, 0, deadline, what);
        return;
      }
      for (int r = 1; r < size(); ++r) (void)receive_header(r, Op::Barrier, 0, deadline, what);
      for (int r = 1; r < size(); ++r) send_header(r, Op::Barrier, 0, deadline, what);
    });
  }

 private:
  using Clock = std::chrono::steady_clock;
  enum class Op : std::uint32_t { Hello = 1, Welcome, SumFloat, SumDouble, Broadcast, Gather, Barrier };
  static constexpr std::uint32_t kMagic = 0x564C5443;  // "VLTC"
  static constexpr std::uint64_t kAnyCount = ~std::uint64_t{0};
  struct Header {
    std::uint32_t magic = kMagic;
    std::uint32_t op = 0;
    std::uint64_t count = 0;  // values (sums), bytes (strings), the sender's rank and world size (hello)
    std::uint64_t token = 0;  // the job and generation (job_token)
  };

  // FNV-1a of the job's id, mixed with the generation: the same on every rank of one communicator.
  static std::uint64_t job_token(const std::string& job, std::uint64_t generation) {
    std::uint64_t h = 1469598103934665603ull;
    for (const unsigned char c : job) h = (h ^ c) * 1099511628211ull;
    return h ^ (generation * 0x9E3779B97F4A7C15ull);
  }

  // Runs one collective: nothing on a world of one; on a failed communicator an error; a collective that throws
  // leaves it failed (its peers' messages for it may still arrive: the next collective would read them).
  template <class F>
  void guarded(std::string_view what, F&& f) {
    if (size() == 1) return;
    if (!failed_.empty())
      throw CommError(detail::message(
          "rank {} of {}: {}: this communicator failed in an earlier collective ({}); its messages are out of step",
          rank(), size(), what, failed_));
    try {
      f();
    } catch (const std::exception& e) {
      failed_ = e.what();
      throw;
    }
  }

  static const char* op_name(std::uint32_t op) {
    switch (static_cast<Op>(op)) {
      case Op::Hello: return "a hello";
      case Op::Welcome: return "a welcome";
      case Op::SumFloat: return "a float sum";
      case Op::SumDouble: return "a double sum";
      case Op::Broadcast: return "a broadcast";
      case Op::Gather: return "a gather";
      case Op::Barrier: return "a barrier";
    }
    return "an unknown message";
  }

  Clock::time_point deadline_from_now() const {
    return Clock::now() + std::chrono::duration_cast<Clock::duration>(options_.timeout);
  }

  template <class T>
  void sum(std::span<T> x, Op op, std::string_view what) {
    const Clock::time_point deadline = deadline_from_now();
    const std::size_t bytes = x.size() * sizeof(T);
    if (rank() != 0) {
      send_header(0, op, x.size(), deadline, what);
      send_bytes(0, x.data(), bytes, deadline, what);
      (void)receive_header(0, op, x.size(), deadline, what);
      receive_bytes(0, x.data(), bytes, deadline, what);
      return;
    }
    std::vector<T> part(x.size());
    for (int r = 1; r < size(); ++r) {  // in rank order: ((x0 + x1) + x2) + ...
      (void)receive_header(r, op, x.size(), deadline, what);
      receive_bytes(r, part.data(), bytes, deadline, what);
      for (std::size_t i = 0; i < x.size(); ++i) x[i] += part[i];
    }
    for (int r = 1; r < size(); ++r) {
      send_header(r, op, x.size(), deadline, what);
      send_bytes(r, x.data(), bytes, deadline, what);
    }
  }

  // ---- the rendezvous
  // Rank 0's listening socket on the port, for IPv6 and IPv4 both (an IPv6 socket that also takes IPv4), or IPv4
  // alone where the machine has no IPv6.
  int listen_on_port() {
    const auto port = htons(static_cast<std::uint16_t>(options_.port));
    sockaddr_in6 any6{};
    any6.sin6_family = AF_INET6;
    any6.sin6_addr = in6addr_any;
    any6.sin6_port = port;
    sockaddr_in any4{};
    any4.sin_family = AF_INET;
    any4.sin_addr.s_addr = htonl(INADDR_ANY);
    any4.sin_port = port;
    const int six = bound_socket(AF_INET6, reinterpret_cast<const sockaddr*>(&any6), sizeof any6);
    if (six >= 0) return six;
    if (errno != EAFNOSUPPORT && errno != EADDRNOTAVAIL)
      fail_errno(detail::message("bind to port {}", options_.port).c_str(), "the rendezvous");
    const int four = bound_socket(AF_INET, reinterpret_cast<const sockaddr*>(&any4), sizeof any4);
    if (four < 0) fail_errno(detail::message("bind to port {}", options_.port).c_str(), "the rendezvous");
    return four;
  }
  // A socket of `family` bound to `address` (an IPv6 one takes IPv4 too), or -1 with errno set.
  static int bound_socket(int family, const sockaddr* address, socklen_t length) {
    const int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    const int yes = 1, no = 0;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    if (family == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &no, sizeof no);
    if (::bind(fd, address, length) == 0) return fd;
    const int bind_error = errno;
    ::close(fd);
    errno = bind_error;
    return -1;
  }

  void accept_world() {
    const int listener = listen_on_port();
    struct Closer {
      int fd;
      ~Closer() {
        if (fd >= 0) ::close(fd);
      }
    } guard{listener};
    if (::listen(listener, options_.size + 8) != 0) fail_errno("listen", "the rendezvous");
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    ::getsockname(listener, reinterpret_cast<sockaddr*>(&bound), &len);
    const int port = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port
                                                       : reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
    if (options_.on_listening) options_.on_listening(port);
    const Clock::time_point deadline = deadline_from_now();
    for (int joined = 1; joined < size();) {
      if (!wait_for(listener, POLLIN, deadline))
        throw CommError(detail::message(
            "rank 0 of {}: the rendezvous on port {}: only {} of {} ranks connected within {:g} s (missing: {}); "
            "start every rank with the same MASTER_ADDR / MASTER_PORT, or raise the timeout",
            size(), port, joined, size(), options_.timeout.count(), missing_ranks()));
      const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        fail_errno("accept", "the rendezvous");
      }
      tune(fd);
      Header hello;
      const Clock::time_point hello_by =
          std::min(deadline, Clock::now() + std::chrono::duration_cast<Clock::duration>(options_.hello_timeout));
      if (!receive_raw(fd, &hello, sizeof hello, hello_by) || hello.magic != kMagic ||
          hello.op != static_cast<std::uint32_t>(Op::Hello) || hello.token != token_) {
        ::close(fd);  // not a rank of this job's communicator (another job, a port scanner, silence): keep listening
        continue;
      }
      const auto r = static_cast<int>(hello.count >> 32), n = static_cast<int>(hello.count & 0xffffffffu);
      if (n != size() || r <= 0 || r >= size() || peers_[static_cast<std::size_t>(r)] >= 0) {
        ::close(fd);
        throw CommError(detail::message(
            "rank 0 of {}: the rendezvous on port {}: a process says it is rank {} of {} ({}); every rank must be "
            "started with the same world size and its own rank",
            size(), port, r, n, n != size() ? "another world size" : "a rank taken or out of range"));
      }
      peers_[static_cast<std::size_t>(r)] = fd;
      ++joined;
    }
    ::close(guard.fd);  // before the welcome: the next communicator may listen on this port
    guard.fd = -1;
    for (int r = 1; r < size(); ++r) send_header(r, Op::Welcome, 0, deadline_from_now(), "the rendezvous");
  }

  void join_world() {
    const Clock::time_point deadline = deadline_from_now();
    const std::string service = std::to_string(options_.port);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    std::string last_error = "no address";
    while (true) {
      addrinfo* list = nullptr;
      const int rc = ::getaddrinfo(options_.address.c_str(), service.c_str(), &hints, &list);
      if (rc != 0) {
        last_error = ::gai_strerror(rc);
      } else {
        for (addrinfo* a = list; a && peers_[0] < 0; a = a->ai_next)
          peers_[0] = connect_before(a, deadline, last_error);
        ::freeaddrinfo(list);
      }
      if (peers_[0] >= 0) break;
      if (Clock::now() >= deadline)
        throw CommError(detail::message(
            "rank {} of {}: could not connect to rank 0 at {}:{} within {:g} s ({}); start rank 0 with the same "
            "MASTER_ADDR / MASTER_PORT, or raise the timeout",
            rank(), size(), options_.address, options_.port, options_.timeout.count(), last_error));
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // rank 0 is not listening yet
    }
    tune(peers_[0]);
    const std::uint64_t who = (static_cast<std::uint64_t>(rank()) << 32) | static_cast<std::uint32_t>(size());
    send_header(0, Op::Hello, who, deadline, "the rendezvous");
    (void)receive_header(0, Op::Welcome, 0, deadline, "the rendezvous");
  }

  // A connected socket to `a` (a non-blocking connect, waited for until the deadline), or -1 with the reason.
  static int connect_before(const addrinfo* a, Clock::time_point deadline, std::string& error) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) {
      error = std::strerror(errno);
      return -1;
    }
    if (::connect(fd, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
      error = std::strerror(errno);
      ::close(fd);
      return -1;
    }
    if (!wait_for(fd, POLLOUT, deadline)) {
      error = "timed out";
      ::close(fd);
      return -1;
    }
    int so_error = 0;
    socklen_t len = sizeof so_error;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len);
    if (so_error != 0) {
      error = std::strerror(so_error);
      ::close(fd);
      return -1;
    }
    // A connect to a port of this machine in the ephemeral range can meet itself (TCP's simultaneous open) while
    // nobody listens there: that is not rank 0.
    sockaddr_storage self{}, peer{};
    socklen_t self_len = sizeof self, peer_len = sizeof peer;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&self), &self_len) == 0 &&
        ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) == 0 && self_len == peer_len &&
        std::memcmp(&self, &peer, self_len) == 0) {
      error = "connected to itself: nobody listens there";
      ::close(fd);
      return -1;
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
  }

  static void tune(int fd) {
    const int yes = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);  // small messages every step: no Nagle delay
  }

  // ---- messages
  // Waits until fd is ready for `events` (true) or the deadline passes (false).
  static bool wait_for(int fd, short events, Clock::time_point deadline) {
    while (true) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return false;
      pollfd p{fd, events, 0};
      const int rc = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
      if (rc > 0) return true;  // ready, or an error / hang-up that the next read or write reports
      if (rc < 0 && errno != EINTR) return false;
    }
  }
  // All n bytes into `data` (false: the peer closed the connection first or the deadline passed).
  static bool receive_raw(int fd, void* data, std::size_t n, Clock::time_point deadline) {
    auto* p = static_cast<char*>(data);
    while (n > 0) {
      if (!wait_for(fd, POLLIN, deadline)) return false;
      const ssize_t got = ::recv(fd, p, n, MSG_DONTWAIT);
      if (got == 0) return false;
      if (got < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
        return false;
      }
      p += got;
      n -= static_cast<std::size_t>(got);
    }
    return true;
  }

  void send_bytes(int peer, const void* data, std::size_t n, Clock::time_point deadline, std::string_view what) {
    const int fd = peers_[static_cast<std::size_t>(peer)];
    const auto* p = static_cast<const char*>(data);
    while (n > 0) {
      if (!wait_for(fd, POLLOUT, deadline)) timed_out(peer, what);
      const ssize_t sent = ::send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (sent < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
        if (errno == EPIPE || errno == ECONNRESET) closed(peer, what);
        fail_errno("send", what);
      }
      p += sent;
      n -= static_cast<std::size_t>(sent);
    }
  }
  void receive_bytes(int peer, void* data, std::size_t n, Clock::time_point deadline, std::string_view what) {
    const int fd = peers_[static_cast<std::size_t>(peer)];
    auto* p = static_cast<char*>(data);
    while (n > 0) {
      if (!wait_for(fd, POLLIN, deadline)) timed_out(peer, what);
      const ssize_t got = ::recv(fd, p, n, MSG_DONTWAIT);
      if (got == 0) closed(peer, what);
      if (got < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
        if (errno == ECONNRESET) closed(peer, what);
        fail_errno("recv", what);
      }
      p += got;
      n -= static_cast<std::size_t>(got);
    }
  }
  void send_header(int peer, Op op, std::uint64_t count, Clock::time_point deadline, std::string_view what) {
    const Header h{kMagic, static_cast<std::uint32_t>(op), count, token_};
    send_bytes(peer, &h, sizeof h, deadline, what);
  }
  // The peer's next header, which must be `op` with `count` (kAnyCount: any); returns its count.
  std::uint64_t receive_header(int peer, Op op, std::uint64_t count, Clock::time_point deadline,
                               std::string_view what) {
    Header h;
    receive_bytes(peer, &h, sizeof h, deadline, what);
    if (h.magic != kMagic || h.token != token_)
      throw CommError(detail::message("rank {} of {}: {}: rank {} sent bytes that are no message of this communicator",
                                      rank(), size(), what, peer));
    if (h.op != static_cast<std::uint32_t>(op) || (count != kAnyCount && h.count != count))
      throw CommError(detail::message(
          "rank {} of {}: {}: rank {} is out of step: it sent {} of {}, this rank is in {} of {} (every rank must "
          "call the same collectives in the same order)",
          rank(), size(), what, peer, op_name(h.op), h.count, op_name(static_cast<std::uint32_t>(op)),
          count == kAnyCount ? std::string("any size") : std::to_string(count)));
    return h.count;
  }

  [[noreturn]] void timed_out(int peer, std::string_view what) const {
    throw CommError(detail::message(
        "rank {} of {}: {} did not complete within {:g} s (waiting for rank {}): another rank died, hangs or is that "
        "far behind (its own error, if any, is in its output); raise the timeout if ranks are just slow",
        rank(), size(), what, options_.timeout.count(), peer));
  }
  [[noreturn]] void closed(int peer, std::string_view what) const {
    throw CommError(detail::message(
        "rank {} of {}: {}: rank {} closed its connection: it died or stopped (its own error, if any, is in its "
        "output)",
        rank(), size(), what, peer));
  }
  [[noreturn]] void fail_errno(const char* call, std::string_view what) const {
    throw CommError(
        detail::message("rank {} of {}: {}: {} failed: {}", rank(), size(), what, call, std::strerror(errno)));
  }
  std::string missing_ranks() const {
    std::string s;
    for (int r = 1; r < size(); ++r)
      if (peers_[static_cast<std::size_t>(r)] < 0) s += (s.empty() ? "" : ", ") + std::to_string(r);
    return s;
  }
  void close_all() noexcept {
    for (int& fd : peers_)
      if (fd >= 0) {
        ::close(fd);
        fd = -1;
      }
  }

  TcpOptions options_;
  std::vector<int> peers_;   // rank 0: rank r's socket at [r]; the others: rank 0's at [0]; -1: none
  std::uint64_t token_ = 0;  // job_token(options_.job, options_.generation)
  std::string failed_;       // the error of the collective that failed (then every later one throws)
};
static_assert(Communicator<Tcp>);

}  // namespace vidlora::comm

#pragma once
// A CUDA thread block on one host thread, for kernel bodies written per thread over a policy (model/cuda/
// flash_attention_mma.cuh): one fiber per CUDA thread (fiber_context.hpp), run in turn, each until it waits at a
// barrier or ends; the block's barrier, the warp's butterfly shuffle, and
// the warp-wide mma.sync.aligned.m16n8k16.row.col with fp32 accumulation, whose fragment layouts are written here
// from the PTX ISA (Matrix fragments for mma.m16n8k16 with floating point type), apart from the kernel's own
// indexing: with groupID = lane >> 2 and threadID_in_group = lane % 4,
//   A (16×16, row): a_i at row groupID for i in {0, 1, 4, 5}, else groupID + 8; column threadID_in_group·2 + (i & 1),
//                   plus 8 for i ≥ 4; two 16-bit elements per 32-bit register, a0 in the low half of the first;
//   B (16×8, col):  b_i at row threadID_in_group·2 + (i & 1), plus 8 for i ≥ 2; column groupID;
//   C (16×8, f32):  c_i at row groupID for i < 2, else groupID + 8; column threadID_in_group·2 + (i & 1).
// Every lane hands its registers to the warp, waits for all 32 and computes its own outputs from the whole fragments:
// what the device does in one instruction. The products of 16-bit
// values are exact in fp32; they are summed in k order onto c (the tensor cores' order is theirs). ldmatrix.x4 the
// same way, every lane's row address handed to the warp (ldmatrix_layout.hpp).
#include <sys/mman.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "fiber_context.hpp"
#include "ldmatrix_layout.hpp"

namespace vidlora::test {

template <class Format>
class SimtBlock {
  struct Scratch {  // what a warp's lanes exchange
    std::array<float, 32> f{};
    std::array<std::array<std::uint32_t, 4>, 32> a{};
    std::array<std::array<std::uint32_t, 2>, 32> b{};
    const void* rows[32] = {};
  };
  // A barrier of `expected` threads: the last to arrive opens it (a new generation); the others wait for that.
  struct Barrier {
    int expected = 0, arrived = 0;
    std::uint64_t generation = 0;
  };
  // Two scratches used in turn, so that one barrier per exchange is enough: a lane writes a scratch again two
  // exchanges later, after the barrier of the exchange between, which every lane reaches only when done reading it.
  struct Warp {
    Barrier bar{32};
    Scratch scratch[2];
  };
  // A fiber's stack, mapped with a guard page below it: an overflow faults instead of writing over another's.
  struct Stack {
    static constexpr std::size_t kGuard = 4096, kBytes = 512 * 1024;
    char* base = nullptr;
    Stack() {
      void* p = ::mmap(nullptr, kGuard + kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) throw std::runtime_error("SimtBlock: cannot map a fiber stack");
      base = static_cast<char*>(p);
      if (::mprotect(base, kGuard, PROT_NONE) != 0) {
        ::munmap(base, kGuard + kBytes);
        throw std::runtime_error("SimtBlock: cannot protect a fiber stack's guard page");
      }
    }
    ~Stack() { ::munmap(base, kGuard + kBytes); }
    Stack(const Stack&) = delete;
    Stack& operator=(const Stack&) = delete;
    char* usable() const { return base + kGuard; }
  };
  struct Fiber {
    fiber::Context context;
    Stack stack;
    bool done = false;
  };

 public:
  explicit SimtBlock(int threads) : threads_(threads), block_{threads} {
    for (int w = 0; w < threads / 32; ++w) warps_.push_back(std::make_unique<Warp>());
    for (int t = 0; t < threads; ++t) fibers_.push_back(std::make_unique<Fiber>());
  }

  class Thread {
   public:
    using format = Format;
    Thread(SimtBlock* block, int tid) : block_(block), tid_(tid) {}
    int thread() const { return tid_; }
    void sync() { block_->arrive_and_wait(block_->block_); }
    float shfl_xor(float v, int lane_mask) {
      Scratch& w = hand_in([&](Scratch& s) { s.f[static_cast<std::size_t>(lane())] = v; });
      return w.f[static_cast<std::size_t>(lane() ^ lane_mask)];
    }
    void mma(float (&c)[4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]) {
      const auto me = static_cast<std::size_t>(lane());
      Scratch& w = hand_in([&](Scratch& s) {
        for (int i = 0; i < 4; ++i) s.a[me][static_cast<std::size_t>(i)] = a[i];
        s.b[me] = {b[0], b[1]};
      });
      const int group = lane() >> 2, in_group = lane() % 4;
      for (int i = 0; i < 4; ++i) {
        const int row = i < 2 ? group : group + 8, col = in_group * 2 + (i & 1);
        float acc = c[i];
        for (int k = 0; k < 16; ++k) acc += element_a(w, row, k) * element_b(w, k, col);
        c[i] = acc;
      }
    }
    template <bool Trans>
    void ldmatrix_x4(std::uint32_t (&r)[4], const std::uint32_t* row) {
      Scratch& w = hand_in([&](Scratch& s) { s.rows[lane()] = row; });
      for (int i = 0; i < 4; ++i) r[i] = ldmatrix_register(w.rows, lane(), i, Trans);
    }

   private:
    int lane() const { return tid_ % 32; }
    // The lane's part written into this exchange's scratch, then the warp's barrier: the scratch holds every lane's.
    template <class Write>
    Scratch& hand_in(Write&& write) {
      Warp& w = *block_->warps_[static_cast<std::size_t>(tid_ / 32)];
      Scratch& s = w.scratch[turn_];
      turn_ ^= 1;
      write(s);
      block_->arrive_and_wait(w.bar);
      return s;
    }
    // Element (row, k) of A: held by lane groupID·4 + threadID_in_group; element index i as above.
    static float element_a(const Scratch& w, int row, int k) {
      const int group = row % 8, in_group = (k % 8) / 2;
      const int i = (k & 1) + (row >= 8 ? 2 : 0) + (k >= 8 ? 4 : 0);
      return half(w.a[static_cast<std::size_t>(group * 4 + in_group)][static_cast<std::size_t>(i / 2)], i % 2);
    }
    // Element (k, col) of B.
    static float element_b(const Scratch& w, int k, int col) {
      const int in_group = (k % 8) / 2, i = (k & 1) + (k >= 8 ? 2 : 0);
      return half(w.b[static_cast<std::size_t>(col * 4 + in_group)][static_cast<std::size_t>(i / 2)], i % 2);
    }
    static float half(std::uint32_t reg, int high) {
      return Format::to_float(static_cast<typename Format::type>(high ? reg >> 16 : reg & 0xffffu));
    }
    SimtBlock* block_;
    int tid_;
    int turn_ = 0;  // which scratch the next exchange uses
  };

  // body(Thread&) on every thread of the block, each a fiber, run in turn until all have ended. A thread that ends
  // while others wait at a barrier it never reaches (a kernel bug: a hang on a GPU) is an error, as is an exception
  // out of a body (rethrown here). After such an error the fibers still waiting are dropped, what their stacks hold
  // not destroyed (a test that fails anyway). The switches are not announced to AddressSanitizer: under it a body
  // must not throw.
  template <class Body>
  void run(Body&& body) {
    body_ = [&body](Thread& t) { body(t); };
    failure_ = nullptr;
    block_.arrived = 0;
    for (auto& w : warps_) w->bar.arrived = 0;
    for (int tid = 0; tid < threads_; ++tid) {
      Fiber& f = *fibers_[static_cast<std::size_t>(tid)];
      f.done = false;
      fiber::make_context(f.context, f.stack.usable(), Stack::kBytes, &SimtBlock::entry);
    }
    SimtBlock* const outer = running_;
    running_ = this;
    int remaining = threads_;
    while (remaining > 0) {
      const std::uint64_t before = progress_;
      for (int tid = 0; tid < threads_; ++tid) {
        Fiber& f = *fibers_[static_cast<std::size_t>(tid)];
        if (f.done) continue;
        current_ = tid;
        fiber::switch_to(scheduler_, f.context);
        if (f.done) --remaining;
      }
      if (remaining > 0 && progress_ == before) {
        running_ = outer;
        if (failure_) std::rethrow_exception(failure_);
        throw std::logic_error("SimtBlock: " + std::to_string(remaining) +
                               " threads wait at a barrier the others ended without reaching");
      }
    }
    running_ = outer;
    body_ = nullptr;
    if (failure_) std::rethrow_exception(failure_);
  }

 private:
  // Where each fiber starts: the body on its thread, then back to the scheduler for good.
  static void entry() {
    SimtBlock* const block = running_;
    const int tid = block->current_;
    try {
      Thread t(block, tid);
      block->body_(t);
    } catch (...) {
      if (!block->failure_) block->failure_ = std::current_exception();
    }
    Fiber& f = *block->fibers_[static_cast<std::size_t>(tid)];
    f.done = true;
    ++block->progress_;
    fiber::switch_to(f.context, block->scheduler_);
  }
  // The running fiber back to the scheduler, to be resumed on its next turn.
  void yield() { fiber::switch_to(fibers_[static_cast<std::size_t>(current_)]->context, scheduler_); }
  void arrive_and_wait(Barrier& bar) {
    const std::uint64_t generation = bar.generation;
    ++progress_;
    if (++bar.arrived == bar.expected) {
      bar.arrived = 0;
      ++bar.generation;
      return;
    }
    while (bar.generation == generation) yield();
  }

  int threads_;
  Barrier block_;
  std::vector<std::unique_ptr<Warp>> warps_;
  std::vector<std::unique_ptr<Fiber>> fibers_;
  fiber::Context scheduler_;
  std::function<void(Thread&)> body_;
  std::exception_ptr failure_;
  std::uint64_t progress_ = 0;  // arrivals and ends: a round of turns without any is a deadlock
  int current_ = -1;
  static inline thread_local SimtBlock* running_ = nullptr;
};

}  // namespace vidlora::test

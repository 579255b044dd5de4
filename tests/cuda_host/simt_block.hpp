#pragma once
// A CUDA thread block on host threads, for kernel bodies written per thread over a policy (model/cuda/
// flash_attention_mma.cuh): one std::thread per CUDA thread, the block's barrier, the warp's butterfly shuffle, and
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
#include <array>
#include <barrier>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

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
  // Two scratches used in turn, so that one barrier per exchange is enough: a lane writes a scratch again two
  // exchanges later, after the barrier of the exchange between, which every lane reaches only when done reading it.
  struct Warp {
    std::barrier<> bar{32};
    Scratch scratch[2];
  };

 public:
  explicit SimtBlock(int threads) : threads_(threads), block_(threads) {
    for (int w = 0; w < threads / 32; ++w) warps_.push_back(std::make_unique<Warp>());
  }

  class Thread {
   public:
    using format = Format;
    Thread(SimtBlock* block, int tid) : block_(block), tid_(tid) {}
    int thread() const { return tid_; }
    void sync() { block_->block_.arrive_and_wait(); }
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
      w.bar.arrive_and_wait();
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

  // body(Thread&) on every thread of the block, then all joined.
  template <class Body>
  void run(Body&& body) {
    std::vector<std::thread> threads;
    threads.reserve(static_cast<std::size_t>(threads_));
    for (int tid = 0; tid < threads_; ++tid)
      threads.emplace_back([this, tid, &body] {
        Thread t(this, tid);
        body(t);
      });
    for (auto& t : threads) t.join();
  }

 private:
  int threads_;
  std::barrier<> block_;
  std::vector<std::unique_ptr<Warp>> warps_;
};

}  // namespace vidlora::test

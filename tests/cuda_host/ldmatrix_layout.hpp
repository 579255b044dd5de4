#pragma once
// ldmatrix.sync.aligned.m8n8.x4{.trans}.shared.b16 as the PTX ISA describes it (Warp-level matrix load instruction:
// ldmatrix), for the host warp (simt_block.hpp) and the CUDA emulation (tests/cuda_emu): the warp loads four 8×8
// matrices of 16-bit values; lane l gives the address of row l % 8 of matrix l / 8 (eight values, 16 bytes); register
// i of lane l holds two values of matrix i, the first in the low half: without .trans those of row l / 4 at columns
// 2(l % 4) and 2(l % 4) + 1; with .trans (the matrix read column-major) those of column l / 4 at rows 2(l % 4) and
// 2(l % 4) + 1.
#include <cstdint>
#include <cstring>

namespace vidlora::test {

// Where half `half` of register `reg` of `lane` comes from: the lane whose row address holds it and the value's
// column in that row.
struct LdmatrixSource {
  int lane = 0;
  int column = 0;
};
constexpr LdmatrixSource ldmatrix_source(int lane, int reg, int half, bool trans) {
  const int group = lane / 4, in_group = lane % 4;
  return trans ? LdmatrixSource{8 * reg + 2 * in_group + half, group}
               : LdmatrixSource{8 * reg + group, 2 * in_group + half};
}

// Register `reg` of `lane`, given the 32 lanes' row addresses (little-endian: value c of a row at byte 2c).
inline std::uint32_t ldmatrix_register(const void* const (&rows)[32], int lane, int reg, bool trans) {
  std::uint32_t r = 0;
  for (int half = 0; half < 2; ++half) {
    const LdmatrixSource s = ldmatrix_source(lane, reg, half, trans);
    std::uint16_t v = 0;
    std::memcpy(&v, static_cast<const unsigned char*>(rows[s.lane]) + 2 * s.column, 2);
    r |= static_cast<std::uint32_t>(v) << (16 * half);
  }
  return r;
}

}  // namespace vidlora::test

#pragma once
// Element types of safetensors files, with their on-disk names and sizes. F32 / F16 / BF16 convert
// to float matrices; the others (and F64) can be read as raw bytes.

#include <cstddef>
#include <optional>
#include <string_view>

namespace vidlora::io {

// Declared in the safetensors crate's order: the writer sorts tensors by this order, descending.
enum class Dtype { BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64 };

constexpr std::string_view dtype_name(Dtype dtype) {
  switch (dtype) {
    case Dtype::BOOL: return "BOOL";
    case Dtype::U8: return "U8";
    case Dtype::I8: return "I8";
    case Dtype::I16: return "I16";
    case Dtype::U16: return "U16";
    case Dtype::F16: return "F16";
    case Dtype::BF16: return "BF16";
    case Dtype::I32: return "I32";
    case Dtype::U32: return "U32";
    case Dtype::F32: return "F32";
    case Dtype::F64: return "F64";
    case Dtype::I64: return "I64";
    case Dtype::U64: return "U64";
  }
  return "?";
}

// Bytes per element.
constexpr std::size_t dtype_size(Dtype dtype) {
  switch (dtype) {
    case Dtype::BOOL:
    case Dtype::U8:
    case Dtype::I8: return 1;
    case Dtype::I16:
    case Dtype::U16:
    case Dtype::F16:
    case Dtype::BF16: return 2;
    case Dtype::I32:
    case Dtype::U32:
    case Dtype::F32: return 4;
    case Dtype::F64:
    case Dtype::I64:
    case Dtype::U64: return 8;
  }
  return 0;
}

// True for the dtypes matrix()/vector() convert to float (F32, F16, BF16).
constexpr bool is_float_dtype(Dtype dtype) {
  return dtype == Dtype::F32 || dtype == Dtype::F16 || dtype == Dtype::BF16;
}

// The dtype spelled `name` in a safetensors header; nullopt for names vidlora does not read
// (F8_E4M3, F8_E5M2, F4, ... and anything unknown).
constexpr std::optional<Dtype> parse_dtype(std::string_view name) {
  for (Dtype d : {Dtype::BOOL, Dtype::U8, Dtype::I8, Dtype::I16, Dtype::U16, Dtype::F16, Dtype::BF16, Dtype::I32,
                  Dtype::U32, Dtype::F32, Dtype::F64, Dtype::I64, Dtype::U64})
    if (dtype_name(d) == name) return d;
  return std::nullopt;
}

}  // namespace vidlora::io

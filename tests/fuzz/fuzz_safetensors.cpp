// libFuzzer target for the safetensors parser (clang only: -fsanitize=fuzzer,address).
// Any input must either be refused with vidlora::Error or parse into a file whose every tensor
// can be read, and which writes out and parses back to the same tensors. A crash, a sanitizer
// report or a trap is a finding.
//
//   clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -I include -I /usr/include/eigen3
//     tests/fuzz/fuzz_safetensors.cpp -lfmt -o fuzz_safetensors        (one command; tools/fuzz.sh runs it)
//   ./fuzz_safetensors -dict=tests/fuzz/safetensors.dict -max_total_time=60 tests/fuzz/corpus

#include <vidlora/io.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

void check(bool condition) {
  if (!condition) __builtin_trap();
}

void exercise(const vidlora::io::SafetensorsFile& file) {
  using vidlora::io::Dtype;
  vidlora::io::TensorMap copy;
  for (const auto& name : file.names()) {
    const auto& info = file.info(name);
    const auto raw = file.raw(name);
    check(raw.size() == static_cast<std::size_t>(info.numel()) * vidlora::io::dtype_size(info.dtype));
    unsigned sum = 0;
    for (std::byte b : raw) sum += static_cast<unsigned>(b);  // every byte must be readable
    check(sum <= 255u * raw.size());
    if (vidlora::io::is_float_dtype(info.dtype)) {
      check(file.vector(name).size() == info.numel());
      if (info.shape.size() <= 2) check(file.matrix(name).size() == info.numel());
    }
    copy.emplace(name, vidlora::io::TensorData::from_raw(info.dtype, info.shape, raw));
  }
  // What we parsed we can write, and it parses back to the same tensors.
  const auto again =
      vidlora::io::SafetensorsFile::from_bytes(vidlora::io::serialize_safetensors(copy, file.metadata()));
  check(again.names() == file.names());
  check(again.metadata() == file.metadata());
  for (const auto& name : file.names()) {
    check(again.info(name).shape == file.info(name).shape);
    check(again.info(name).dtype == file.info(name).dtype);
    const auto a = again.raw(name), b = file.raw(name);
    check(a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::byte> bytes(size);
  if (size) std::memcpy(bytes.data(), data, size);
  try {
    exercise(vidlora::io::SafetensorsFile::from_bytes(std::move(bytes), "fuzz"));
  } catch (const vidlora::Error&) {
    // refused: the expected outcome for almost every input
  }
  return 0;
}

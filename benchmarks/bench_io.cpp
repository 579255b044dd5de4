// safetensors read throughput (mmap + dtype conversion to a float Matrix) against memcpy of the
// same float output; header open + validation per tensor; serialisation.
#include <benchmark/benchmark.h>

#include <vidlora/io.hpp>

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <type_traits>
#include <vector>

namespace {

namespace fs = std::filesystem;
using vidlora::Matrix;
using vidlora::io::Dtype;

constexpr Eigen::Index kRows = 2048, kCols = 2048;  // 4 Mi elements: 16 MB as float

fs::path bench_file(const std::string& name) {
  return fs::temp_directory_path() / ("vidlora_bench_io_" + name + "_" + std::to_string(::getpid()) + ".safetensors");
}

template <Dtype D>
using DtypeTag = std::integral_constant<Dtype, D>;

// Baseline: the float output copied from memory that is already float (allocation included).
void BM_memcpy_float_matrix(benchmark::State& state) {
  const Matrix source = Matrix::Random(kRows, kCols);
  for (auto _ : state) {
    Matrix out(kRows, kCols);
    std::memcpy(out.data(), source.data(), sizeof(float) * static_cast<std::size_t>(source.size()));
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * kRows * kCols * static_cast<std::int64_t>(sizeof(float)));
}
BENCHMARK(BM_memcpy_float_matrix)->Unit(benchmark::kMillisecond);

// SafetensorsFile::matrix() of one [2048, 2048] tensor stored as Tag's dtype (file in page cache).
template <class Tag>
void BM_read_matrix(benchmark::State& state) {
  const auto path = bench_file(std::string(vidlora::io::dtype_name(Tag::value)));
  vidlora::io::TensorMap tensors;
  tensors.emplace("w", vidlora::io::TensorData::from_matrix(Matrix::Random(kRows, kCols), Tag::value));
  vidlora::io::write_safetensors(path, tensors);
  const auto file = vidlora::io::SafetensorsFile::open(path);
  for (auto _ : state) {
    Matrix m = file.matrix("w");
    benchmark::DoNotOptimize(m.data());
  }
  state.SetBytesProcessed(state.iterations() * kRows * kCols * static_cast<std::int64_t>(sizeof(float)));
  state.SetLabel("bytes/s counts float output");
  fs::remove(path);
}
BENCHMARK_TEMPLATE(BM_read_matrix, DtypeTag<Dtype::F32>)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_read_matrix, DtypeTag<Dtype::BF16>)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_read_matrix, DtypeTag<Dtype::F16>)->Unit(benchmark::kMillisecond);

// SafetensorsFile::open(): mmap, JSON parse and full validation of a header with N tensors.
void BM_open_and_validate(benchmark::State& state) {
  const auto path = bench_file("header");
  vidlora::io::TensorMap tensors;
  for (int i = 0; i < state.range(0); ++i)
    tensors.emplace("model.layers." + std::to_string(i / 9) + ".tensor_" + std::to_string(i % 9) + ".weight",
                    vidlora::io::TensorData::from_matrix(Matrix::Zero(4, 4), Dtype::BF16));
  vidlora::io::write_safetensors(path, tensors);
  for (auto _ : state) {
    auto file = vidlora::io::SafetensorsFile::open(path);
    benchmark::DoNotOptimize(file.size());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  fs::remove(path);
}
BENCHMARK(BM_open_and_validate)->Arg(300)->Arg(3000)->Unit(benchmark::kMicrosecond);

// serialize_safetensors() of 64 BF16 tensors [256, 256] (8 MB) into memory.
void BM_serialize(benchmark::State& state) {
  vidlora::io::TensorMap tensors;
  for (int i = 0; i < 64; ++i)
    tensors.emplace(std::string("t").append(std::to_string(i)),
                    vidlora::io::TensorData::from_matrix(Matrix::Random(256, 256), Dtype::BF16));
  for (auto _ : state) {
    auto bytes = vidlora::io::serialize_safetensors(tensors);
    benchmark::DoNotOptimize(bytes.data());
  }
  state.SetBytesProcessed(state.iterations() * 64 * 256 * 256 * 2);
}
BENCHMARK(BM_serialize)->Unit(benchmark::kMillisecond);

}  // namespace

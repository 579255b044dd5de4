// Reading files the Python safetensors library wrote, and writing byte-identical ones
// (tests/fixtures/io/*.safetensors, tools/reference/safetensors_files.py).
#include <catch2/catch.hpp>

#include <vidlora/io.hpp>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fixtures.hpp"

using namespace vidlora;
namespace fs = std::filesystem;

namespace {

// Whether a temporary file of io::AtomicFile (`<name>.<host>-<pid>.tmp`) is left in `dir`.
bool has_temporary_file(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".tmp") return true;
  return false;
}

std::vector<std::byte> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(chars.size());
  if (!chars.empty()) std::memcpy(out.data(), chars.data(), chars.size());
  return out;
}

// A fresh, empty directory under the build tree's temp area.
fs::path io_scratch_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("vidlora_io_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// Every tensor of `file` (bytes as stored) and its metadata, to be written again.
io::TensorMap copy_tensors(const io::SafetensorsFile& file) {
  io::TensorMap out;
  for (const auto& name : file.names()) {
    const auto& info = file.info(name);
    out.emplace(name, io::TensorData::from_raw(info.dtype, info.shape, file.raw(name)));
  }
  return out;
}

}  // namespace

TEST_CASE("safetensors reader returns the values the python library wrote", "[io][safetensors]") {
  const auto expected = test::load_fixture("io/mixed.json");
  const auto file = io::SafetensorsFile::open(test::fixture_path("io/mixed.safetensors"));
  REQUIRE(file.size() == expected["tensors"].size());
  CHECK(file.metadata() == std::map<std::string, std::string>{{"format", "pt"}});
  const std::map<std::string, io::Dtype> torch_dtypes{{"float32", io::Dtype::F32},
                                                      {"float16", io::Dtype::F16},
                                                      {"bfloat16", io::Dtype::BF16},
                                                      {"int64", io::Dtype::I64}};
  for (const auto& [name, t] : expected["tensors"].items()) {
    INFO("tensor " << name);
    const auto& info = file.info(name);
    CHECK(info.dtype == torch_dtypes.at(t["dtype"].get<std::string>()));
    CHECK(info.shape == t["shape"].get<std::vector<std::int64_t>>());
    if (info.dtype == io::Dtype::I64) {
      const auto raw = file.raw(name);
      std::vector<std::int64_t> ids(raw.size() / 8);
      std::memcpy(ids.data(), raw.data(), raw.size());
      CHECK(ids == t["values"].get<std::vector<std::int64_t>>());
      continue;
    }
    const auto values = t["values"].get<std::vector<double>>();
    const Vector flat = file.vector(name);
    REQUIRE(flat.size() == static_cast<Eigen::Index>(values.size()));
    for (std::size_t i = 0; i < values.size(); ++i)
      CHECK(flat(static_cast<Eigen::Index>(i)) == static_cast<float>(values[i]));
  }
}

TEST_CASE("safetensors matrix views are 2-D as stored and 1-D or scalar as one row", "[io][safetensors]") {
  const auto file = io::SafetensorsFile::open(test::fixture_path("io/mixed.safetensors"));
  const Matrix w = file.matrix("weight");
  CHECK(w.rows() == 3);
  CHECK(w.cols() == 4);
  CHECK(w(1, 2) == file.vector("weight")(6));
  CHECK(file.matrix("a.bias").rows() == 1);
  CHECK(file.matrix("a.bias").cols() == 4);
  CHECK(file.matrix("scalar")(0, 0) == 1.5f);
  CHECK(file.matrix("empty").rows() == 0);
  CHECK(file.matrix("empty").cols() == 3);
  CHECK(file.matrix("brain").rows() == 2);
  CHECK_THROWS_WITH(file.matrix("ids"), Catch::Contains("'ids'") && Catch::Contains("I64"));
  CHECK_THROWS_WITH(file.info("nope"), Catch::Contains("no tensor 'nope'") && Catch::Contains("mixed.safetensors"));
}

TEST_CASE("safetensors tensor names needing JSON escapes are read back exactly", "[io][safetensors]") {
  const auto file = io::SafetensorsFile::open(test::fixture_path("io/escaped_names.safetensors"));
  CHECK(file.names() ==
        std::vector<std::string>{"ctrl\x01", "line\nbreak", "quote\"d", "\xC3\xA9t\xC3\xA9/\xED\x95\x9C\xEA\xB8\x80"});
  CHECK(file.vector("\xC3\xA9t\xC3\xA9/\xED\x95\x9C\xEA\xB8\x80")(2) == 2.0f);
  CHECK(file.info("quote\"d").shape == std::vector<std::int64_t>{1, 2});
}

TEST_CASE("safetensors writer output is byte-identical to the python library for the same tensors",
          "[io][safetensors]") {
  for (const char* name : {"io/mixed.safetensors", "io/escaped_names.safetensors", "io/llama_single/model.safetensors",
                           "io/llama_sharded/model-00001-of-00002.safetensors"}) {
    INFO(name);
    const auto path = test::fixture_path(name);
    const auto file = io::SafetensorsFile::open(path);
    const auto python_bytes = read_bytes(path);
    const auto ours = io::serialize_safetensors(copy_tensors(file), file.metadata());
    CHECK(ours == python_bytes);
  }
}

TEST_CASE("safetensors written from matrices reads back with torch rounding", "[io][safetensors]") {
  const auto dir = io_scratch_dir("write");
  Matrix m(2, 3);
  m << 0.1f, -2.0f, 65519.0f, 1e-8f, 3.14159f, -70000.0f;
  io::TensorMap tensors;
  tensors.emplace("m.f32", io::TensorData::from_matrix(m));
  tensors.emplace("m.bf16", io::TensorData::from_matrix(m, io::Dtype::BF16));
  tensors.emplace("m.f16", io::TensorData::from_matrix(m, io::Dtype::F16));
  tensors.emplace("v", io::TensorData::from_vector(Vector::LinSpaced(5, 0.0f, 1.0f)));
  io::write_safetensors(dir / "out.safetensors", tensors, {{"format", "pt"}});
  CHECK_FALSE(has_temporary_file(dir));
  // The same tensors as safetensors.torch.save_file wrote them from torch's own casts
  // (tools/reference/safetensors_files.py): the file is byte for byte the Python library's.
  CHECK(read_bytes(dir / "out.safetensors") == read_bytes(test::fixture_path("io/matrices_by_torch.safetensors")));

  const auto file = io::SafetensorsFile::open(dir / "out.safetensors");
  CHECK(file.matrix("m.f32") == m);
  CHECK(file.matrix("m.bf16") == m.unaryExpr([](float x) { return io::round_to_bf16(x); }));
  CHECK(file.matrix("m.f16") == m.unaryExpr([](float x) { return io::round_to_fp16(x); }));
  CHECK(file.info("v").shape == std::vector<std::int64_t>{5});
  CHECK(file.metadata().at("format") == "pt");
  // Layout as the python library: F32 tensors first (by name), then BF16, then F16.
  CHECK(file.info("m.f32").begin == 0);
  CHECK(file.info("v").begin == 24);
  CHECK(file.info("m.bf16").begin == 44);
  CHECK(file.info("m.f16").begin == 56);
  fs::remove_all(dir);
}

TEST_CASE("safetensors write that fails leaves the previous file and no temporary", "[io][safetensors]") {
  const auto dir = io_scratch_dir("atomic");
  const auto path = dir / "model.safetensors";
  io::TensorMap good;
  good.emplace("w", io::TensorData::from_matrix(Matrix::Ones(2, 2)));
  io::write_safetensors(path, good);
  const auto before = read_bytes(path);

  io::TensorMap bad;
  bad.emplace("a", io::TensorData::from_matrix(Matrix::Zero(1, 1)));
  bad.emplace("b", io::TensorData::from_raw(io::Dtype::F32, {3}, std::vector<std::byte>(8)));  // 8 bytes for 12
  CHECK_THROWS_WITH(io::write_safetensors(path, bad), Catch::Contains("'b'") && Catch::Contains("needs 12 bytes"));
  CHECK(read_bytes(path) == before);
  CHECK_FALSE(has_temporary_file(dir));

  // An unwritable destination: the error names the file.
  CHECK_THROWS_WITH(io::write_safetensors(dir / "missing_dir" / "x.safetensors", good), Catch::Contains("missing_dir"));
  fs::remove_all(dir);
}

TEST_CASE("atomic text file replaces the old content only on commit", "[io][safetensors]") {
  const auto dir = io_scratch_dir("text");
  const auto path = dir / "config.json";
  io::write_file_atomically(path, "old");
  {
    io::AtomicFile file(path);
    file.write(std::string_view("new but abandoned"));
    CHECK(fs::exists(file.temporary_path()));
  }  // destroyed without commit
  CHECK_FALSE(has_temporary_file(dir));
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(text == "old");
  fs::remove_all(dir);
}

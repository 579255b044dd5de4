// Status messages and launch geometry of the CUDA backend (host code).
#include <cstdint>

#include <catch2/catch.hpp>

#include <vidlora/core/cuda/launch.cuh>
#include <vidlora/core/cuda/status.cuh>
#include <vidlora/cuda.hpp>  // the umbrella compiles in a plain C++ translation unit

using namespace vidlora::cuda;

TEST_CASE("status messages name the call the status and the place", "[cuda_host][status]") {
  const std::string m =
      status_message("cudaMalloc(&p, 64)", "cudaErrorMemoryAllocation", 2, "out of memory", "memory.cuh", 91);
  CHECK(m == "cudaMalloc(&p, 64) failed: cudaErrorMemoryAllocation (2): out of memory at memory.cuh:91");
  CHECK(status_message("cublasLtMatmul(...)", "CUBLAS_STATUS_NOT_SUPPORTED", 15, "", "gemm.cuh", 7) ==
        "cublasLtMatmul(...) failed: CUBLAS_STATUS_NOT_SUPPORTED (15) at gemm.cuh:7");
}

TEST_CASE("check_arg throws CudaError naming the caller", "[cuda_host][status]") {
  CHECK_NOTHROW(check_arg(true, "f", "never"));
  CHECK_THROWS_AS(check_arg(false, "cuda::rope", "bad"), CudaError);
  CHECK_THROWS_WITH(check_arg(false, "cuda::rope", "head_dim 3 must be even"), "cuda::rope: head_dim 3 must be even");
}

TEST_CASE("grid sizes cover the work and respect the cap", "[cuda_host][launch]") {
  CHECK(ceil_div(10, 4) == 3);
  CHECK(ceil_div(12, 4) == 3);
  CHECK(grid_size(1, 256) == 1);
  CHECK(grid_size(0, 256) == 1);
  CHECK(grid_size(257, 256) == 2);
  CHECK(grid_size(std::int64_t{1} << 40, 256, 1000) == 1000);
  for (std::int64_t work : {1, 31, 256, 1000, 65537})
    CHECK(static_cast<std::int64_t>(grid_size(work, 128)) * 128 >= work);
}

TEST_CASE("row reduction block sizes are powers of two between 32 and 1024", "[cuda_host][launch]") {
  CHECK(row_block_threads(1) == 32);
  CHECK(row_block_threads(100) == 64);
  CHECK(row_block_threads(4096) == 1024);
  CHECK(floor_pow2(1) == 1);
  CHECK(floor_pow2(1023) == 512);
}

TEST_CASE("CudaError is a runtime_error", "[cuda_host][status]") {
  CHECK_THROWS_AS(check_arg(false, "who", "what"), vidlora::cuda::CudaError);
  STATIC_REQUIRE(std::is_base_of_v<std::runtime_error, vidlora::cuda::CudaError>);
}

TEST_CASE("CudaError is caught as vidlora::Error with its message", "[cuda_host][status]") {
  STATIC_REQUIRE(std::is_base_of_v<vidlora::Error, vidlora::cuda::CudaError>);
  bool caught = false;
  try {
    check_arg(false, "cuda::rope", "head_dim 3 must be even");
  } catch (const vidlora::Error& e) {
    caught = true;
    CHECK(std::string(e.what()) == "cuda::rope: head_dim 3 must be even");
    CHECK(dynamic_cast<const CudaError*>(&e) != nullptr);
  }
  CHECK(caught);
  CHECK_THROWS_AS(throw CudaError("x"), vidlora::Error);
}

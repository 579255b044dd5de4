// The CUDA emulation's own checks (cuda_emu.hpp): each wrong use a GPU would refuse or fault on is made in a child
// process, which must die with the emulation's message naming it; the right uses beside them must run and give the
// right values. A check that never fires would let the CUDA tests pass under the emulation with a bug a GPU shows.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <regex>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <vidlora/core/cuda/memory.cuh>
#include <vidlora/model/cuda/elementwise.cuh>

#include "child_process.hpp"

namespace emu_checks {

struct Inner {
  const float* p = nullptr;
  std::int64_t n = 0;
};
struct Params {
  float* out = nullptr;
  const float* in = nullptr;
  Inner inner;
  float scale = 1.0f;  // then 4 bytes of padding: never read as a pointer
  std::int64_t n = 0;
};
// An array member before the pointer: counted as one member. Pointers in arrays and std::arrays: each checked.
struct WithArray {
  float table[4];
  float* out;
};
struct PointerArrays {
  const float* c_array[2] = {};
  std::array<const float*, 2> std_array{};
  float* out = nullptr;
};

__global__ void fill_kernel(float* out, int n) {
  const int i = static_cast<int>(threadIdx.x);
  if (i < n) out[i] = static_cast<float>(i);
}
__global__ void params_kernel(Params p) {
  const int i = static_cast<int>(threadIdx.x);
  if (i < p.n) p.out[i] = p.in[i] * p.scale + (p.inner.p != nullptr && i < p.inner.n ? p.inner.p[i] : 0.0f);
}
__global__ void table_kernel(WithArray w) {
  const int i = static_cast<int>(threadIdx.x);
  if (i < 4) w.out[i] = w.table[i];
}
// Half the warp at the block's barrier, half at the warp's: neither opens (a thread that returns counts as arrived,
// as on a GPU since Volta, so a lone conditional __syncthreads is not this).
__global__ void pointer_arrays_kernel(PointerArrays a) {
  const unsigned i = threadIdx.x;
  a.out[i] = a.c_array[i % 2][i] + a.std_array[i % 2][i];
}
__global__ void diverging_barrier_kernel(float* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncwarp();
  }
  out[threadIdx.x] = 1.0f;
}

// Thread i writes its slot of a static shared array, waits at the barrier, then reads slot i + 1 (the last thread
// reads slot n, which no thread writes: a GPU's garbage, NaN here) and, in a second array, its own slot before any
// write (NaN in every block, whatever the previous block left there).
__global__ void static_shared_kernel(float* out, float* unwritten) {
  VIDLORA_STATIC_SHARED(4, float, tile, [33]);
  VIDLORA_STATIC_SHARED(16, float, scratch, [32][2]);
  const unsigned i = threadIdx.x;
  unwritten[blockIdx.x * 32 + i] = scratch[i][1];
  scratch[i][1] = 1.0f;
  tile[i] = static_cast<float>(blockIdx.x * 32 + i);
  __syncthreads();
  out[blockIdx.x * 32 + i] = tile[i + 1];
}
// A cp.async copy into a static shared array (allowed) or past its end (an error).
__global__ void cp_async_kernel(const float* in, float* out, int past_end) {
  VIDLORA_STATIC_SHARED(16, float, tile, [8]);
  VIDLORA_EMULATED_CP_ASYNC_16(tile + (past_end ? 8 : 0), in, true);
  VIDLORA_EMULATED_CP_ASYNC_COMMIT();
  VIDLORA_EMULATED_CP_ASYNC_WAIT(0);
  out[threadIdx.x] = tile[threadIdx.x];
}

// ldmatrix.x4 over four 8×8 matrices of 16-bit values v(m, r, c) = 64m + 8r + c, each row's 16 bytes apart: lane l
// gives row l % 8 of matrix l / 8 and writes its four registers. mode 0: as it is, 1: .trans, 2: a row address 4 bytes
// off, 3: a row in global memory.
__global__ void ldmatrix_kernel(std::uint32_t* out, int mode) {
  VIDLORA_STATIC_SHARED(16, std::uint32_t, tile, [4 * 8 * 4]);
  const unsigned lane = threadIdx.x;
  for (unsigned w = 0; w < 4; ++w) {  // the lane's row: values 8·row + 2w and 8·row + 2w + 1
    const unsigned row = lane, first = 8 * row + 2 * w;
    tile[row * 4 + w] = first | ((first + 1) << 16);
  }
  __syncwarp();
  const std::uint32_t* at = tile + lane * 4;
  if (mode == 2) at += 1;
  if (mode == 3) at = out;
  std::uint32_t r[4];
  VIDLORA_EMULATED_LDMATRIX_X4(r, at, mode == 1);
  for (int i = 0; i < 4; ++i) out[lane * 4 + static_cast<unsigned>(i)] = r[i];
}

// 40 KiB of static shared memory beside the launch's dynamic bytes.
__global__ void big_static_kernel(float* out) {
  VIDLORA_STATIC_SHARED(16, float, tile, [10 * 1024]);
  VIDLORA_DYNAMIC_SHARED(16, float, dynamic);
  tile[threadIdx.x] = 1.0f;
  dynamic[threadIdx.x] = 2.0f;
  __syncthreads();
  out[threadIdx.x] = tile[threadIdx.x] + dynamic[threadIdx.x];
}

void require_failure(const ChildResult& r, const std::string& pattern) {
  INFO("child's stderr: " << r.stderr_text);
  CHECK(r.aborted);
  CHECK(std::regex_search(r.stderr_text, std::regex(pattern)));
}

std::vector<float> download(const float* device, std::size_t n) {
  std::vector<float> host(n);
  REQUIRE(cudaMemcpy(host.data(), device, n * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
  return host;
}

}  // namespace emu_checks

using namespace emu_checks;

TEST_CASE("emulation: pointers a kernel is given must point into device or page-locked memory", "[emulation]") {
  vidlora::cuda::DeviceBuffer<float> out(8), in(8), extra(8);
  const std::vector<float> ones(8, 1.0f), twos(8, 2.0f);
  in.upload(ones);
  extra.upload(twos);
  std::vector<float> host(8, 0.0f);

  SECTION("right: device memory, page-locked memory and null, as arguments and as members, nested too") {
    VIDLORA_LAUNCH(1, 8, 0, nullptr, fill_kernel)(out.data(), 8);
    REQUIRE(cudaGetLastError() == cudaSuccess);
    CHECK(download(out.data(), 8) == std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7});

    VIDLORA_LAUNCH(1, 8, 0, nullptr, params_kernel)(Params{out.data(), in.data(), Inner{extra.data(), 8}, 3.0f, 8});
    CHECK(download(out.data(), 8) == std::vector<float>(8, 5.0f));
    VIDLORA_LAUNCH(1, 8, 0, nullptr, params_kernel)(Params{out.data(), in.data(), Inner{}, 3.0f, 8});
    CHECK(download(out.data(), 8) == std::vector<float>(8, 3.0f));

    float* pinned = nullptr;
    REQUIRE(cudaMallocHost(reinterpret_cast<void**>(&pinned), 8 * sizeof(float)) == cudaSuccess);
    VIDLORA_LAUNCH(1, 8, 0, nullptr, params_kernel)(Params{pinned, in.data(), Inner{}, 4.0f, 8});
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    CHECK(std::vector<float>(pinned, pinned + 8) == std::vector<float>(8, 4.0f));
    REQUIRE(cudaFreeHost(pinned) == cudaSuccess);

    VIDLORA_LAUNCH(1, 4, 0, nullptr, table_kernel)(WithArray{{1, 2, 3, 4}, out.data()});
    CHECK(download(out.data(), 4) == std::vector<float>{1, 2, 3, 4});

    PointerArrays arrays;
    arrays.c_array[0] = arrays.c_array[1] = in.data();
    arrays.std_array = {extra.data(), extra.data()};
    arrays.out = out.data();
    VIDLORA_LAUNCH(1, 8, 0, nullptr, pointer_arrays_kernel)(arrays);
    CHECK(download(out.data(), 8) == std::vector<float>(8, 3.0f));

    // An empty range's pointer just past an allocation's end: not read, not an error (n = 0).
    VIDLORA_LAUNCH(1, 8, 0, nullptr, fill_kernel)(out.data() + 8, 0);
    REQUIRE(cudaGetLastError() == cudaSuccess);
  }

  SECTION("wrong: a host pointer as an argument") {
    require_failure(run_in_child([&] {
                      VIDLORA_LAUNCH(1, 8, 0, nullptr, fill_kernel)
                      (host.data(), 8);
                    }),
                    R"(argument 0 of fill_kernel points outside device memory)");
  }
  SECTION("wrong: a host pointer as a member of the Params struct") {
    require_failure(
        run_in_child([&] {
          VIDLORA_LAUNCH(1, 8, 0, nullptr, params_kernel)(Params{out.data(), host.data(), Inner{}, 1.0f, 8});
        }),
        R"(member 1 \(counted from 0\) of emu_checks::Params in argument 0 of params_kernel points outside)");
  }
  SECTION("wrong: a host pointer in a struct inside the Params struct") {
    require_failure(
        run_in_child([&] {
          VIDLORA_LAUNCH(1, 8, 0, nullptr, params_kernel)
          (Params{out.data(), in.data(), Inner{host.data(), 8}, 1.0f, 8});
        }),
        R"(member 0 \(counted from 0\) of emu_checks::Inner in argument 0 of params_kernel points outside)");
  }
  SECTION("wrong: a host pointer after an array member") {
    require_failure(
        run_in_child([&] {
          VIDLORA_LAUNCH(1, 4, 0, nullptr, table_kernel)(WithArray{{1, 2, 3, 4}, host.data()});
        }),
        R"(member 1 \(counted from 0\) of emu_checks::WithArray in argument 0 of table_kernel points outside)");
  }
  SECTION("wrong: a host pointer in an array member and in a std::array member") {
    PointerArrays arrays;
    arrays.c_array[0] = in.data();
    arrays.c_array[1] = host.data();
    arrays.std_array = {extra.data(), extra.data()};
    arrays.out = out.data();
    require_failure(
        run_in_child([&] {
          VIDLORA_LAUNCH(1, 8, 0, nullptr, pointer_arrays_kernel)
          (arrays);
        }),
        R"(member 0 \(counted from 0\) of emu_checks::PointerArrays in argument 0 of pointer_arrays_kernel)");
    arrays.c_array[1] = in.data();
    arrays.std_array[1] = host.data();
    require_failure(
        run_in_child([&] {
          VIDLORA_LAUNCH(1, 8, 0, nullptr, pointer_arrays_kernel)
          (arrays);
        }),
        R"(member 1 \(counted from 0\) of emu_checks::PointerArrays in argument 0 of pointer_arrays_kernel)");
  }
  SECTION("wrong: device memory freed before the launch") {
    float* freed = nullptr;
    REQUIRE(cudaMalloc(reinterpret_cast<void**>(&freed), 1 << 20) == cudaSuccess);
    REQUIRE(cudaFree(freed) == cudaSuccess);
    require_failure(
        run_in_child([&] {
          VIDLORA_LAUNCH(1, 8, 0, nullptr, params_kernel)(Params{freed, in.data(), Inner{}, 1.0f, 8});
        }),
        R"(member 0 \(counted from 0\) of emu_checks::Params in argument 0 of params_kernel points outside)");
  }
  SECTION("wrong: a host pointer in a library kernel's Params (RmsNormParams, with a double member)") {
    vidlora::cuda::DeviceBuffer<float> weight(8), y(8);
    weight.upload(ones);
    require_failure(run_in_child([&] {
                      vidlora::model::cuda::RmsNormParams p;
                      p.x = in.data();
                      p.weight = weight.data();
                      p.y = y.data();
                      p.inv_rms = host.data();
                      p.rows = 1;
                      p.n = 8;
                      vidlora::model::cuda::rms_norm(p);
                    }),
                    R"(member 3 \(counted from 0\) of vidlora::model::cuda::RmsNormParams in argument 0 of .* points)");
  }
}

TEST_CASE("emulation: a table uploaded for kernels to read must hold device pointers", "[emulation]") {
  // Kernels read pointers from tables in device memory (the optimizer's TensorSlot table): a host pointer there is a
  // fault on a GPU, checked when DeviceBuffer::upload copies the table.
  vidlora::cuda::DeviceBuffer<float> a(8), b(8);
  std::vector<float> host(8, 0.0f);
  std::vector<Inner> table{{a.data(), 8}, {b.data(), 8}, {nullptr, 0}, {b.data() + 8, 0}};
  vidlora::cuda::DeviceBuffer<Inner> right(table);  // device pointers, null, one past the end
  std::vector<const float*> pointers{a.data(), b.data()};
  vidlora::cuda::DeviceBuffer<const float*> right_pointers(pointers);
  std::vector<int> plain{1, 2, 3};
  vidlora::cuda::DeviceBuffer<int> no_pointers(plain);
  table[2].p = host.data();
  require_failure(run_in_child([&] { vidlora::cuda::DeviceBuffer<Inner> wrong(table); }),
                  R"(member 0 \(counted from 0\) of emu_checks::Inner in element 2 of a table uploaded by )"
                  R"(DeviceBuffer::upload points outside device memory)");
  pointers[1] = host.data();
  require_failure(run_in_child([&] { vidlora::cuda::DeviceBuffer<const float*> wrong(pointers); }),
                  R"(element 1 of a table uploaded by DeviceBuffer::upload points outside device memory)");
}

TEST_CASE("emulation: a barrier some threads of the block never reach is an error naming the kernel", "[emulation]") {
  vidlora::cuda::DeviceBuffer<float> out(32);
  require_failure(run_in_child([&] {
                    VIDLORA_LAUNCH(1, 32, 0, nullptr, diverging_barrier_kernel)
                    (out.data());
                  }),
                  R"(deadlock in diverging_barrier_kernel: block \(0, 0, 0\), 32 of 32 threads wait)");
}

TEST_CASE("emulation: a launch a GPU refuses sets the last error and runs nothing", "[emulation]") {
  vidlora::cuda::DeviceBuffer<float> out(8);
  const std::vector<float> zeros(8, -1.0f);
  out.upload(zeros);
  VIDLORA_LAUNCH(1, 2048, 0, nullptr, fill_kernel)(out.data(), 8);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  CHECK(download(out.data(), 8) == zeros);
  VIDLORA_LAUNCH(1, 8, 64 * 1024, nullptr, fill_kernel)(out.data(), 8);  // 64 KiB dynamic without the attribute
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  CHECK(download(out.data(), 8) == zeros);
}

TEST_CASE("emulation: a static shared array starts as NaN in every block", "[emulation]") {
  vidlora::cuda::DeviceBuffer<float> out(64), unwritten(64);
  VIDLORA_LAUNCH(2, 32, 0, nullptr, static_shared_kernel)(out.data(), unwritten.data());
  REQUIRE(cudaGetLastError() == cudaSuccess);
  const auto o = download(out.data(), 64), u = download(unwritten.data(), 64);
  for (int b = 0; b < 2; ++b) {
    for (int i = 0; i < 31; ++i) CHECK(o[static_cast<std::size_t>(b * 32 + i)] == static_cast<float>(b * 32 + i + 1));
    CHECK(std::isnan(o[static_cast<std::size_t>(b * 32 + 31)]));  // slot 32: no thread wrote it
  }
  for (const float v : u) CHECK(std::isnan(v));  // the second block too, after the first wrote 1s there
}

TEST_CASE("emulation: cp.async writes into a static shared array, not past it", "[emulation]") {
  // (At an emulated sm_75 the copy is done at once, at sm_80+ at its wait: the destination is checked in both.)
  vidlora::cuda::DeviceBuffer<float> in(4), out(4);
  const std::vector<float> v{1, 2, 3, 4};
  in.upload(v);
  VIDLORA_LAUNCH(1, 4, 0, nullptr, cp_async_kernel)(in.data(), out.data(), 0);
  CHECK(download(out.data(), 4) == v);
  require_failure(
      run_in_child([&] {
        VIDLORA_LAUNCH(1, 4, 0, nullptr, cp_async_kernel)
        (in.data(), out.data(), 1);
      }),
      R"(cp.async in cp_async_kernel: the destination's 16 bytes are not inside the block's shared memory)");
}

TEST_CASE("emulation: ldmatrix.x4 gives each lane the PTX ISA's fragment, from 16-byte rows of shared memory",
          "[emulation]") {
  // The ISA: register i of lane l holds two values of matrix i, the first in the low half: row l / 4, columns
  // 2(l % 4) and 2(l % 4) + 1; with .trans column l / 4, rows 2(l % 4) and 2(l % 4) + 1.
  vidlora::cuda::DeviceBuffer<std::uint32_t> out(128);
  const auto loaded = [&](int mode) {
    VIDLORA_LAUNCH(1, 32, 0, nullptr, ldmatrix_kernel)(out.data(), mode);
    REQUIRE(cudaGetLastError() == cudaSuccess);
    std::vector<std::uint32_t> r(128);
    REQUIRE(cudaMemcpy(r.data(), out.data(), 128 * 4, cudaMemcpyDeviceToHost) == cudaSuccess);
    return r;
  };
  const auto value = [](unsigned m, unsigned row, unsigned col) { return 64 * m + 8 * row + col; };
  const std::vector<std::uint32_t> plain = loaded(0), trans = loaded(1);
  for (unsigned l = 0; l < 32; ++l)
    for (unsigned i = 0; i < 4; ++i) {
      INFO("lane " << l << " register " << i);
      CHECK(plain[l * 4 + i] == (value(i, l / 4, 2 * (l % 4)) | value(i, l / 4, 2 * (l % 4) + 1) << 16));
      CHECK(trans[l * 4 + i] == (value(i, 2 * (l % 4), l / 4) | value(i, 2 * (l % 4) + 1, l / 4) << 16));
    }
  // a few by hand: lane 13 (group 3, thread 1), register 2; lane 31, register 3
  CHECK(plain[13 * 4 + 2] == (154u | 155u << 16));
  CHECK(trans[13 * 4 + 2] == (147u | 155u << 16));
  CHECK(plain[31 * 4 + 3] == (254u | 255u << 16));
  CHECK(trans[31 * 4 + 3] == (247u | 255u << 16));
  require_failure(run_in_child([&] { loaded(2); }),
                  R"(ldmatrix in ldmatrix_kernel: lane (0|31)'s row address is not 16-byte aligned)");
  require_failure(run_in_child([&] { loaded(3); }),
                  R"(ldmatrix in ldmatrix_kernel: lane (0|31)'s row is in global memory, not shared memory)");
}

TEST_CASE("emulation: static and dynamic shared memory together within what the card allows", "[emulation]") {
  // A GPU gives a block 48 KiB of static and dynamic together; with cudaFuncAttributeMaxDynamicSharedMemorySize set,
  // static and the attribute within its opt-in maximum. 40 KiB static + 8 KiB dynamic fit without the attribute;
  // + 16 KiB do not; the attribute at the maximum less 24 KiB leaves 16 KiB too few for the 40 KiB static.
  vidlora::cuda::DeviceBuffer<float> out(32);
  VIDLORA_LAUNCH(1, 32, 8 * 1024, nullptr, big_static_kernel)(out.data());
  REQUIRE(cudaGetLastError() == cudaSuccess);
  CHECK(download(out.data(), 32) == std::vector<float>(32, 3.0f));
  const auto without_attribute = [&] { VIDLORA_LAUNCH(1, 32, 16 * 1024, nullptr, big_static_kernel)(out.data()); };
  require_failure(run_in_child(without_attribute),
                  R"(big_static_kernel: 40960 bytes of static and 16384 of dynamic shared memory, above the 48 KiB)");
  cudaDeviceProp prop{};
  REQUIRE(cudaGetDeviceProperties(&prop, 0) == cudaSuccess);
  const int attribute = static_cast<int>(prop.sharedMemPerBlockOptin) - 24 * 1024;
  REQUIRE(cudaFuncSetAttribute(big_static_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, attribute) ==
          cudaSuccess);  // (a GPU, which knows the static bytes, refuses it here)
  const auto over_attribute = [&] { VIDLORA_LAUNCH(1, 32, 16 * 1024, nullptr, big_static_kernel)(out.data()); };
  require_failure(run_in_child(over_attribute),
                  R"(big_static_kernel: .*with cudaFuncAttributeMaxDynamicSharedMemorySize \d+, above the \d+)");
}

TEST_CASE("emulation: work on a stream runs when the host waits for it, ordered as CUDA orders streams",
          "[emulation]") {
  // What a GPU may do, made what happens: queued work has not run until the host waits for it, and a wait covers only
  // what CUDA orders before it. (VIDLORA_EMU_STREAMS=eager runs everything at once: nothing to see then.)
  const char* mode = std::getenv("VIDLORA_EMU_STREAMS");
  if (mode && std::string(mode) == "eager") {
    WARN("VIDLORA_EMU_STREAMS=eager: not checked");
    return;
  }
  const std::vector<float> ramp{0, 1, 2, 3, 4, 5, 6, 7}, ones(8, 1.0f);
  auto all_nan = [](const std::vector<float>& v) {
    for (const float x : v)
      if (!std::isnan(x)) return false;
    return true;
  };
  vidlora::cuda::DeviceBuffer<float> out(8), in(8);  // fresh from cudaMalloc: 0xFF bytes (NaN)
  vidlora::cuda::Stream s;                           // cudaStreamNonBlocking

  SECTION("cudaMemcpy (the legacy stream) does not wait for a non-blocking stream's kernel") {
    VIDLORA_LAUNCH(1, 8, 0, s.get(), fill_kernel)(out.data(), 8);
    CHECK(all_nan(download(out.data(), 8)));  // a race on a GPU: here the kernel has not run
    s.synchronize();
    CHECK(download(out.data(), 8) == ramp);
  }
  SECTION("the legacy stream waits for a blocking stream's kernel") {
    cudaStream_t blocking = nullptr;
    REQUIRE(cudaStreamCreate(&blocking) == cudaSuccess);
    VIDLORA_LAUNCH(1, 8, 0, blocking, fill_kernel)(out.data(), 8);
    CHECK(download(out.data(), 8) == ramp);
    REQUIRE(cudaStreamDestroy(blocking) == cudaSuccess);
  }
  SECTION("a non-blocking stream's kernel does not wait for an upload or a cudaMemset on the legacy stream") {
    in.upload(ones);  // cudaMemcpy from pageable memory: staged, then copied in the legacy stream's order
    VIDLORA_LAUNCH(1, 8, 0, s.get(), params_kernel)(Params{out.data(), in.data(), Inner{}, 1.0f, 8});
    s.synchronize();
    CHECK(all_nan(download(out.data(), 8)));  // the kernel read `in` before the upload
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    REQUIRE(cudaMemset(in.data(), 0, 8 * sizeof(float)) == cudaSuccess);
    VIDLORA_LAUNCH(1, 8, 0, s.get(), params_kernel)(Params{out.data(), in.data(), Inner{}, 2.0f, 8});
    s.synchronize();
    CHECK(download(out.data(), 8) == std::vector<float>(8, 2.0f));  // `in` as the upload left it: not the memset's
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    CHECK(download(in.data(), 8) == std::vector<float>(8, 0.0f));
  }
  SECTION("an event orders one stream's kernel after another's") {
    vidlora::cuda::Stream second;
    vidlora::cuda::Event done;
    VIDLORA_LAUNCH(1, 8, 0, s.get(), fill_kernel)(in.data(), 8);
    done.record(s);
    REQUIRE(cudaStreamWaitEvent(second, done.get(), 0) == cudaSuccess);
    VIDLORA_LAUNCH(1, 8, 0, second.get(), params_kernel)(Params{out.data(), in.data(), Inner{}, 3.0f, 8});
    second.synchronize();
    CHECK(download(out.data(), 8) == std::vector<float>{0, 3, 6, 9, 12, 15, 18, 21});
    // Recorded again, the event marks the later point: a wait on it waits for the kernel after the first record.
    VIDLORA_LAUNCH(1, 8, 0, s.get(), params_kernel)(Params{in.data(), in.data(), Inner{}, 2.0f, 8});
    done.record(s);
    REQUIRE(cudaStreamWaitEvent(second, done.get(), 0) == cudaSuccess);
    VIDLORA_LAUNCH(1, 8, 0, second.get(), params_kernel)(Params{out.data(), in.data(), Inner{}, 1.0f, 8});
    second.synchronize();
    CHECK(download(out.data(), 8) == std::vector<float>{0, 2, 4, 6, 8, 10, 12, 14});
  }
  SECTION("cudaMemcpyAsync into page-locked memory has run only after its stream's synchronize") {
    float* pinned = nullptr;
    REQUIRE(cudaMallocHost(reinterpret_cast<void**>(&pinned), 8 * sizeof(float)) == cudaSuccess);
    std::fill(pinned, pinned + 8, -1.0f);
    VIDLORA_LAUNCH(1, 8, 0, s.get(), fill_kernel)(out.data(), 8);
    REQUIRE(cudaMemcpyAsync(pinned, out.data(), 8 * sizeof(float), cudaMemcpyDeviceToHost, s) == cudaSuccess);
    CHECK(std::vector<float>(pinned, pinned + 8) == std::vector<float>(8, -1.0f));  // read before the wait
    s.synchronize();
    CHECK(std::vector<float>(pinned, pinned + 8) == ramp);
    // Into pageable memory the call returns when the copy is done.
    std::vector<float> pageable(8, -1.0f);
    VIDLORA_LAUNCH(1, 8, 0, s.get(), params_kernel)(Params{out.data(), out.data(), Inner{}, 2.0f, 8});
    REQUIRE(cudaMemcpyAsync(pageable.data(), out.data(), 8 * sizeof(float), cudaMemcpyDeviceToHost, s) == cudaSuccess);
    CHECK(pageable == std::vector<float>{0, 2, 4, 6, 8, 10, 12, 14});
    REQUIRE(cudaFreeHost(pinned) == cudaSuccess);
  }
  SECTION("queries answer not ready while work is queued; elapsed time needs both records run") {
    vidlora::cuda::Event start, stop;
    start.record(s);
    VIDLORA_LAUNCH(1, 8, 0, s.get(), fill_kernel)(out.data(), 8);
    stop.record(s);
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, start.get(), stop.get()) == cudaErrorNotReady);
    CHECK(cudaGetLastError() == cudaSuccess);        // a status, not an error that stays
    CHECK(cudaStreamQuery(s) == cudaErrorNotReady);  // asking runs it
    CHECK(cudaStreamQuery(s) == cudaSuccess);
    CHECK(cudaEventQuery(stop.get()) == cudaSuccess);
    CHECK(cudaEventElapsedTime(&ms, start.get(), stop.get()) == cudaSuccess);
    CHECK(ms >= 0.0f);
    // The legacy stream: its own work and the blocking streams'; nothing queued, ready.
    CHECK(cudaStreamQuery(nullptr) == cudaSuccess);
    VIDLORA_LAUNCH(1, 8, 0, nullptr, fill_kernel)(out.data(), 8);
    CHECK(cudaStreamQuery(nullptr) == cudaErrorNotReady);
    CHECK(cudaStreamQuery(nullptr) == cudaSuccess);
    // A never-recorded event, or one made without timing, has no elapsed time.
    vidlora::cuda::Event never;
    CHECK(cudaEventElapsedTime(&ms, never.get(), stop.get()) == cudaErrorInvalidResourceHandle);
    cudaEvent_t untimed = nullptr;
    REQUIRE(cudaEventCreateWithFlags(&untimed, cudaEventDisableTiming) == cudaSuccess);
    REQUIRE(cudaEventRecord(untimed, s) == cudaSuccess);
    REQUIRE(cudaEventSynchronize(untimed) == cudaSuccess);
    CHECK(cudaEventElapsedTime(&ms, start.get(), untimed) == cudaErrorInvalidResourceHandle);
    (void)cudaGetLastError();
    REQUIRE(cudaEventDestroy(untimed) == cudaSuccess);
  }
  SECTION("a blocking stream's kernel waits for an upload on the legacy stream") {
    cudaStream_t blocking = nullptr;
    REQUIRE(cudaStreamCreate(&blocking) == cudaSuccess);
    in.upload(ones);
    VIDLORA_LAUNCH(1, 8, 0, blocking, params_kernel)(Params{out.data(), in.data(), Inner{}, 5.0f, 8});
    REQUIRE(cudaStreamSynchronize(blocking) == cudaSuccess);
    CHECK(download(out.data(), 8) == std::vector<float>(8, 5.0f));
    REQUIRE(cudaStreamDestroy(blocking) == cudaSuccess);
  }
  SECTION("cudaMemcpy from pageable memory reads it at the call, after the legacy stream's earlier work") {
    std::vector<float> source = ones;
    float* pinned = nullptr;
    REQUIRE(cudaMallocHost(reinterpret_cast<void**>(&pinned), 8 * sizeof(float)) == cudaSuccess);
    std::fill(pinned, pinned + 8, -1.0f);
    VIDLORA_LAUNCH(1, 8, 0, nullptr, fill_kernel)(out.data(), 8);
    REQUIRE(cudaMemcpyAsync(pinned, out.data(), 8 * sizeof(float), cudaMemcpyDeviceToHost, nullptr) == cudaSuccess);
    in.upload(source);  // waits for the legacy stream's kernel and copy first
    CHECK(std::vector<float>(pinned, pinned + 8) == ramp);
    std::fill(source.begin(), source.end(), 7.0f);  // the copy has its bytes already
    CHECK(download(in.data(), 8) == ones);
    REQUIRE(cudaFreeHost(pinned) == cudaSuccess);
  }
  SECTION("an event's synchronize runs its stream's work up to the record, not another stream's") {
    vidlora::cuda::Stream other;
    vidlora::cuda::Event done;
    VIDLORA_LAUNCH(1, 8, 0, s.get(), fill_kernel)(in.data(), 8);
    done.record(s);
    VIDLORA_LAUNCH(1, 8, 0, other.get(), fill_kernel)(out.data(), 8);
    done.synchronize();
    std::vector<float> got_in(8), got_out(8);  // read without a wait of the legacy stream: by hand
    REQUIRE(cudaMemcpyAsync(got_in.data(), in.data(), 8 * sizeof(float), cudaMemcpyDeviceToHost, s) == cudaSuccess);
    CHECK(got_in == ramp);
    REQUIRE(cudaMemcpyAsync(got_out.data(), out.data(), 8 * sizeof(float), cudaMemcpyDeviceToHost, s) == cudaSuccess);
    CHECK(all_nan(got_out));  // `other`'s kernel has not run
    other.synchronize();
    CHECK(download(out.data(), 8) == ramp);
  }
  SECTION("a stream destroyed with work queued: the work still runs") {
    cudaStream_t gone = nullptr;
    REQUIRE(cudaStreamCreateWithFlags(&gone, cudaStreamNonBlocking) == cudaSuccess);
    VIDLORA_LAUNCH(1, 8, 0, gone, fill_kernel)(out.data(), 8);
    REQUIRE(cudaStreamDestroy(gone) == cudaSuccess);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    CHECK(download(out.data(), 8) == ramp);
  }
  SECTION("work of two streams nothing orders runs oldest first, or newest first with VIDLORA_EMU_ORDER=reverse") {
    // A read of another stream's write without an event between them: the write seen in one order, not in the other.
    vidlora::cuda::Stream reader;
    VIDLORA_LAUNCH(1, 8, 0, s.get(), fill_kernel)(in.data(), 8);
    VIDLORA_LAUNCH(1, 8, 0, reader.get(), params_kernel)(Params{out.data(), in.data(), Inner{}, 1.0f, 8});
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    const char* order = std::getenv("VIDLORA_EMU_ORDER");
    if (order && std::string(order) == "reverse")
      CHECK(all_nan(download(out.data(), 8)));
    else
      CHECK(download(out.data(), 8) == ramp);
  }
}

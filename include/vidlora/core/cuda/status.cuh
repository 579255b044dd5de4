#pragma once
// Status checks for the CUDA runtime and cuBLASLt: every call's status becomes a vidlora::cuda::CudaError
// whose message names the call, the status and file:line. The message builder is plain host code (tested on
// the CPU); the checking macros need the CUDA runtime (nvcc, or a C++ TU linked to vidlora::cuda).
//
// CudaError derives from vidlora::Error (core/error_type.hpp, the fmt-free half of core/error.hpp: nvcc 13
// rejects fmt's consteval format strings in C++20), so catching vidlora::Error catches it too.

#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include <vidlora/core/error_type.hpp>
#include <vidlora/core/portability.hpp>

#if defined(__CUDACC__) || defined(VIDLORA_CUDA_RUNTIME)
#define VIDLORA_HAS_CUDA_RUNTIME 1
#include <cublasLt.h>
#include <cuda_runtime.h>
#else
#define VIDLORA_HAS_CUDA_RUNTIME 0
#endif

namespace vidlora::cuda {

// Every CUDA-backend failure: a failed runtime/cuBLASLt call, a shape or argument the backend refuses.
struct CudaError : vidlora::Error {
  using vidlora::Error::Error;
};

// "<call> failed: <status name> (<code>): <description> at <file>:<line>".
inline std::string status_message(const char* call, const char* status_name, int code, const char* description,
                                  const char* file, int line) {
  std::string m = call;
  m += " failed: ";
  m += status_name;
  m += " (";
  m += std::to_string(code);
  m += ")";
  if (description && *description) {
    m += ": ";
    m += description;
  }
  m += " at ";
  m += file;
  m += ":";
  m += std::to_string(line);
  return m;
}

// Throws CudaError("<who>: <what>") unless `condition` holds (argument checks; no fmt under nvcc).
inline void check_arg(bool condition, const char* who, const std::string& what) {
  if (!condition) throw CudaError(std::string(who) + ": " + what);
}
// A fixed message: no string is built unless the check fails.
inline void check_arg(bool condition, const char* who, const char* what) {
  if (!condition) throw CudaError(std::string(who) + ": " + what);
}
// The same with the message built only on failure (`what()` returns it): for checks on a hot path, where building the
// string on every call would cost more than the check.
template <class MakeMessage>
requires std::is_invocable_r_v<std::string, MakeMessage>
inline void check_arg(bool condition, const char* who, MakeMessage&& what) {
  if (!condition) throw CudaError(std::string(who) + ": " + std::forward<MakeMessage>(what)());
}

#if VIDLORA_HAS_CUDA_RUNTIME
inline void check_cuda(cudaError_t status, const char* call, const char* file, int line) {
  if (status != cudaSuccess)
    throw CudaError(status_message(call, cudaGetErrorName(status), static_cast<int>(status), cudaGetErrorString(status),
                                   file, line));
}

inline const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS_UNKNOWN";
  }
}

inline void check_cublas(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw CudaError(status_message(call, cublas_status_name(status), static_cast<int>(status), "", file, line));
}

// The error of the last kernel launch (configuration errors surface here, not at the launch).
inline void check_launch(const char* kernel, const char* file, int line) {
  check_cuda(cudaGetLastError(), kernel, file, line);
}
#endif

}  // namespace vidlora::cuda

#if VIDLORA_HAS_CUDA_RUNTIME
#define VIDLORA_CUDA_CHECK(call) ::vidlora::cuda::check_cuda((call), #call, __FILE__, __LINE__)
#define VIDLORA_CUBLAS_CHECK(call) ::vidlora::cuda::check_cublas((call), #call, __FILE__, __LINE__)
#define VIDLORA_CUDA_CHECK_LAUNCH(kernel) ::vidlora::cuda::check_launch(kernel, __FILE__, __LINE__)
#endif

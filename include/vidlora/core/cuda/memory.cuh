#pragma once
// RAII device memory, streams and events. Move-only; destructors never throw (a failing free is ignored,
// since the context is already broken then); every other call is checked (status.cuh).

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <vidlora/core/cuda/cuda_upstream.cuh>
#include <vidlora/core/cuda/status.cuh>

#if VIDLORA_HAS_CUDA_RUNTIME
namespace vidlora::cuda {

// Number of CUDA devices; 0 when the runtime reports none or no driver (never throws).
inline int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

// VIDLORA_CHECK_UPLOADED_TABLE(data, count): nothing on a GPU build; the CUDA emulation (tests/cuda_emu) defines it to
// check the device pointers inside an uploaded table.
#if !defined(VIDLORA_CHECK_UPLOADED_TABLE)
#define VIDLORA_CHECK_UPLOADED_TABLE(data, count) static_cast<void>(0)
#endif

// Device code that uploads with DeviceBuffer (plain cudaMemcpy, on the legacy default stream) into blocks from a
// caching allocator runs its kernels on `stream`: that is ordered only when `stream` synchronizes with the legacy
// stream (null, or a stream made without cudaStreamNonBlocking). A copy on the legacy stream does not wait for a
// non-blocking stream's kernels, so it could land in a block they still read. Such a stream is refused, naming who.
// (Two blocking streams are each ordered with the legacy stream but not with each other: one caching allocator, or
// one GemmRunner, must not serve work on two of them at once.)
inline void require_legacy_ordered_stream(cudaStream_t stream, const char* who) {
  if (stream == nullptr) return;
  unsigned flags = 0;
  VIDLORA_CUDA_CHECK(cudaStreamGetFlags(stream, &flags));
  check_arg((flags & cudaStreamNonBlocking) == 0, who,
            "a stream made with cudaStreamNonBlocking is not supported (its uploads run on the legacy default stream, "
            "which does not wait for it): pass null or a blocking stream");
}

// Multiprocessors of the current device, read once per process (1 when it cannot be read): caps the grids
// of grid-stride kernels that stage tables per block.
inline int multiprocessor_count() {
  static const int count = [] {
    int device = 0, n = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || n < 1) {
      (void)cudaGetLastError();
      return 1;
    }
    return n;
  }();
  return count;
}

class Stream {
 public:
  Stream() { VIDLORA_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  ~Stream() {
    if (s_) (void)cudaStreamDestroy(s_);
  }
  Stream(Stream&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  Stream& operator=(Stream&& o) noexcept {
    std::swap(s_, o.s_);
    return *this;
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }
  operator cudaStream_t() const { return s_; }
  void synchronize() const { VIDLORA_CUDA_CHECK(cudaStreamSynchronize(s_)); }

 private:
  cudaStream_t s_ = nullptr;
};

class Event {
 public:
  Event() { VIDLORA_CUDA_CHECK(cudaEventCreate(&e_)); }
  ~Event() {
    if (e_) (void)cudaEventDestroy(e_);
  }
  Event(Event&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
  Event& operator=(Event&& o) noexcept {
    std::swap(e_, o.e_);
    return *this;
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return e_; }
  void record(cudaStream_t s) { VIDLORA_CUDA_CHECK(cudaEventRecord(e_, s)); }
  void synchronize() const { VIDLORA_CUDA_CHECK(cudaEventSynchronize(e_)); }
  // Milliseconds from `start` to this event (both recorded and complete).
  float elapsed_ms_since(const Event& start) const {
    float ms = 0;
    VIDLORA_CUDA_CHECK(cudaEventElapsedTime(&ms, start.e_, e_));
    return ms;
  }

 private:
  cudaEvent_t e_ = nullptr;
};

// `count` elements of T in device memory (uninitialised): from cudaMalloc, or from a caching allocator under a tag
// naming the tensor (its cap, its stats; the allocator must outlive the buffer).
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t count) : n_(count) {
    if (count) VIDLORA_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p_), count * sizeof(T)));
  }
  // allocator null: cudaMalloc, as DeviceBuffer(count).
  DeviceBuffer(CudaCachingAllocator* allocator, std::size_t count, std::string_view tag)
      : DeviceBuffer(allocator ? 0 : count) {
    if (!allocator || !count) return;
    p_ = static_cast<T*>(allocator->allocate(count * sizeof(T), tag));
    n_ = count;
    allocator_ = allocator;
  }
  DeviceBuffer(CudaCachingAllocator* allocator, const std::vector<T>& host, std::string_view tag)
      : DeviceBuffer(allocator, host.size(), tag) {
    upload(std::span<const T>(host));
  }
  explicit DeviceBuffer(std::span<const T> host) : DeviceBuffer(host.size()) { upload(host); }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(std::span<const T>(host)) {}
  ~DeviceBuffer() { release(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)),
        n_(std::exchange(o.n_, 0)),
        allocator_(std::exchange(o.allocator_, nullptr)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    std::swap(allocator_, o.allocator_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* data() { return p_; }
  const T* data() const { return p_; }
  std::size_t size() const { return n_; }
  std::size_t bytes() const { return n_ * sizeof(T); }

  void upload(std::span<const T> host) {
    check_arg(host.size() == n_, "DeviceBuffer::upload",
              std::to_string(host.size()) + " elements into a buffer of " + std::to_string(n_));
    // A table of pointers or of structs holding them (the optimizer's TensorSlot table) is read by kernels, which fault
    // on a host pointer: the CUDA emulation checks each pointer it holds as it checks a kernel's arguments.
    VIDLORA_CHECK_UPLOADED_TABLE(host.data(), host.size());
    if (n_) VIDLORA_CUDA_CHECK(cudaMemcpy(p_, host.data(), bytes(), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    download(host);
    return host;
  }
  // Into host memory of the buffer's size (no allocation, no extra pass).
  void download(std::span<T> host) const {
    check_arg(host.size() == n_, "DeviceBuffer::download",
              std::to_string(n_) + " elements into host memory of " + std::to_string(host.size()));
    if (n_) VIDLORA_CUDA_CHECK(cudaMemcpy(host.data(), p_, bytes(), cudaMemcpyDeviceToHost));
  }
  // Every byte set to `byte` (0xFF on floats = NaN: the tests' poison).
  void fill_bytes(int byte, cudaStream_t s = nullptr) {
    if (n_) VIDLORA_CUDA_CHECK(cudaMemsetAsync(p_, byte, bytes(), s));
  }
  // The caching allocator the buffer came from (null: cudaMalloc).
  CudaCachingAllocator* allocator() const { return allocator_; }

 private:
  void release() noexcept {
    if (!p_) return;
    if (!allocator_) {
      (void)cudaFree(p_);
      return;
    }
    try {
      allocator_->deallocate(p_);  // back to its cache: stream-ordered reuse on the compute stream
    } catch (...) {                // a destructor must not throw
    }
  }

  T* p_ = nullptr;
  std::size_t n_ = 0;
  CudaCachingAllocator* allocator_ = nullptr;
};

}  // namespace vidlora::cuda
#endif

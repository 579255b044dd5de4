#pragma once
// A block of a caching allocator held for a device tensor's lifetime, on the host: what the step-memory tests' executors
// allocate in place of a device tensor's buffer (a tensor of `bytes` under `tag`), given back when destroyed.

#include <cstdint>
#include <string>
#include <utility>

namespace vidlora::test {

template <class Allocator>
class AllocatorBlock {
 public:
  AllocatorBlock() = default;
  AllocatorBlock(Allocator& a, std::int64_t bytes, const std::string& tag)
      : a_(&a), p_(a.allocate(static_cast<std::size_t>(bytes), tag)) {}
  AllocatorBlock(AllocatorBlock&& o) noexcept : a_(std::exchange(o.a_, nullptr)), p_(std::exchange(o.p_, nullptr)) {}
  AllocatorBlock& operator=(AllocatorBlock&& o) noexcept {
    std::swap(a_, o.a_);
    std::swap(p_, o.p_);
    return *this;
  }
  ~AllocatorBlock() {
    if (a_ && p_) a_->deallocate(p_);
  }
  bool held() const { return p_ != nullptr; }

 private:
  Allocator* a_ = nullptr;
  void* p_ = nullptr;
};

}  // namespace vidlora::test

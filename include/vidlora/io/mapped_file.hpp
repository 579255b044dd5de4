#pragma once
// A read-only, memory-mapped file (POSIX mmap), unmapped when the last owner goes away. Pages a
// reader has touched count in the process's resident set until unmapped; release() drops them
// earlier, one range at a time, so reading a big file through the mapping needs no more host memory
// than the range being read.

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <span>
#include <utility>

#include <vidlora/core/error.hpp>

namespace vidlora::io {

class MappedFile {
 public:
  // Maps the whole file read-only. An empty file maps to an empty span.
  static MappedFile open(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("cannot open '{}': {}", path.string(), std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      fail("cannot stat '{}': {}", path.string(), std::strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      fail("'{}' is not a regular file", path.string());
    }
    MappedFile file;
    file.path_ = path;
    file.size_ = static_cast<std::size_t>(st.st_size);
    if (file.size_ > 0) {
      void* data = ::mmap(nullptr, file.size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (data == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        fail("cannot memory-map '{}' ({} bytes): {}", path.string(), file.size_, std::strerror(err));
      }
      file.data_ = data;
    }
    ::close(fd);  // the mapping keeps the file alive
    return file;
  }

  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept { swap(other); }
  MappedFile& operator=(MappedFile&& other) noexcept {
    MappedFile moved(std::move(other));
    swap(moved);
    return *this;
  }
  ~MappedFile() {
    if (data_) ::munmap(data_, size_);
  }

  std::span<const std::byte> bytes() const { return {static_cast<const std::byte*>(data_), size_}; }

  // Drops the pages covering `range` (a part of bytes()) from this process's resident set. The
  // mapping is read-only and private, so its pages are never modified: the bytes stay readable and
  // a later read faults them back in from the file (or the page cache) unchanged. Pages at either
  // end shared with neighbouring data are dropped too, for the same reason. Advisory: a kernel that
  // refuses leaves memory as it was. Returns the bytes of whole pages covered.
  std::size_t release(std::span<const std::byte> range) const {
    if (!data_ || range.empty()) return 0;
    const auto* base = static_cast<const std::byte*>(data_);
    require(range.data() >= base && range.data() + range.size() <= base + size_,
            "MappedFile::release: the range is not inside the mapping of '{}'", path_.string());
    const std::size_t page = page_size();
    const std::size_t first = static_cast<std::size_t>(range.data() - base) / page * page;
    const std::size_t last =
        std::min(size_, (static_cast<std::size_t>(range.data() - base) + range.size() + page - 1) / page * page);
    ::madvise(static_cast<std::byte*>(data_) + first, last - first, MADV_DONTNEED);
    return last - first;
  }
  std::size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  static std::size_t page_size() {
    static const std::size_t size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    return size;
  }

  void swap(MappedFile& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    std::swap(path_, other.path_);
  }

  void* data_ = nullptr;
  std::size_t size_ = 0;
  std::filesystem::path path_;
};

}  // namespace vidlora::io

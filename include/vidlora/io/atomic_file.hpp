#pragma once
// Writing a file so that its final name only ever holds a complete file: the bytes go to
// `<path>.<host>-<pid>.tmp` in the same directory, are fsync'ed, then renamed over `path` (and the directory
// fsync'ed). The temporary name is this process's alone: processes on any hosts writing the same file (ranks
// filling a shared feature cache) never write into one file, and the last rename wins with a whole file. A failure (disk full, exception) removes the temporary file and leaves any previous
// file at `path` untouched.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <span>
#include <string_view>
#include <utility>

#include <vidlora/core/error.hpp>

namespace vidlora::io {

class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path path) : path_(std::move(path)) {
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
    tmp_ = path_;
    tmp_ += fmt::format(".{}-{}.tmp", host, ::getpid());
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("cannot create '{}' (to write '{}'): {}", tmp_.string(), path_.string(), std::strerror(errno));
  }
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile() { abandon(); }

  void write(std::span<const std::byte> bytes) {
    require(fd_ >= 0, "'{}': write after commit", path_.string());
    const std::byte* p = bytes.data();
    std::size_t left = bytes.size();
    while (left > 0) {
      const ::ssize_t n = ::write(fd_, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int err = n < 0 ? errno : EIO;
        abandon();
        fail("cannot write '{}': {}", tmp_.string(), std::strerror(err));
      }
      p += n;
      left -= static_cast<std::size_t>(n);
    }
  }
  void write(std::string_view text) { write(std::as_bytes(std::span<const char>(text.data(), text.size()))); }

  // fsync, close, rename over the final name, fsync the directory.
  void commit() {
    require(fd_ >= 0, "'{}': commit twice", path_.string());
    if (::fsync(fd_) != 0) {
      const int err = errno;
      abandon();
      fail("cannot fsync '{}': {}", tmp_.string(), std::strerror(err));
    }
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) {
      const int err = errno;
      ::unlink(tmp_.c_str());
      fail("cannot close '{}': {}", tmp_.string(), std::strerror(err));
    }
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
      const int err = errno;
      ::unlink(tmp_.c_str());
      fail("cannot rename '{}' to '{}': {}", tmp_.string(), path_.string(), std::strerror(err));
    }
    std::filesystem::path dir = path_.parent_path();
    if (dir.empty()) dir = ".";
    const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd >= 0) {  // best effort: makes the rename itself durable
      ::fsync(dir_fd);
      ::close(dir_fd);
    }
  }

  const std::filesystem::path& path() const { return path_; }
  const std::filesystem::path& temporary_path() const { return tmp_; }

 private:
  void abandon() noexcept {
    if (fd_ < 0) return;
    ::close(std::exchange(fd_, -1));
    ::unlink(tmp_.c_str());
  }

  std::filesystem::path path_;
  std::filesystem::path tmp_;
  int fd_ = -1;
};

// Writes `text` to `path` atomically (see AtomicFile).
inline void write_file_atomically(const std::filesystem::path& path, std::string_view text) {
  AtomicFile file(path);
  file.write(text);
  file.commit();
}

}  // namespace vidlora::io

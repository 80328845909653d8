#include "cluster/data_dir_lock.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>

namespace shapeproxy::cluster {
namespace {

constexpr const char* kLockFile = "leader.lock";
constexpr const char* kProbeFile = ".lock-probe";

Error io_error(const std::filesystem::path& path, const char* what, int err) {
  return Error{"cluster.data_dir_lock",
               std::string(what) + " " + path.string() + ": " + std::strerror(err), ""};
}

int open_lock_file(const std::filesystem::path& path) {
  return ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
}

// 1: locked; 0: held by another open; -errno otherwise.
int try_lock(int fd) {
  struct flock lock {};
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;
  if (::fcntl(fd, F_OFD_SETLK, &lock) == 0) return 1;
  if (errno == EAGAIN || errno == EACCES) return 0;
  return -errno;
}

Result<void> make_directory(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return Error{"cluster.data_dir_lock", "cannot create " + dir.string() + ": " + ec.message(),
                 ""};
  return {};
}

}  // namespace

DataDirLock::~DataDirLock() {
  if (fd_ >= 0) ::close(fd_);
}

Result<std::unique_ptr<DataDirLock>> DataDirLock::try_acquire(
    const std::filesystem::path& data_dir) {
  if (auto made = make_directory(directory(data_dir)); !made) return made.error();
  const auto path = directory(data_dir) / kLockFile;
  const int fd = open_lock_file(path);
  if (fd < 0) return io_error(path, "cannot open", errno);
  const int locked = try_lock(fd);
  if (locked == 1) return std::unique_ptr<DataDirLock>(new DataDirLock(fd));
  ::close(fd);
  if (locked == 0) return std::unique_ptr<DataDirLock>();
  return io_error(path, "cannot lock", -locked);
}

Result<void> DataDirLock::check_filesystem(const std::filesystem::path& data_dir) {
  if (auto made = make_directory(directory(data_dir)); !made) return made.error();
  const auto path = directory(data_dir) / kProbeFile;
  const int first = open_lock_file(path);
  if (first < 0) return io_error(path, "cannot open", errno);
  const int second = open_lock_file(path);
  if (second < 0) {
    const int err = errno;
    ::close(first);
    return io_error(path, "cannot open", err);
  }
  const int a = try_lock(first);
  const int b = a == 1 ? try_lock(second) : a;
  ::close(second);
  ::close(first);
  if (a < 0) return io_error(path, "file locks are not supported on", -a);
  if (b != 0) {
    return Error{"cluster.unsafe_filesystem",
                 "the filesystem of " + data_dir.string() +
                     " does not enforce file locks between processes; several instances on it "
                     "would corrupt the shapes (use a filesystem with POSIX locks: a local disk, "
                     "NFSv4, EFS, CephFS)",
                 ""};
  }
  return {};
}

}  // namespace shapeproxy::cluster

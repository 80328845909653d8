#include "storage/read_only_file.h"
#include "storage/storage_error.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace shapeproxy::storage {

Result<std::shared_ptr<const ReadOnlyFile>> ReadOnlyFile::open(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    return Error{storage_error_code(error),
                 "opening " + path.string() + ": " + std::strerror(error),
                 "check the data directory"};
  }
  return std::shared_ptr<const ReadOnlyFile>(new ReadOnlyFile(fd, path));
}

ReadOnlyFile::~ReadOnlyFile() { ::close(fd_); }

Result<std::string> ReadOnlyFile::read(std::uint64_t offset, std::uint64_t length) const {
  std::string bytes(length, '\0');
  std::uint64_t done = 0;
  while (done < length) {
    ssize_t got =
        ::pread(fd_, bytes.data() + done, length - done, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      return Error{
          "storage_io",
          "reading " + path_.string() + ": " +
              (got < 0 ? std::string(std::strerror(errno)) : "file is shorter than its index"),
          "check the data directory's disk"};
    }
    done += static_cast<std::uint64_t>(got);
  }
  return bytes;
}

}  // namespace shapeproxy::storage

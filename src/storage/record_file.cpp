#include "storage/record_file.h"
#include "storage/storage_error.h"

#include <fcntl.h>
#include <unistd.h>

#include <zlib.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

namespace shapeproxy::storage {
namespace {

constexpr std::size_t kHeaderBytes = kRecordHeaderBytes;
constexpr std::uint32_t kMaxPayload = 1u << 30;

Error io_error(const std::string& what, const std::filesystem::path& path) {
  const int error = errno;
  return Error{storage_error_code(error), what + " " + path.string() + ": " + std::strerror(error),
               "check free disk space and permissions of the data directory"};
}

template <typename T>
void put(std::string& out, T value) {
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    out += static_cast<char>((static_cast<std::uint64_t>(value) >> (8 * i)) & 0xff);
  }
}

template <typename T>
T get(const char* bytes) {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    value |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  }
  return static_cast<T>(value);
}

std::uint32_t checksum(std::string_view covered) { return crc32(covered); }

Result<void> write_fully(int fd, std::string_view bytes, const std::filesystem::path& path) {
  while (!bytes.empty()) {
    ssize_t written = ::write(fd, bytes.data(), bytes.size());
    if (written < 0) {
      if (errno == EINTR) continue;
      return io_error("writing", path);
    }
    if (written == 0) {
      errno = EIO;  // no progress on a regular file: do not spin
      return io_error("writing", path);
    }
    bytes.remove_prefix(static_cast<std::size_t>(written));
  }
  return {};
}

}  // namespace

std::uint32_t crc32(std::string_view bytes) {
  uLong crc = ::crc32(0L, Z_NULL, 0);
  while (!bytes.empty()) {
    const auto n = static_cast<uInt>(std::min<std::size_t>(bytes.size(), 1u << 30));
    crc = ::crc32(crc, reinterpret_cast<const Bytef*>(bytes.data()), n);
    bytes.remove_prefix(n);
  }
  return static_cast<std::uint32_t>(crc);
}

DecodedRecord decode_record(std::string_view bytes, std::uint64_t at, bool check_crc) {
  DecodedRecord out;
  if (bytes.size() < kHeaderBytes) {
    out.size = kHeaderBytes;
    return out;
  }
  const char* header = bytes.data();
  auto length = get<std::uint32_t>(header);
  if (length > kMaxPayload) {
    out.status = DecodedRecord::Status::kDamaged;
    return out;
  }
  out.size = kHeaderBytes + length;
  if (bytes.size() < out.size) return out;
  if (check_crc && checksum(std::string_view(header + 8, kHeaderBytes - 8 + length)) !=
                       get<std::uint32_t>(header + 4)) {
    out.status = DecodedRecord::Status::kDamaged;
    return out;
  }
  out.status = DecodedRecord::Status::kWhole;
  out.record = Record{static_cast<std::uint8_t>(header[8]), get<std::uint64_t>(header + 9),
                      get<std::uint64_t>(header + 17),
                      std::string_view(header + kHeaderBytes, length), at + kHeaderBytes};
  return out;
}

Result<std::uint64_t> RecordFile::read_all(const std::filesystem::path& path,
                                           const std::function<void(const Record&)>& visit) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::error_code unknown;  // cannot even stat it (EACCES, ELOOP, EIO): an error
    if (!std::filesystem::exists(path, unknown) && !unknown) return std::uint64_t{0};
    return io_error("opening", path);
  }
  // One read of the whole file (a character iterator is many times slower).
  in.seekg(0, std::ios::end);
  const auto end = in.tellg();
  in.seekg(0, std::ios::beg);
  std::string bytes(end > 0 ? static_cast<std::size_t>(end) : 0, '\0');
  if (!bytes.empty() && !in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()))) {
    bytes.resize(static_cast<std::size_t>(std::max<std::streamsize>(in.gcount(), 0)));
  }
  std::uint64_t at = 0;
  while (true) {
    auto decoded = decode_record(std::string_view(bytes).substr(at), at);
    if (decoded.status != DecodedRecord::Status::kWhole) break;
    visit(decoded.record);
    at += decoded.size;
  }
  return at;
}

Result<RecordFile> RecordFile::open_for_append(const std::filesystem::path& path,
                                               std::uint64_t good_length) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return io_error("opening", path);
  if (::ftruncate(fd, static_cast<off_t>(good_length)) != 0 ||
      ::lseek(fd, static_cast<off_t>(good_length), SEEK_SET) < 0) {
    ::close(fd);
    return io_error("cutting", path);
  }
  return RecordFile(fd, path, good_length);
}

RecordFile::RecordFile(int fd, std::filesystem::path path, std::uint64_t size)
    : fd_(fd), path_(std::move(path)), size_(size) {}

RecordFile::RecordFile(RecordFile&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      path_(std::move(other.path_)),
      size_(other.size_),
      pending_(std::move(other.pending_)),
      dirty_(other.dirty_),
      torn_(other.torn_) {}

RecordFile& RecordFile::operator=(RecordFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
    size_ = other.size_;
    pending_ = std::move(other.pending_);
    dirty_ = other.dirty_;
    torn_ = other.torn_;
  }
  return *this;
}

RecordFile::~RecordFile() {
  if (fd_ >= 0) ::close(fd_);
}

void RecordFile::add(const Record& record) {
  std::size_t start = pending_.size();
  put<std::uint32_t>(pending_, static_cast<std::uint32_t>(record.payload.size()));
  put<std::uint32_t>(pending_, 0);  // checksum, filled below
  pending_ += static_cast<char>(record.kind);
  put<std::uint64_t>(pending_, record.tx);
  put<std::uint64_t>(pending_, record.op);
  pending_.append(record.payload);
  std::string_view covered(pending_.data() + start + 8, pending_.size() - start - 8);
  std::uint32_t crc = checksum(covered);
  for (std::size_t i = 0; i < 4; ++i)
    pending_[start + 4 + i] = static_cast<char>((crc >> (8 * i)) & 0xff);
}

Result<void> RecordFile::write() {
  if (pending_.empty()) return {};
  if (torn_) {
    return Error{"storage_io",
                 path_.string() + " ends in a torn write that could not be cut off; not appending",
                 "check the data directory's disk; restarting cuts the file back"};
  }
  if (auto written = write_fully(fd_, pending_, path_); !written) {
    // A partial write (no space, I/O error, file size limit) must not stay:
    // records appended later would follow torn bytes, which every reader
    // stops at. Cut back to the last whole write; pending_ is kept, so a
    // later write() tries the same records again.
    if (::ftruncate(fd_, static_cast<off_t>(size_)) != 0 ||
        ::lseek(fd_, static_cast<off_t>(size_), SEEK_SET) < 0) {
      torn_ = true;
      auto cut = io_error("cutting a torn write off", path_);
      return Error{written.error().code, written.error().message + "; " + cut.message,
                   written.error().hint};
    }
    return written;
  }
  size_ += pending_.size();
  pending_.clear();
  dirty_ = true;
  return {};
}

Result<void> RecordFile::sync() {
  if (auto written = write(); !written) return written;
  if (!dirty_) return {};
  if (::fdatasync(fd_) != 0) return io_error("syncing", path_);
  dirty_ = false;
  return {};
}

Result<void> write_file_atomically(const std::filesystem::path& path, std::string_view contents) {
  auto temporary = path;
  temporary += ".tmp";
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return io_error("creating", temporary);
  auto written = write_fully(fd, contents, temporary);
  bool synced = written && ::fsync(fd) == 0;
  ::close(fd);
  if (!written) return written;
  if (!synced) return io_error("syncing", temporary);
  if (::rename(temporary.c_str(), path.c_str()) != 0) return io_error("renaming", temporary);
  int dir = ::open(path.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  return {};
}

}  // namespace shapeproxy::storage

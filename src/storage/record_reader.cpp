#include "storage/record_reader.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "storage/storage_error.h"

namespace shapeproxy::storage {

RecordReader::RecordReader(std::shared_ptr<const ReadOnlyFile> file, std::uint64_t begin,
                           std::uint64_t end, std::size_t buffer_bytes)
    : file_(std::move(file)),
      cursor_(begin),
      end_(end),
      buffer_bytes_(buffer_bytes),
      buffer_start_(begin) {}

// Makes buffer_ hold at least `need` bytes from cursor_ (fewer only at end_).
Result<void> RecordReader::fill(std::uint64_t need) {
  const std::uint64_t have_from = cursor_ - buffer_start_;
  if (buffer_.size() - have_from >= need) return {};
  buffer_.erase(0, have_from);
  buffer_start_ = cursor_;
  const std::uint64_t want =
      std::min<std::uint64_t>(end_ - cursor_, std::max<std::uint64_t>(need, buffer_bytes_));
  std::size_t at = buffer_.size();
  if (want <= at) return {};
  buffer_.resize(want);
  while (at < want) {
    ssize_t got = ::pread(file_->descriptor(), buffer_.data() + at, want - at,
                          static_cast<off_t>(buffer_start_ + at));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      const int error = errno;
      buffer_.resize(at);
      return Error{storage_error_code(error),
                   std::string("reading a shape log: ") + std::strerror(error),
                   "check the data directory's disk"};
    }
    if (got == 0) break;  // shorter than `end`: what is there is all there is
    at += static_cast<std::size_t>(got);
  }
  buffer_.resize(at);
  return {};
}

Result<std::optional<Record>> RecordReader::next() {
  if (damaged_ || cursor_ >= end_) return std::optional<Record>{};
  std::uint64_t need = kRecordHeaderBytes;
  while (true) {
    if (auto filled = fill(need); !filled) return filled.error();
    std::string_view bytes(buffer_);
    bytes.remove_prefix(cursor_ - buffer_start_);
    auto decoded = decode_record(bytes, cursor_);
    if (decoded.status == DecodedRecord::Status::kWhole) {
      cursor_ += decoded.size;
      return std::optional<Record>(decoded.record);
    }
    // Damaged, or cut short before `end` (the file ends, or `end` falls
    // inside the record): the good records end here.
    if (decoded.status == DecodedRecord::Status::kDamaged || decoded.size <= need ||
        cursor_ + decoded.size > end_) {
      damaged_ = true;
      return std::optional<Record>{};
    }
    need = decoded.size;
  }
}

Result<std::uint64_t> file_size(const ReadOnlyFile& file) {
  struct stat status {};
  if (::fstat(file.descriptor(), &status) != 0) {
    const int error = errno;
    return Error{storage_error_code(error),
                 std::string("stat of a shape file: ") + std::strerror(error),
                 "check the data directory's disk"};
  }
  return static_cast<std::uint64_t>(status.st_size);
}

}  // namespace shapeproxy::storage

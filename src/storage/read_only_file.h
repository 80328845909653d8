// ReadOnlyFile: an open descriptor of an immutable file (a shape's snapshot)
// whose byte ranges are read on demand, so stored chunks stay on disk (in the
// page cache, not the heap) until a response needs them. The descriptor keeps
// the bytes readable after the file is unlinked (replaced by a compaction),
// so whoever holds the shared_ptr may keep sending from it (sendfile) while a
// compaction swaps the snapshot out. read() is safe from any thread (pread).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "common/result.h"

namespace shapeproxy::storage {

class ReadOnlyFile {
 public:
  static Result<std::shared_ptr<const ReadOnlyFile>> open(const std::filesystem::path& path);
  ~ReadOnlyFile();
  ReadOnlyFile(const ReadOnlyFile&) = delete;
  ReadOnlyFile& operator=(const ReadOnlyFile&) = delete;

  // `length` bytes at `offset`; an error if the file is shorter or unreadable.
  Result<std::string> read(std::uint64_t offset, std::uint64_t length) const;
  // The open descriptor, valid as long as this object lives (for sendfile).
  int descriptor() const { return fd_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  ReadOnlyFile(int fd, std::filesystem::path path) : fd_(fd), path_(std::move(path)) {}
  int fd_;
  std::filesystem::path path_;
};

// How a stored chunk's bytes encode its body (storage/chunk_coding.h).
enum class ChunkCoding : std::uint8_t {
  kIdentity,  // the body itself (files written before session 6)
  kGzip,      // one gzip member of the body
};

// A byte range of a ReadOnlyFile: where one stored chunk lies (exactly the
// chunk's stored bytes, the record header and checksum excluded), and how
// they encode the body.
struct StoredChunk {
  std::shared_ptr<const ReadOnlyFile> file;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;  // stored bytes
  ChunkCoding coding = ChunkCoding::kIdentity;
  std::uint64_t decoded_length = 0;  // kGzip: the body's length
  std::uint64_t body_length() const {
    return coding == ChunkCoding::kIdentity ? length : decoded_length;
  }
};

}  // namespace shapeproxy::storage

// RecordReader: reads the records of a record file front to back through a
// bounded buffer (pread on a ReadOnlyFile), so a big log is never held in
// memory at once and nothing is read past a given end (bytes a concurrent
// appender has not finished are never looked at). Safe on any thread; one
// reader per thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/result.h"
#include "storage/read_only_file.h"
#include "storage/record_file.h"

namespace shapeproxy::storage {

class RecordReader {
 public:
  // Reads the records in [begin, end) of `file` (begin at a record header).
  RecordReader(std::shared_ptr<const ReadOnlyFile> file, std::uint64_t begin, std::uint64_t end,
               std::size_t buffer_bytes = 1 << 20);

  // The next record, its payload valid until the next call; nullopt at
  // `end` or where a record is incomplete before `end` or damaged (then
  // position() < end: see damaged()). An error when the file cannot be read.
  Result<std::optional<Record>> next();
  // Where the next record starts (after the last one returned).
  std::uint64_t position() const { return cursor_; }
  // Reading stopped at a record that is incomplete or fails its checksum.
  bool damaged() const { return damaged_; }

 private:
  Result<void> fill(std::uint64_t need);

  std::shared_ptr<const ReadOnlyFile> file_;
  std::uint64_t cursor_;
  std::uint64_t end_;
  std::size_t buffer_bytes_;
  std::string buffer_;  // file bytes from buffer_start_
  std::uint64_t buffer_start_ = 0;
  bool damaged_ = false;
};

// The size of an open file (fstat), for reading it up to its end.
Result<std::uint64_t> file_size(const ReadOnlyFile& file);

}  // namespace shapeproxy::storage

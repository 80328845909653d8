// RecordFile: an append-only file of checksummed records, the unit of
// durability for shape logs. Each record is
//   u32 payload length | u32 CRC-32 of (kind, tx, op, payload) | u8 kind |
//   u64 tx | u64 op | payload
// (little-endian). Appends are buffered by the OS; sync() makes them durable
// (fdatasync). Reading stops at the first record that is incomplete or whose
// checksum fails (a torn tail after a crash), and open_for_append() cuts the
// file there so new records follow the last good one.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

#include "common/result.h"

namespace shapeproxy::storage {

struct Record {
  std::uint8_t kind = 0;
  std::uint64_t tx = 0;
  std::uint64_t op = 0;
  std::string_view payload;
  std::uint64_t position = 0;  // read_all(): the payload's byte offset in the file
};

// Bytes a record of `payload_length` takes in a file, and where its payload
// starts within them.
constexpr std::uint64_t kRecordHeaderBytes = 4 + 4 + 1 + 8 + 8;

// Decoding one record from bytes that start at its header (the file offset
// of the header is `at`): kWhole with the record and the bytes it takes;
// kIncomplete when `bytes` ends inside it (read more, or a torn tail);
// kDamaged when its length is impossible or its checksum fails.
struct DecodedRecord {
  enum class Status { kWhole, kIncomplete, kDamaged };
  Status status = Status::kIncomplete;
  Record record;           // kWhole: payload points into `bytes`
  std::uint64_t size = 0;  // kWhole: header + payload; kIncomplete: bytes needed
};
DecodedRecord decode_record(std::string_view bytes, std::uint64_t at, bool check_crc = true);

// CRC-32 of `bytes` (IEEE 802.3, reflected: zlib's crc32(), the same values as
// boost::crc_32_type, which wrote the files before): the checksum of records
// and of the changes index's entries. zlib's is several times faster than a
// byte-wise table, and a snapshot's records are checksummed when stored.
std::uint32_t crc32(std::string_view bytes);

class RecordFile {
 public:
  // Reads every good record (in order) and returns the byte length of the
  // good prefix. A missing file reads as empty.
  static Result<std::uint64_t> read_all(const std::filesystem::path& path,
                                        const std::function<void(const Record&)>& visit);

  // Opens for appending after cutting the file to `good_length` bytes.
  static Result<RecordFile> open_for_append(const std::filesystem::path& path,
                                            std::uint64_t good_length);

  // Open on nothing (size 0; every write fails): a read-only ShapeFiles'.
  RecordFile() = default;
  RecordFile(RecordFile&& other) noexcept;
  RecordFile& operator=(RecordFile&& other) noexcept;
  ~RecordFile();

  // Queues a record; write() hands the queued records to the OS in one call.
  void add(const Record& record);
  // Moves the queued (not yet written) records out, e.g. to another file.
  std::string take_pending() { return std::exchange(pending_, {}); }
  void add_encoded(std::string_view records) { pending_.append(records); }
  // Writes what add() collected. On failure (a partial write included) the
  // file is cut back to its last good size and the records stay queued.
  Result<void> write();
  Result<void> sync();  // fdatasync when something was written since the last sync
  // For syncing on another thread: the descriptor (stable until the file is
  // moved or destroyed), whether written data awaits a sync, and marking it done.
  int descriptor() const { return fd_; }
  bool needs_sync() const { return dirty_; }
  void mark_synced() { dirty_ = false; }
  std::uint64_t size() const { return size_; }
  std::uint64_t pending_bytes() const { return pending_.size(); }

 private:
  RecordFile(int fd, std::filesystem::path path, std::uint64_t size);

  int fd_ = -1;
  std::filesystem::path path_;
  std::uint64_t size_ = 0;
  std::string pending_;
  bool dirty_ = false;
  bool torn_ = false;  // a failed write could not be cut off: no more appends
};

// Writes `contents` to `path` atomically (temp file, fsync, rename, fsync dir).
Result<void> write_file_atomically(const std::filesystem::path& path, std::string_view contents);

}  // namespace shapeproxy::storage

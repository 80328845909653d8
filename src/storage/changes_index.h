// ChangesIndex: a sparse index of one changes file, so a shape's operations
// stay on disk and are still found without scanning the log: one mark per
// ~64 KiB of records, each naming a record (tx, op), where its header starts
// and where its transaction's first record starts.
//
// The marks of synced records are also appended to a sidecar file
// ("<changes file>.idx": fixed 40-byte entries, each with its own checksum),
// never synced itself. At load, load_changes() keeps the sidecar's valid
// prefix, checks its last mark against the changes file (the record there
// must be whole and carry the mark's tx/op), then scans only from that
// mark's transaction to the end: start-up reads O(1) of each log, not all of
// it. Because a mark is written only once its record is durable, every
// record before it is whole; a lost or damaged sidecar suffix costs a longer
// scan, never a wrong log. The scan cuts a torn tail back to the last whole
// transaction, as a full read would.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

namespace shapeproxy::storage {

// Kinds of the records in shape files.
namespace record_kind {
constexpr std::uint8_t kOperation = 1;
constexpr std::uint8_t kLastOfTransaction = 2;  // the last operation of a transaction
constexpr std::uint8_t kSnapshotMessage = 3;    // older snapshot files: one message each
constexpr std::uint8_t kSnapshotChunk = 4;      // one whole response body (before session 6)
// One whole response body as a gzip member, its decoded length in `tx`
// (storage/chunk_coding.h).
constexpr std::uint8_t kSnapshotChunkGzip = 5;
}  // namespace record_kind

struct ChangesMark {
  std::uint64_t tx = 0;
  std::uint64_t op = 0;
  std::uint64_t position = 0;  // the record's header
  std::uint64_t tx_begin = 0;  // the header of its transaction's first record
  friend bool operator==(const ChangesMark&, const ChangesMark&) = default;
};

// Records between marks, at least (a mark goes on the first record past it).
constexpr std::uint64_t kMarkSpacing = 64 * 1024;
constexpr std::uint64_t kSidecarEntryBytes = 40;

std::filesystem::path sidecar_path(const std::filesystem::path& changes_file);

// The valid prefix of a sidecar (entries whose checksum holds, in increasing
// position and offset order); a missing sidecar reads as empty.
Result<std::vector<ChangesMark>> read_sidecar(const std::filesystem::path& path);
// Cuts the sidecar to `keep` entries, then appends `marks`.
Result<void> write_sidecar(const std::filesystem::path& path, std::size_t keep,
                           const std::vector<ChangesMark>& marks);
// Bytes of one sidecar entry (exposed for tests and fuzzing).
std::string encode_mark(const ChangesMark& mark);
std::optional<ChangesMark> decode_mark(std::string_view entry);

struct LoadedChanges {
  std::vector<ChangesMark> marks;
  std::size_t marks_in_sidecar = 0;  // marks[0..n) are the sidecar's; the rest came from the scan
  std::uint64_t good_length = 0;     // bytes of whole transactions
  std::uint64_t file_size = 0;
  std::optional<std::pair<std::uint64_t, std::uint64_t>> last;  // the last whole operation
  std::uint64_t scanned_bytes = 0;                              // read at load (tests, metrics)
};
// Loads one changes file as described above (a missing file is empty).
Result<LoadedChanges> load_changes(const std::filesystem::path& path);

// Marks a run of records as they are appended: call add() per record (at its
// position) in order; returns whether it gets a mark.
class MarkPlacer {
 public:
  explicit MarkPlacer(std::optional<std::uint64_t> last_mark = std::nullopt)
      : last_mark_(last_mark) {}
  bool place(std::uint64_t position) {
    if (last_mark_ && position < *last_mark_ + kMarkSpacing) return false;
    last_mark_ = position;
    return true;
  }

 private:
  std::optional<std::uint64_t> last_mark_;
};

}  // namespace shapeproxy::storage

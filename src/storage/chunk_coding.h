// Chunk coding: how a snapshot chunk (one whole response body, a JSON array
// of messages) is stored. Since session 6 a chunk record holds one gzip
// member (RFC 1952) of the body, deflated at zlib level 1, and the body's
// length in the record's `tx` field (record_kind::kSnapshotChunkGzip); older
// files hold the body as it is (kSnapshotChunk) and stay readable.
// Why gzip: the member is exactly what a client that sends
// `Accept-Encoding: gzip` may receive (`Content-Encoding: gzip`), so those
// responses still go out with sendfile(2) from the page cache; JSON of rows
// shrinks ~5-12x, which is what brings a shape's disk under 2.5x its table.
// Clients without gzip get the body decoded while it is sent (ChunkInflater,
// bounded memory). zlib (already linked for its crc32) rather than
// libdeflate: level 1 measured 351 vs 408 MB/s on a 10 MiB chunk of bench
// rows, and libdeflate has no streaming decoder.
// Invariant: a decoded chunk is byte-identical to the body written, or an
// error "storage_corrupt" (never fewer, more or other bytes): the gzip CRC-32
// and length, the stored length, and "nothing after the member" are checked.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"
#include "storage/read_only_file.h"

namespace shapeproxy::storage {

// Whether a gzip member of `member_bytes` can decode to `decoded_length`
// bytes (a header and trailer, and DEFLATE's best ratio, 1032:1): a damaged
// record header must not make a reader allocate gigabytes.
constexpr bool plausible_gzip_length(std::uint64_t member_bytes, std::uint64_t decoded_length) {
  return member_bytes >= 18 && member_bytes <= (std::uint64_t{1} << 40) &&
         decoded_length <= member_bytes * 1032;
}

// `body` as one gzip member (level 1) into `out` (replaced).
void gzip_chunk(std::string_view body, std::string& out);

// Decodes one gzip member held in memory that must decode to exactly
// `decoded_length` bytes.
Result<std::string> gunzip_chunk(std::string_view member, std::uint64_t decoded_length);

// The body of a stored chunk, decoded if it is stored coded (any thread:
// pread, then inflate).
Result<std::string> read_chunk(const StoredChunk& chunk);

// Decodes a stored gzip chunk piece by piece, reading its file as it goes:
// memory is one input buffer plus zlib's window, whatever the chunk's size.
// Any thread, one at a time.
class ChunkInflater {
 public:
  static constexpr std::size_t kInputBytes = 64 * 1024;

  explicit ChunkInflater(StoredChunk chunk);
  ~ChunkInflater();
  ChunkInflater(const ChunkInflater&) = delete;
  ChunkInflater& operator=(const ChunkInflater&) = delete;

  // Decodes up to `capacity` more bytes into `out` and returns how many: 0
  // only once the whole body was produced and checked. Errors are
  // "storage_corrupt" (the member does not decode to the stored body) or an
  // I/O error of the file; after one, every call fails.
  Result<std::size_t> read(char* out, std::size_t capacity);
  std::uint64_t produced() const { return produced_; }
  const StoredChunk& chunk() const { return chunk_; }

 private:
  Error corrupt(const std::string& why);
  // One inflate() call into `room` bytes at `out`, reading input first when
  // it ran out: the bytes made.
  Result<std::size_t> step(char* out, std::size_t room);

  StoredChunk chunk_;
  struct Zlib;
  std::unique_ptr<Zlib> zlib_;
  std::string input_;
  std::uint64_t read_ = 0;      // bytes of the member read from the file
  std::uint64_t produced_ = 0;  // decoded bytes handed out
  bool ended_ = false;          // the member's end (and trailer) was decoded
  std::optional<Error> failed_;
};

}  // namespace shapeproxy::storage

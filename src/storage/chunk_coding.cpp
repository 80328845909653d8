#include "storage/chunk_coding.h"

#include <zlib.h>

#include <algorithm>
#include <limits>
#include <stdexcept>

#include "common/error_codes.h"

namespace shapeproxy::storage {
namespace {

constexpr int kGzipWindowBits = 15 + 16;  // zlib: a gzip header and trailer
constexpr int kLevel = 1;                 // fast: see the header
// zlib counts in uInt: feed it at most this much per call.
constexpr std::size_t kMaxZlibStep = std::numeric_limits<uInt>::max() / 2;

Error corrupt_error(const std::string& what) {
  return Error{std::string(error_codes::kStorageCorrupt), what,
               "the shape is dropped and rebuilt from the database"};
}

}  // namespace

void gzip_chunk(std::string_view body, std::string& out) {
  z_stream zs{};
  if (deflateInit2(&zs, kLevel, Z_DEFLATED, kGzipWindowBits, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    throw std::bad_alloc();
  }
  out.resize(deflateBound(&zs, static_cast<uLong>(body.size())) + 64);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(body.data()));
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  std::size_t in_left = body.size();
  std::size_t out_left = out.size();
  int rc = Z_OK;
  while (rc == Z_OK || rc == Z_BUF_ERROR) {
    const auto in_step = std::min(in_left, kMaxZlibStep);
    const auto out_step = std::min(out_left, kMaxZlibStep);
    zs.avail_in = static_cast<uInt>(in_step);
    zs.avail_out = static_cast<uInt>(out_step);
    rc = deflate(&zs, in_step == in_left ? Z_FINISH : Z_NO_FLUSH);
    in_left -= in_step - zs.avail_in;
    out_left -= out_step - zs.avail_out;
    if (rc == Z_BUF_ERROR && out_left == 0) break;  // cannot happen: deflateBound
  }
  deflateEnd(&zs);
  if (rc != Z_STREAM_END) throw std::runtime_error("gzip_chunk: deflate did not finish");
  out.resize(out.size() - out_left);
}

struct ChunkInflater::Zlib {
  z_stream zs{};
  bool live = false;
  ~Zlib() {
    if (live) inflateEnd(&zs);
  }
};

ChunkInflater::ChunkInflater(StoredChunk chunk)
    : chunk_(std::move(chunk)), zlib_(std::make_unique<Zlib>()) {
  if (inflateInit2(&zlib_->zs, kGzipWindowBits) != Z_OK) throw std::bad_alloc();
  zlib_->live = true;
}

ChunkInflater::~ChunkInflater() = default;

Error ChunkInflater::corrupt(const std::string& why) {
  std::string where = chunk_.file ? chunk_.file->path().string() : std::string("a chunk");
  failed_ = corrupt_error(where + ": the snapshot chunk at byte " + std::to_string(chunk_.offset) +
                          " does not decode (" + why + ")");
  return *failed_;
}

Result<std::size_t> ChunkInflater::step(char* out, std::size_t room) {
  z_stream& zs = zlib_->zs;
  if (zs.avail_in == 0) {
    if (read_ == chunk_.length) return corrupt("the member is cut short");
    const auto want = std::min<std::uint64_t>(kInputBytes, chunk_.length - read_);
    auto bytes = chunk_.file->read(chunk_.offset + read_, want);
    if (!bytes) {
      failed_ = bytes.error();
      return *failed_;
    }
    input_ = std::move(bytes).value();
    read_ += want;
    zs.next_in = reinterpret_cast<Bytef*>(input_.data());
    zs.avail_in = static_cast<uInt>(input_.size());
  }
  const auto size = std::min(room, kMaxZlibStep);
  zs.next_out = reinterpret_cast<Bytef*>(out);
  zs.avail_out = static_cast<uInt>(size);
  const int rc = inflate(&zs, Z_NO_FLUSH);
  const std::size_t got = size - zs.avail_out;
  produced_ += got;
  if (produced_ > chunk_.decoded_length) return corrupt("longer than its stored length");
  if (rc == Z_STREAM_END) {
    ended_ = true;
    if (zs.avail_in != 0 || read_ != chunk_.length) return corrupt("bytes after the member");
    if (produced_ != chunk_.decoded_length) return corrupt("shorter than its stored length");
  } else if (rc != Z_OK && !(rc == Z_BUF_ERROR && zs.avail_in == 0)) {
    return corrupt(zs.msg ? zs.msg : "zlib error " + std::to_string(rc));
  }
  return got;
}

Result<std::size_t> ChunkInflater::read(char* out, std::size_t capacity) {
  if (failed_) return *failed_;
  if (chunk_.coding != ChunkCoding::kGzip || !chunk_.file) return corrupt("not a gzip chunk");
  std::size_t made = 0;
  while (made < capacity && !ended_) {
    auto got = step(out + made, capacity - made);
    if (!got) return got.error();
    made += got.value();
  }
  // The last bytes are handed out only with the member's end checked (its
  // CRC-32 and length follow them in the trailer): whoever has them all has
  // the body, never other bytes. A 1-byte scratch shows any excess output.
  char spare = 0;
  while (!ended_ && produced_ == chunk_.decoded_length) {
    if (auto got = step(&spare, 1); !got) return got.error();
  }
  return made;
}

Result<std::string> gunzip_chunk(std::string_view member, std::uint64_t decoded_length) {
  if (!plausible_gzip_length(member.size(), decoded_length)) {
    return corrupt_error("a gzip snapshot chunk of " + std::to_string(member.size()) +
                         " bytes cannot decode to " + std::to_string(decoded_length));
  }
  z_stream zs{};
  if (inflateInit2(&zs, kGzipWindowBits) != Z_OK) throw std::bad_alloc();
  std::string out(decoded_length + 1, '\0');  // one spare byte: a longer member shows
  std::size_t in_at = 0;
  std::size_t out_at = 0;
  int rc = Z_OK;
  while (rc == Z_OK) {  // Z_BUF_ERROR: no progress possible (input or room ran out)
    const auto in_step = std::min(member.size() - in_at, kMaxZlibStep);
    const auto out_step = std::min(out.size() - out_at, kMaxZlibStep);
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(member.data() + in_at));
    zs.avail_in = static_cast<uInt>(in_step);
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + out_at);
    zs.avail_out = static_cast<uInt>(out_step);
    rc = inflate(&zs, Z_NO_FLUSH);
    in_at += in_step - zs.avail_in;
    out_at += out_step - zs.avail_out;
  }
  const std::string why = rc == Z_STREAM_END  ? ""
                          : rc == Z_BUF_ERROR ? "cut short"
                          : zs.msg != nullptr ? zs.msg
                                              : "zlib error " + std::to_string(rc);
  inflateEnd(&zs);
  if (out_at > decoded_length) {
    return corrupt_error("a gzip snapshot chunk is longer than its stored length");
  }
  if (!why.empty()) return corrupt_error("a gzip snapshot chunk does not decode (" + why + ")");
  if (in_at != member.size()) {
    return corrupt_error("a gzip snapshot chunk has bytes after its member");
  }
  if (out_at != decoded_length) {
    return corrupt_error("a gzip snapshot chunk is shorter than its stored length");
  }
  out.resize(decoded_length);
  return out;
}

Result<std::string> read_chunk(const StoredChunk& chunk) {
  if (!chunk.file) return Error{"storage_usage", "read_chunk: the chunk has no file", ""};
  auto bytes = chunk.file->read(chunk.offset, chunk.length);
  if (!bytes || chunk.coding == ChunkCoding::kIdentity) return bytes;
  auto body = gunzip_chunk(bytes.value(), chunk.decoded_length);
  if (!body) {
    return corrupt_error(chunk.file->path().string() + " at byte " + std::to_string(chunk.offset) +
                         ": " + body.error().message);
  }
  return body;
}

}  // namespace shapeproxy::storage

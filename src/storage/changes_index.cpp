#include "storage/changes_index.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#include "storage/record_file.h"
#include "storage/record_reader.h"
#include "storage/storage_error.h"

namespace shapeproxy::storage {
namespace fs = std::filesystem;

namespace {

void put64(std::string& out, std::uint64_t value) {
  for (int i = 0; i < 8; ++i) out += static_cast<char>((value >> (8 * i)) & 0xff);
}

std::uint64_t get64(const char* bytes, int width = 8) {
  std::uint64_t value = 0;
  for (int i = 0; i < width; ++i) {
    value |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  }
  return value;
}

Error io_error(const std::string& what, const fs::path& path, int error) {
  return Error{storage_error_code(error), what + " " + path.string() + ": " + std::strerror(error),
               "check the data directory's disk"};
}

}  // namespace

fs::path sidecar_path(const fs::path& changes_file) {
  auto path = changes_file;
  path += ".idx";
  return path;
}

std::string encode_mark(const ChangesMark& mark) {
  std::string out;
  out.reserve(kSidecarEntryBytes);
  put64(out, mark.tx);
  put64(out, mark.op);
  put64(out, mark.position);
  put64(out, mark.tx_begin);
  const std::uint32_t crc = crc32(out);
  put64(out, crc);  // the checksum, then 4 zero bytes
  return out;
}

std::optional<ChangesMark> decode_mark(std::string_view entry) {
  if (entry.size() != kSidecarEntryBytes) return std::nullopt;
  if (get64(entry.data() + 32) != crc32(entry.substr(0, 32))) return std::nullopt;
  ChangesMark mark{get64(entry.data()), get64(entry.data() + 8), get64(entry.data() + 16),
                   get64(entry.data() + 24)};
  if (mark.tx_begin > mark.position) return std::nullopt;
  return mark;
}

Result<std::vector<ChangesMark>> read_sidecar(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<ChangesMark> marks;
  if (!in) return marks;  // missing (or unreadable): rebuilt by a scan
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (std::size_t at = 0; at + kSidecarEntryBytes <= bytes.size(); at += kSidecarEntryBytes) {
    auto mark = decode_mark(std::string_view(bytes).substr(at, kSidecarEntryBytes));
    if (!mark) break;
    if (!marks.empty()) {
      const auto& previous = marks.back();
      if (mark->position <= previous.position ||
          std::make_pair(mark->tx, mark->op) <= std::make_pair(previous.tx, previous.op)) {
        break;
      }
    }
    marks.push_back(*mark);
  }
  return marks;
}

Result<void> write_sidecar(const fs::path& path, std::size_t keep,
                           const std::vector<ChangesMark>& marks) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return io_error("opening", path, errno);
  std::string bytes;
  for (const auto& mark : marks) bytes += encode_mark(mark);
  const auto at = static_cast<off_t>(keep * kSidecarEntryBytes);
  bool ok = ::ftruncate(fd, at) == 0;
  std::size_t done = 0;
  while (ok && done < bytes.size()) {
    ssize_t written =
        ::pwrite(fd, bytes.data() + done, bytes.size() - done, at + static_cast<off_t>(done));
    if (written < 0 && errno == EINTR) continue;
    ok = written > 0;
    if (ok) done += static_cast<std::size_t>(written);
  }
  const int error = errno;
  ::close(fd);
  if (!ok) return io_error("writing", path, error);
  return {};
}

namespace {

// Scans records of `file` from `from` (a transaction's first record) to
// `size`, into `out`: marks for records past the last mark, the end of the
// last whole transaction and its last operation. False when no whole
// transaction was found (then out.good_length stays `from`).
Result<bool> scan(const std::shared_ptr<const ReadOnlyFile>& file, std::uint64_t from,
                  std::uint64_t size, LoadedChanges& out) {
  const std::optional<std::uint64_t> last_mark =
      out.marks.empty() ? std::nullopt : std::optional<std::uint64_t>(out.marks.back().position);
  MarkPlacer placer(last_mark);
  RecordReader reader(file, from, size);
  out.good_length = from;
  std::uint64_t tx_begin = from;
  bool new_transaction = true;
  bool whole = false;
  while (true) {
    const std::uint64_t at = reader.position();
    auto record = reader.next();
    if (!record) return record.error();
    if (!record.value()) break;
    const Record& each = *record.value();
    if (each.kind != record_kind::kOperation && each.kind != record_kind::kLastOfTransaction) {
      break;  // not a changes record: treated as the end of the good records
    }
    if (new_transaction) tx_begin = at;
    if ((!last_mark || at > *last_mark) && placer.place(at)) {
      out.marks.push_back({each.tx, each.op, at, tx_begin});
    }
    new_transaction = each.kind == record_kind::kLastOfTransaction;
    if (new_transaction) {
      out.good_length = reader.position();
      out.last = std::make_pair(each.tx, each.op);
      whole = true;
    }
  }
  out.scanned_bytes += reader.position() - from;
  while (!out.marks.empty() && out.marks.back().position >= out.good_length) out.marks.pop_back();
  return whole;
}

}  // namespace

Result<LoadedChanges> load_changes(const fs::path& path) {
  LoadedChanges out;
  auto opened = ReadOnlyFile::open(path);
  if (!opened) {
    std::error_code unknown;  // cannot even stat it (EACCES, ELOOP, EIO): the open's error
    if (!fs::exists(path, unknown) && !unknown) return out;
    return opened.error();
  }
  auto file = std::move(opened).value();
  auto size = file_size(*file);
  if (!size) return size.error();
  out.file_size = size.value();
  auto sidecar = read_sidecar(sidecar_path(path));
  if (!sidecar) return sidecar.error();
  out.marks = std::move(sidecar).value();
  while (!out.marks.empty() && out.marks.back().position + kRecordHeaderBytes > out.file_size) {
    out.marks.pop_back();
  }
  // The last mark must name a whole record of the file; a few failures in a
  // row mean the sidecar does not describe this file: scan it all.
  for (int failures = 0; !out.marks.empty();) {
    const auto& mark = out.marks.back();
    RecordReader reader(file, mark.position, out.file_size, 64 * 1024);
    auto record = reader.next();
    if (!record) return record.error();
    if (record.value() && record.value()->tx == mark.tx && record.value()->op == mark.op) break;
    out.marks.pop_back();
    if (++failures == 3) out.marks.clear();
  }
  out.marks_in_sidecar = out.marks.size();
  const std::uint64_t from = out.marks.empty() ? 0 : out.marks.back().tx_begin;
  auto whole = scan(file, from, out.file_size, out);
  if (!whole) return whole.error();
  if (!whole.value() && from > 0) {
    // The marked transaction is not whole: the sidecar is wrong about this
    // file. Trust nothing of it.
    out.marks.clear();
    out.marks_in_sidecar = 0;
    out.last.reset();
    auto again = scan(file, 0, out.file_size, out);
    if (!again) return again.error();
  }
  return out;
}

}  // namespace shapeproxy::storage

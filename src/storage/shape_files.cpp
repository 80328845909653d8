#include "storage/shape_files.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "storage/storage_error.h"

namespace shapeproxy::storage {
namespace fs = std::filesystem;

namespace {

constexpr std::uint8_t kOperation = 1;
constexpr std::uint8_t kLastOfTransaction = 2;
constexpr std::uint8_t kSnapshotMessage = 3;
constexpr std::uint8_t kSnapshotChunk = 4;

Result<nlohmann::json> read_meta(const fs::path& dir) {
  std::ifstream in(dir / "meta.json");
  if (!in) return Error{"storage_io", "cannot read " + (dir / "meta.json").string(), ""};
  auto meta = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (meta.is_discarded()) {
    return Error{"storage_corrupt", "meta.json is not valid JSON in " + dir.string(), ""};
  }
  return meta;
}

}  // namespace

ShapeFiles::ShapeFiles(fs::path dir, RecordFile changes)
    : dir_(std::move(dir)), changes_(std::move(changes)) {}

Result<std::unique_ptr<ShapeFiles>> ShapeFiles::create(const fs::path& dir,
                                                       const nlohmann::json& meta) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return Error{"storage_io", "cannot create " + dir.string() + ": " + ec.message(),
                 "check permissions of the data directory"};
  }
  if (auto written = write_file_atomically(dir / "meta.json", meta.dump()); !written) {
    return written.error();
  }
  auto changes = RecordFile::open_for_append(dir / "changes.log", 0);
  if (!changes) return changes.error();
  return std::unique_ptr<ShapeFiles>(new ShapeFiles(dir, std::move(changes).value()));
}

namespace {

// Appends the whole transactions of one changes file to `operations` and
// returns the byte length they take: what follows the last flagged record
// is a transaction whose write was torn by a crash.
Result<std::uint64_t> read_changes(const fs::path& path, std::vector<StoredOperation>& operations) {
  std::uint64_t whole_length = 0;
  std::size_t whole_count = operations.size();
  std::uint64_t offset = 0;
  auto read = RecordFile::read_all(path, [&](const Record& record) {
    offset += 4 + 4 + 1 + 8 + 8 + record.payload.size();
    operations.push_back({record.tx, record.op, std::string(record.payload)});
    if (record.kind == kLastOfTransaction) {
      whole_length = offset;
      whole_count = operations.size();
    }
  });
  if (!read) return read.error();
  operations.resize(whole_count);
  return whole_length;
}

// changes.log is number 0, changes-N.log number N; anything else: nullopt.
std::optional<std::uint64_t> changes_file_number(const std::string& name) {
  if (name == "changes.log") return 0;
  constexpr std::string_view prefix = "changes-";
  constexpr std::string_view suffix = ".log";
  if (name.size() <= prefix.size() + suffix.size() || !name.starts_with(prefix) ||
      !name.ends_with(suffix)) {
    return std::nullopt;
  }
  auto digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 18) {
    return std::nullopt;
  }
  return std::stoull(digits);
}

std::string changes_name(std::uint64_t number) {
  return number == 0 ? "changes.log" : "changes-" + std::to_string(number) + ".log";
}

// Makes the directory's entries (a new file's name) durable.
Result<void> sync_directory(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return Error{storage_error_code(errno),
                 "opening " + dir.string() + " to sync it: " + std::strerror(errno),
                 "check the data directory's disk"};
  }
  const bool synced = ::fsync(fd) == 0;
  const int error = errno;
  ::close(fd);
  if (!synced) {
    return Error{storage_error_code(error), "syncing " + dir.string() + ": " + std::strerror(error),
                 "check the data directory's disk"};
  }
  return {};
}

// A compaction source must be whole: a file whose good records end before
// its size holds a tear (a failed write), and folding only its prefix would
// silently drop everything after it.
Result<void> expect_whole(const fs::path& path, std::uint64_t good_length) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) {
    if (!fs::exists(path)) return {};
    return Error{"storage_io", "cannot stat " + path.string() + ": " + ec.message(), ""};
  }
  if (good_length == size) return {};
  return Error{"storage_corrupt",
               path.string() + " holds " + std::to_string(size) + " bytes but only the first " +
                   std::to_string(good_length) +
                   " are whole records; not compacting it (the files are kept as they are)",
               "check the data directory's disk; the shape keeps serving its uncompacted log"};
}

}  // namespace

Result<std::pair<std::unique_ptr<ShapeFiles>, StoredShape>> ShapeFiles::open(const fs::path& dir) {
  StoredShape stored;
  auto meta = read_meta(dir);
  if (!meta) return meta.error();
  stored.meta = std::move(meta).value();
  const std::string snapshot_file = stored.meta.value("snapshot_file", "snapshot.log");
  auto snapshot = RecordFile::read_all(dir / snapshot_file, [&](const Record& record) {
    if (record.kind == kSnapshotMessage) stored.snapshot.emplace_back(record.payload);
    if (record.kind == kSnapshotChunk) {
      stored.chunk_bodies.emplace_back(record.payload);
      stored.snapshot_chunks.push_back({nullptr, record.position, record.payload.size()});
    }
  });
  if (!snapshot) return snapshot.error();
  // A snapshot file is complete and synced before meta.json names it, so a
  // record that fails its checksum is corruption, not a torn tail: refuse the
  // shape (its clients resync) rather than serve it without the rest. This
  // load-time pass is where stored chunks' checksums are verified; requests
  // then send the checked byte ranges with sendfile, unread.
  std::error_code size_ec;
  auto snapshot_size = fs::file_size(dir / snapshot_file, size_ec);
  if (!size_ec && snapshot.value() != snapshot_size) {
    return Error{"storage_corrupt",
                 (dir / snapshot_file).string() + " has a damaged record at byte " +
                     std::to_string(snapshot.value()) + " of " + std::to_string(snapshot_size),
                 "the shape is dropped and rebuilt from the database"};
  }
  if (!stored.snapshot_chunks.empty()) {
    auto reader = ReadOnlyFile::open(dir / snapshot_file);
    if (!reader) return reader.error();
    for (auto& chunk : stored.snapshot_chunks) chunk.file = reader.value();
  }
  // Every changes file, in order; leftovers of an unfinished compaction
  // (a snapshot file meta.json does not name, temporary files) go.
  std::vector<std::uint64_t> numbers;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    if (auto number = changes_file_number(name)) {
      numbers.push_back(*number);
    } else if ((name.starts_with("snapshot") && name != snapshot_file) || name.ends_with(".tmp")) {
      fs::remove(entry.path(), ec);
    }
  }
  std::sort(numbers.begin(), numbers.end());
  if (numbers.empty()) numbers.push_back(0);
  std::uint64_t last_length = 0;
  for (auto number : numbers) {
    auto length = read_changes(dir / changes_name(number), stored.operations);
    if (!length) return length.error();
    last_length = length.value();
  }
  auto changes = RecordFile::open_for_append(dir / changes_name(numbers.back()), last_length);
  if (!changes) return changes.error();
  auto files = std::unique_ptr<ShapeFiles>(new ShapeFiles(dir, std::move(changes).value()));
  files->snapshot_file_ = snapshot_file;
  files->changes_number_ = numbers.back();
  for (std::size_t i = 0; i + 1 < numbers.size(); ++i) {
    files->older_changes_.push_back(changes_name(numbers[i]));
  }
  if (!stored.operations.empty()) {
    files->written_last_ = {stored.operations.back().tx, stored.operations.back().op};
    files->queued_last_ = files->written_last_;
  }
  return std::make_pair(std::move(files), std::move(stored));
}

std::string ShapeFiles::changes_file_name() const { return changes_name(changes_number_); }

Result<void> ShapeFiles::write() {
  if (auto written = changes_.write(); !written) return written;
  written_last_ = queued_last_;
  return {};
}

Result<std::optional<ShapeFiles::CompactionSource>> ShapeFiles::begin_compaction() {
  if (changes_.needs_sync() || !written_last_ || written_last_ == compacted_last_) {
    return std::optional<CompactionSource>{};
  }
  auto next = RecordFile::open_for_append(dir_ / changes_name(changes_number_ + 1), 0);
  if (!next) return next.error();
  // The new file's name must be durable before data synced in it is
  // acknowledged: the next pending_sync() includes the directory (off the
  // strand, on the sync thread).
  directory_unsynced_ = true;
  next->add_encoded(changes_.take_pending());
  older_changes_.push_back(changes_file_name());
  changes_ = std::move(next).value();
  ++changes_number_;
  compacted_last_ = written_last_;
  CompactionSource source{dir_, snapshot_file_, older_changes_, written_last_->first,
                          written_last_->second};
  return std::optional<CompactionSource>(std::move(source));
}

Result<void> ShapeFiles::read_compaction_source(
    const CompactionSource& source,
    const std::function<void(const std::string_view message)>& snapshot_message,
    const std::function<void(const StoredOperation& operation)>& operation,
    const std::function<bool()>& stopped) {
  auto cancelled = [&] {
    return Error{"cancelled", "stopped while reading " + source.dir.string(), ""};
  };
  if (stopped && stopped()) return cancelled();
  auto snapshot =
      RecordFile::read_all(source.dir / source.snapshot_file, [&](const Record& record) {
        if (record.kind == kSnapshotMessage || record.kind == kSnapshotChunk) {
          snapshot_message(record.payload);
        }
      });
  if (!snapshot) return snapshot.error();
  if (auto whole = expect_whole(source.dir / source.snapshot_file, snapshot.value()); !whole) {
    return whole;
  }
  for (const auto& name : source.changes_files) {
    if (stopped && stopped()) return cancelled();
    std::vector<StoredOperation> operations;
    auto read = read_changes(source.dir / name, operations);
    if (!read) return read.error();
    if (auto whole = expect_whole(source.dir / name, read.value()); !whole) return whole;
    for (const auto& each : operations) operation(each);
  }
  return {};
}

Result<void> ShapeFiles::finish_compaction(const CompactionSource& source,
                                           const std::string& snapshot_file,
                                           const nlohmann::json& meta) {
  if (auto written = write_meta(meta); !written) return written;
  std::error_code ec;
  if (source.snapshot_file != snapshot_file) fs::remove(dir_ / source.snapshot_file, ec);
  for (const auto& name : source.changes_files) {
    fs::remove(dir_ / name, ec);
    older_changes_.erase(std::remove(older_changes_.begin(), older_changes_.end(), name),
                         older_changes_.end());
  }
  snapshot_file_ = snapshot_file;
  return {};
}

Result<void> ShapeFiles::write_meta(const nlohmann::json& meta) {
  return write_file_atomically(dir_ / "meta.json", meta.dump());
}

namespace {

Result<void> write_messages(const fs::path& path, const std::vector<std::string>& messages) {
  auto file = RecordFile::open_for_append(path, 0);
  if (!file) return file.error();
  for (const auto& message : messages) file->add(Record{kSnapshotMessage, 0, 0, message});
  return file->sync();
}

}  // namespace

Result<void> ShapeFiles::write_snapshot(const std::vector<std::string>& messages) {
  return write_messages(dir_ / snapshot_file_, messages);
}

Result<std::vector<StoredChunk>> ShapeFiles::write_chunk_file(
    const fs::path& path, const std::vector<std::string_view>& chunks,
    const std::function<bool()>& stopped) {
  auto file = RecordFile::open_for_append(path, 0);
  if (!file) return file.error();
  std::vector<StoredChunk> stored;
  std::uint64_t at = 0;
  for (auto chunk : chunks) {
    if (stopped && stopped()) {
      return Error{"cancelled", "stopped while writing " + path.string(), ""};
    }
    file->add(Record{kSnapshotChunk, 0, 0, chunk});
    if (auto written = file->write(); !written)
      return written.error();  // one chunk buffered at most
    stored.push_back({nullptr, at + kRecordHeaderBytes, chunk.size()});
    at += kRecordHeaderBytes + chunk.size();
  }
  if (auto synced = file->sync(); !synced) return synced.error();
  // The new file's name is durable before any meta.json can name it.
  if (auto synced = sync_directory(path.parent_path()); !synced) return synced.error();
  auto reader = ReadOnlyFile::open(path);
  if (!reader) return reader.error();
  for (auto& chunk : stored) chunk.file = reader.value();
  return stored;
}

Result<std::vector<StoredChunk>> ShapeFiles::write_snapshot_chunks(
    const std::vector<std::string_view>& chunks) {
  return write_chunk_file(dir_ / snapshot_file_, chunks);
}

Result<void> ShapeFiles::write_snapshot_file(const fs::path& path,
                                             const std::vector<std::string>& messages) {
  return write_messages(path, messages);
}

void ShapeFiles::append_transaction(const std::vector<StoredOperation>& operations) {
  for (std::size_t i = 0; i < operations.size(); ++i) {
    const auto& operation = operations[i];
    bool last = i + 1 == operations.size();
    changes_.add(
        Record{last ? kLastOfTransaction : kOperation, operation.tx, operation.op, operation.json});
  }
  if (!operations.empty()) queued_last_ = {operations.back().tx, operations.back().op};
}

Result<void> ShapeFiles::sync() {
  if (auto written = write(); !written) return written;
  if (directory_unsynced_ && changes_.needs_sync()) {
    if (auto synced = sync_directory(dir_); !synced) return synced;
    directory_unsynced_ = false;
  }
  return changes_.sync();
}

ShapeFiles::PendingSync ShapeFiles::pending_sync() const {
  if (!changes_.needs_sync()) return PendingSync{};
  return PendingSync{changes_.descriptor(), directory_unsynced_ ? dir_ : fs::path{}};
}

void ShapeFiles::mark_synced(const PendingSync& done) {
  if (done.descriptor < 0) return;
  changes_.mark_synced();
  if (!done.directory.empty()) directory_unsynced_ = false;
}

Result<void> ShapeFiles::sync_written(const PendingSync& pending) {
  if (pending.descriptor < 0) return {};
  if (!pending.directory.empty()) {
    if (auto synced = sync_directory(pending.directory); !synced) return synced;
  }
  if (::fdatasync(pending.descriptor) != 0) {
    return Error{"storage_io", std::string("syncing a shape log: ") + std::strerror(errno),
                 "check the data directory's disk"};
  }
  return {};
}

Result<void> ShapeFiles::remove() {
  std::error_code ec;
  fs::remove_all(dir_, ec);
  if (ec) return Error{"storage_io", "cannot remove " + dir_.string() + ": " + ec.message(), ""};
  return {};
}

}  // namespace shapeproxy::storage

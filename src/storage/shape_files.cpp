#include "storage/shape_files.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <limits>

#include "common/error_codes.h"
#include "storage/chunk_coding.h"
#include "storage/record_reader.h"
#include "storage/storage_error.h"

namespace shapeproxy::storage {
namespace fs = std::filesystem;

namespace {

using record_kind::kLastOfTransaction;
using record_kind::kOperation;
using record_kind::kSnapshotChunk;
using record_kind::kSnapshotChunkGzip;
using record_kind::kSnapshotMessage;

Result<nlohmann::json> read_meta(const fs::path& dir) {
  std::ifstream in(dir / "meta.json");
  if (!in) return Error{"storage_io", "cannot read " + (dir / "meta.json").string(), ""};
  auto meta = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (meta.is_discarded()) {
    return Error{"storage_corrupt", "meta.json is not valid JSON in " + dir.string(), ""};
  }
  return meta;
}

// A file name meta.json may name: inside the shape's directory, nothing else,
// and no longer than a name may be (a longer one made every file system call
// on it throw ENAMETOOLONG).
bool plain_file_name(const std::string& name) {
  return !name.empty() && name.size() <= NAME_MAX && name != "." && name != ".." &&
         name.find('/') == std::string::npos && name.find('\0') == std::string::npos;
}

constexpr std::uint64_t kWholeFile = std::numeric_limits<std::uint64_t>::max();

bool is_chunk(std::uint8_t kind) { return kind == kSnapshotChunk || kind == kSnapshotChunkGzip; }

// A snapshot record's body: the payload, or the body its gzip member decodes
// to (into `decoded`, which must outlive the returned view).
Result<std::string_view> chunk_body(const Record& record, std::string& decoded) {
  if (record.kind != kSnapshotChunkGzip) return record.payload;
  auto body = gunzip_chunk(record.payload, record.tx);
  if (!body) return body.error();
  decoded = std::move(body).value();
  return std::string_view(decoded);
}

// Reads [0, end) of one log file (all of it: kWholeFile); stops early when
// `visit` returns false.
Result<void> read_records(const fs::path& path, std::uint64_t end,
                          const std::function<bool(const Record&)>& visit) {
  auto file = ReadOnlyFile::open(path);
  if (!file) return file.error();
  if (end == kWholeFile) {
    auto size = file_size(*file.value());
    if (!size) return size.error();
    end = size.value();
  }
  RecordReader reader(file.value(), 0, end);
  while (true) {
    auto record = reader.next();
    if (!record) return record.error();
    if (!record.value()) break;
    if (!visit(*record.value())) return {};
  }
  if (reader.damaged()) {
    return Error{"storage_corrupt",
                 path.string() + " has a damaged record at byte " +
                     std::to_string(reader.position()) + " of " + std::to_string(end),
                 "the shape is dropped and rebuilt from the database"};
  }
  return {};
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
  auto files = std::unique_ptr<ShapeFiles>(new ShapeFiles(dir, std::move(changes).value()));
  files->indexes_.push_back(FileIndex{});
  return files;
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
    std::error_code unknown;
    if (!fs::exists(path, unknown) && !unknown) return {};
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

namespace {

// The snapshot file's chunk positions from its record headers (payloads are
// not read, checksums not checked: see verify_snapshot()); an older file of
// one message per record is read whole. The headers must tile the file
// exactly: anything else (a length pointing past the end) is corruption.
Result<void> load_snapshot(const fs::path& path, StoredShape& stored) {
  auto opened = ReadOnlyFile::open(path);
  if (!opened) return opened.error();
  auto file = std::move(opened).value();
  auto size = file_size(*file);
  if (!size) return size.error();
  auto corrupt = [&](std::uint64_t at, const std::string& why) {
    return Error{"storage_corrupt",
                 path.string() + " has a damaged record at byte " + std::to_string(at) + " of " +
                     std::to_string(size.value()) + ": " + why,
                 "the shape is dropped and rebuilt from the database"};
  };
  std::uint64_t at = 0;
  while (at < size.value()) {
    if (at + kRecordHeaderBytes > size.value()) return corrupt(at, "a cut header");
    auto header = file->read(at, kRecordHeaderBytes);
    if (!header) return header.error();
    const auto kind = static_cast<std::uint8_t>(header.value()[8]);
    std::uint64_t length = 0;
    for (int i = 0; i < 4; ++i) {
      length |= static_cast<std::uint64_t>(static_cast<unsigned char>(header.value()[i]))
                << (8 * i);
    }
    if (at + kRecordHeaderBytes + length > size.value()) return corrupt(at, "a cut record");
    if (kind == kSnapshotMessage) {
      // The older format: small files of one message per record, read whole.
      stored.snapshot_chunks.clear();
      std::vector<std::string> messages;
      auto read = RecordFile::read_all(path, [&](const Record& record) {
        if (record.kind == kSnapshotMessage) messages.emplace_back(record.payload);
      });
      if (!read) return read.error();
      if (read.value() != size.value()) return corrupt(read.value(), "a bad checksum");
      stored.snapshot = std::move(messages);
      return {};
    }
    if (!is_chunk(kind)) return corrupt(at, "not a snapshot record");
    StoredChunk chunk{file, at + kRecordHeaderBytes, length};
    if (kind == kSnapshotChunkGzip) {
      chunk.coding = ChunkCoding::kGzip;
      for (int i = 0; i < 8; ++i) {
        chunk.decoded_length |=
            static_cast<std::uint64_t>(static_cast<unsigned char>(header.value()[9 + i]))
            << (8 * i);
      }
      if (!plausible_gzip_length(length, chunk.decoded_length)) {
        return corrupt(at, "an impossible decoded length");
      }
    }
    stored.snapshot_chunks.push_back(std::move(chunk));
    at += kRecordHeaderBytes + length;
  }
  return {};
}

// meta.json of `dir` (an object) and the snapshot file it names (a plain
// file name in the directory; "snapshot.log" when unnamed).
Result<std::pair<nlohmann::json, std::string>> read_meta_and_snapshot_file(const fs::path& dir) {
  auto meta = read_meta(dir);
  if (!meta) return meta.error();
  if (!meta->is_object()) {
    return Error{"storage_corrupt", (dir / "meta.json").string() + " is not a JSON object", ""};
  }
  auto named = meta->find("snapshot_file");
  std::string snapshot_file = named == meta->end() ? "snapshot.log"
                              : named->is_string() ? named->get<std::string>()
                                                   : std::string();
  if (!plain_file_name(snapshot_file)) {
    return Error{"storage_corrupt",
                 (dir / "meta.json").string() +
                     ": snapshot_file is not a file name in the shape's directory",
                 ""};
  }
  return std::make_pair(std::move(meta).value(), std::move(snapshot_file));
}

}  // namespace

Result<std::pair<std::unique_ptr<ShapeFiles>, StoredShape>> ShapeFiles::open(const fs::path& dir) {
  StoredShape stored;
  auto named = read_meta_and_snapshot_file(dir);
  if (!named) return named.error();
  stored.meta = std::move(named->first);
  const std::string snapshot_file = std::move(named->second);
  // A shape whose snapshot completed (meta.json names it) must have the file.
  // (An error reads as absent: a shape whose meta.json names no snapshot is
  // dropped at load anyway, and one that names it is loaded, errors and all.)
  std::error_code absent;
  if (stored.meta.contains("snapshot") || fs::exists(dir / snapshot_file, absent)) {
    if (auto loaded = load_snapshot(dir / snapshot_file, stored); !loaded) return loaded.error();
  }
  // Every changes file, in order; leftovers of an unfinished compaction
  // (a snapshot file meta.json does not name, temporary files, sidecars of
  // removed changes files) go.
  std::vector<std::uint64_t> numbers;
  std::vector<fs::path> sidecars;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    if (auto number = changes_file_number(name)) {
      numbers.push_back(*number);
    } else if (name.ends_with(".log.idx")) {
      sidecars.push_back(entry.path());
    } else if ((name.starts_with("snapshot") && name != snapshot_file) || name.ends_with(".tmp")) {
      fs::remove(entry.path(), ec);
    }
  }
  for (const auto& sidecar : sidecars) {
    auto changes = sidecar;
    changes.replace_extension();
    // Kept when its changes file cannot even be stated: that file's load
    // reports the error.
    std::error_code unknown;
    if (!changes_file_number(changes.filename().string()) ||
        (!fs::exists(changes, unknown) && !unknown)) {
      fs::remove(sidecar, ec);
    }
  }
  std::sort(numbers.begin(), numbers.end());
  if (numbers.empty()) numbers.push_back(0);
  std::vector<FileIndex> indexes;
  std::vector<LoadedChanges> loaded;
  for (auto number : numbers) {
    auto changes = load_changes(dir / changes_name(number));
    if (!changes) return changes.error();
    stored.changes_bytes_scanned += changes->scanned_bytes;
    if (changes->last) stored.last_operation = changes->last;
    indexes.push_back(FileIndex{number, changes->marks, changes->marks_in_sidecar,
                                changes->good_length, nullptr});
  }
  auto changes =
      RecordFile::open_for_append(dir / changes_name(numbers.back()), indexes.back().size);
  if (!changes) return changes.error();
  auto files = std::unique_ptr<ShapeFiles>(new ShapeFiles(dir, std::move(changes).value()));
  files->snapshot_file_ = snapshot_file;
  files->changes_number_ = numbers.back();
  for (std::size_t i = 0; i + 1 < numbers.size(); ++i) {
    files->older_changes_.push_back(changes_name(numbers[i]));
  }
  files->indexes_ = std::move(indexes);
  if (!files->indexes_.back().marks.empty()) {
    files->placer_ = MarkPlacer(files->indexes_.back().marks.back().position);
  }
  // Marks the scan placed name records read from the files, which a crash
  // of the process (not of the machine) may have left unsynced: sync them
  // before the sidecar names them.
  for (std::size_t i = 0; i < files->indexes_.size(); ++i) {
    auto& index = files->indexes_[i];
    if (index.marks.size() == index.in_sidecar) continue;
    if (i + 1 == files->indexes_.size()) {
      if (::fdatasync(files->changes_.descriptor()) != 0) continue;
      files->flush_sidecar(index.size);
    } else {
      std::vector<ChangesMark> added(index.marks.begin() + static_cast<long>(index.in_sidecar),
                                     index.marks.end());
      if (write_sidecar(sidecar_path(dir / changes_name(index.number)), index.in_sidecar, added)) {
        index.in_sidecar = index.marks.size();
      }
    }
  }
  if (stored.last_operation) {
    files->written_last_ = stored.last_operation;
    files->queued_last_ = files->written_last_;
  }
  return std::make_pair(std::move(files), std::move(stored));
}

Result<std::pair<std::unique_ptr<ShapeFiles>, StoredShape>> ShapeFiles::open_read_only(
    const fs::path& dir) {
  StoredShape stored;
  auto named = read_meta_and_snapshot_file(dir);
  if (!named) return named.error();
  stored.meta = std::move(named->first);
  const std::string snapshot_file = std::move(named->second);
  // Only a snapshot meta.json names as complete is read (a file it does
  // not name may be half written by its owner).
  if (stored.meta.contains("snapshot")) {
    if (auto loaded = load_snapshot(dir / snapshot_file, stored); !loaded) return loaded.error();
  }
  std::vector<std::uint64_t> numbers;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (auto number = changes_file_number(entry.path().filename().string())) {
      numbers.push_back(*number);
    }
  }
  if (ec) return Error{"storage_io", "cannot list " + dir.string() + ": " + ec.message(), ""};
  std::sort(numbers.begin(), numbers.end());
  if (numbers.empty()) numbers.push_back(0);
  std::vector<FileIndex> indexes;
  for (auto number : numbers) {
    const auto path = dir / changes_name(number);
    auto changes = load_changes(path);
    if (!changes) return changes.error();
    if (changes->last) stored.last_operation = changes->last;
    FileIndex index{number, changes->marks, changes->marks_in_sidecar, changes->good_length,
                    nullptr};
    if (index.size > 0) {
      auto reader = ReadOnlyFile::open(path);
      if (!reader) {
        std::error_code unknown;
        if (!fs::exists(path, unknown) && !unknown)
          return Error{std::string(error_codes::kStorageChanged), path.string() + " went away", ""};
        return reader.error();
      }
      index.reader = std::move(reader).value();
    }
    indexes.push_back(std::move(index));
  }
  // Every file is open: if meta.json still says the same, none of them was
  // folded and removed before we opened it (the owner switches meta.json
  // first, then removes), so they are one consistent set.
  auto again = read_meta(dir);
  if (!again || again.value() != stored.meta) {
    return Error{std::string(error_codes::kStorageChanged),
                 dir.string() + " changed while it was opened", ""};
  }
  auto files = std::unique_ptr<ShapeFiles>(new ShapeFiles(dir, RecordFile{}));
  files->read_only_ = true;
  files->snapshot_file_ = snapshot_file;
  files->changes_number_ = numbers.back();
  for (std::size_t i = 0; i + 1 < numbers.size(); ++i) {
    files->older_changes_.push_back(changes_name(numbers[i]));
  }
  files->indexes_ = std::move(indexes);
  files->written_last_ = stored.last_operation;
  files->queued_last_ = stored.last_operation;
  return std::make_pair(std::move(files), std::move(stored));
}

Result<void> ShapeFiles::verify_snapshot(const fs::path& path) {
  std::optional<Error> undecodable;
  std::string decoded;
  auto read = read_records(path, kWholeFile, [&](const Record& record) {
    if (record.kind != kSnapshotChunkGzip) return true;
    auto body = chunk_body(record, decoded);
    if (!body) undecodable = body.error();
    return static_cast<bool>(body);
  });
  if (!read) return read;
  if (undecodable) {
    undecodable->message = path.string() + ": " + undecodable->message;
    return *undecodable;
  }
  return {};
}

void ShapeFiles::flush_sidecar(std::uint64_t synced_bytes) {
  auto& index = indexes_.back();
  std::vector<ChangesMark> added;
  for (std::size_t i = index.in_sidecar; i < index.marks.size(); ++i) {
    if (index.marks[i].position >= synced_bytes) break;
    added.push_back(index.marks[i]);
  }
  if (added.empty()) return;
  if (write_sidecar(sidecar_path(dir_ / changes_file_name()), index.in_sidecar, added)) {
    index.in_sidecar += added.size();
  }
}

Result<ShapeFiles::OperationRanges> ShapeFiles::ranges_after(std::uint64_t tx, std::uint64_t op) {
  const auto after = std::make_pair(tx, op);
  // The last mark at or before (tx, op), among written records.
  std::size_t first_file = 0;
  std::uint64_t begin = 0;
  for (std::size_t f = 0; f < indexes_.size(); ++f) {
    for (const auto& mark : indexes_[f].marks) {
      if (mark.position >= indexes_[f].size || std::make_pair(mark.tx, mark.op) > after) break;
      first_file = f;
      begin = mark.position;
    }
  }
  OperationRanges out;
  for (std::size_t f = first_file; f < indexes_.size(); ++f) {
    auto& index = indexes_[f];
    const bool current = f + 1 == indexes_.size();
    const std::uint64_t end = current && !read_only_ ? changes_.size() : index.size;
    const std::uint64_t from = f == first_file ? begin : 0;
    if (from >= end) continue;
    if (!index.reader) {
      auto reader = ReadOnlyFile::open(dir_ / changes_name(index.number));
      if (!reader) return reader.error();
      index.reader = std::move(reader).value();
    }
    out.ranges.push_back({index.reader, from, end});
  }
  return out;
}

Result<void> ShapeFiles::read_operations(const OperationRanges& ranges, std::uint64_t tx,
                                         std::uint64_t op,
                                         const std::function<bool(const Record&)>& visit) {
  const auto after = std::make_pair(tx, op);
  for (const auto& range : ranges.ranges) {
    RecordReader reader(range.file, range.begin, range.end, 256 * 1024);
    while (true) {
      auto record = reader.next();
      if (!record) return record.error();
      if (!record.value()) break;
      const Record& each = *record.value();
      if (std::make_pair(each.tx, each.op) <= after) continue;
      if (!visit(each)) return {};
    }
    if (reader.damaged()) {
      return Error{"storage_corrupt",
                   "a shape's changes file has a damaged record at byte " +
                       std::to_string(reader.position()),
                   "the shape is dropped and rebuilt from the database"};
    }
  }
  return {};
}

std::string ShapeFiles::changes_file_name() const { return changes_name(changes_number_); }

Result<void> ShapeFiles::write() {
  if (read_only_) return Error{"internal", "a read-only shape view was written to", ""};
  if (auto written = changes_.write(); !written) return written;
  written_last_ = queued_last_;
  indexes_.back().size = changes_.size();
  return {};
}

Result<std::optional<ShapeFiles::CompactionSource>> ShapeFiles::begin_compaction() {
  if (read_only_) return std::optional<CompactionSource>{};
  if (changes_.needs_sync() || !written_last_ || written_last_ == compacted_last_) {
    return std::optional<CompactionSource>{};
  }
  auto next = RecordFile::open_for_append(dir_ / changes_name(changes_number_ + 1), 0);
  if (!next) return next.error();
  // The new file's name must be durable before data synced in it is
  // acknowledged: the next pending_sync() includes the directory (off the
  // strand, on the sync thread).
  directory_unsynced_ = true;
  // Marks of the queued records move with them, to the new file's start.
  const std::uint64_t moved_from = changes_.size();
  FileIndex fresh{changes_number_ + 1, {}, 0, 0, nullptr};
  auto& old_marks = indexes_.back().marks;
  while (!old_marks.empty() && old_marks.back().position >= moved_from) {
    auto mark = old_marks.back();
    old_marks.pop_back();
    mark.position -= moved_from;
    mark.tx_begin -= std::min(mark.tx_begin, moved_from);
    fresh.marks.insert(fresh.marks.begin(), mark);
  }
  flush_sidecar(moved_from);  // everything written there is synced (checked above)
  placer_ = fresh.marks.empty() ? MarkPlacer() : MarkPlacer(fresh.marks.back().position);
  indexes_.push_back(std::move(fresh));
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
  std::optional<Error> undecodable;
  std::string decoded;
  auto snapshot =
      RecordFile::read_all(source.dir / source.snapshot_file, [&](const Record& record) {
        if (undecodable || (record.kind != kSnapshotMessage && !is_chunk(record.kind))) return;
        auto body = chunk_body(record, decoded);
        if (!body) {
          undecodable = body.error();
          return;
        }
        snapshot_message(body.value());
      });
  if (!snapshot) return snapshot.error();
  if (undecodable) return *undecodable;
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
    fs::remove(sidecar_path(dir_ / name), ec);
    indexes_.erase(
        std::remove_if(indexes_.begin(), indexes_.end() - 1,
                       [&](const FileIndex& index) { return changes_name(index.number) == name; }),
        indexes_.end() - 1);
    older_changes_.erase(std::remove(older_changes_.begin(), older_changes_.end(), name),
                         older_changes_.end());
  }
  snapshot_file_ = snapshot_file;
  return {};
}

ShapeFiles::LogFiles ShapeFiles::log_files() const {
  LogFiles files{dir_, snapshot_file_, older_changes_, changes_.size()};
  files.changes_files.push_back(changes_file_name());
  return files;
}

Result<void> ShapeFiles::read_log(const LogFiles& files,
                                  const std::function<void(const LoggedRecord&)>& visit,
                                  const std::function<bool()>& stopped) {
  bool stop = false;
  std::optional<Error> undecodable;
  std::string decoded;
  auto each = [&](const Record& record) {
    if (stopped && stopped()) {
      stop = true;
      return false;
    }
    LoggedRecord logged;
    logged.snapshot = record.kind == kSnapshotMessage || is_chunk(record.kind);
    logged.chunk = is_chunk(record.kind);
    logged.tx = logged.chunk ? 0 : record.tx;
    logged.op = record.op;
    logged.payload = record.payload;
    if (record.kind == kSnapshotChunkGzip) {
      auto body = chunk_body(record, decoded);
      if (!body) {
        undecodable = body.error();
        return false;
      }
      logged.payload = body.value();
    }
    if (logged.snapshot || record.kind == kOperation || record.kind == kLastOfTransaction) {
      visit(logged);
    }
    return true;
  };
  if (auto read = read_records(files.dir / files.snapshot_file, kWholeFile, each); !read) {
    return read;
  }
  if (undecodable) return *undecodable;
  for (std::size_t i = 0; i < files.changes_files.size() && !stop; ++i) {
    const bool last = i + 1 == files.changes_files.size();
    const std::uint64_t end = last ? files.written_bytes : kWholeFile;
    if (auto read = read_records(files.dir / files.changes_files[i], end, each); !read) {
      return read;
    }
  }
  return {};
}

Result<void> ShapeFiles::write_meta(const nlohmann::json& meta) {
  if (read_only_) return Error{"internal", "a read-only shape view was written to", ""};
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
  std::size_t next = 0;
  return write_chunk_file(
      path,
      [&](std::string& out) -> Result<bool> {
        if (next == chunks.size()) return false;
        out.assign(chunks[next++]);
        return true;
      },
      stopped);
}

Result<std::vector<StoredChunk>> ShapeFiles::write_chunk_file(
    const fs::path& path, const ChunkSource& next_chunk, const std::function<bool()>& stopped) {
  auto file = RecordFile::open_for_append(path, 0);
  if (!file) return file.error();
  std::vector<StoredChunk> stored;
  std::uint64_t at = 0;
  std::string chunk;
  std::string member;
  while (true) {
    if (stopped && stopped()) {
      return Error{"cancelled", "stopped while writing " + path.string(), ""};
    }
    auto more = next_chunk(chunk);
    if (!more) return more.error();
    if (!more.value()) break;
    gzip_chunk(chunk, member);
    file->add(Record{kSnapshotChunkGzip, chunk.size(), 0, member});
    if (auto written = file->write(); !written)
      return written.error();  // one chunk buffered at most
    stored.push_back(
        {nullptr, at + kRecordHeaderBytes, member.size(), ChunkCoding::kGzip, chunk.size()});
    at += kRecordHeaderBytes + member.size();
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
  std::uint64_t at = changes_.size() + changes_.pending_bytes();
  const std::uint64_t tx_begin = at;
  auto& marks = indexes_.back().marks;
  for (std::size_t i = 0; i < operations.size(); ++i) {
    const auto& operation = operations[i];
    bool last = i + 1 == operations.size();
    if (placer_.place(at)) marks.push_back({operation.tx, operation.op, at, tx_begin});
    at += kRecordHeaderBytes + operation.json.size();
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
  if (auto synced = changes_.sync(); !synced) return synced;
  flush_sidecar(changes_.size());
  return {};
}

ShapeFiles::PendingSync ShapeFiles::pending_sync() const {
  if (!changes_.needs_sync()) return PendingSync{};
  return PendingSync{changes_.descriptor(), changes_.size(),
                     directory_unsynced_ ? dir_ : fs::path{}};
}

void ShapeFiles::mark_synced(const PendingSync& done) {
  if (done.descriptor < 0) return;
  changes_.mark_synced();
  if (!done.directory.empty()) directory_unsynced_ = false;
  flush_sidecar(done.written_bytes);
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

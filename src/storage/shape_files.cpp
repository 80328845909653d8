#include "storage/shape_files.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

namespace shapeproxy::storage {
namespace fs = std::filesystem;

namespace {

constexpr std::uint8_t kOperation = 1;
constexpr std::uint8_t kLastOfTransaction = 2;
constexpr std::uint8_t kSnapshotMessage = 3;

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

Result<std::pair<std::unique_ptr<ShapeFiles>, StoredShape>> ShapeFiles::open(const fs::path& dir) {
  StoredShape stored;
  auto meta = read_meta(dir);
  if (!meta) return meta.error();
  stored.meta = std::move(meta).value();
  const std::string snapshot_file = stored.meta.value("snapshot_file", "snapshot.log");
  auto snapshot = RecordFile::read_all(dir / snapshot_file, [&](const Record& record) {
    if (record.kind == kSnapshotMessage) stored.snapshot.emplace_back(record.payload);
  });
  if (!snapshot) return snapshot.error();
  // Keep whole transactions only: what follows the last flagged record is a
  // transaction whose write was torn by a crash.
  std::uint64_t whole_length = 0;
  std::size_t whole_count = 0;
  std::uint64_t offset = 0;
  auto read = RecordFile::read_all(dir / "changes.log", [&](const Record& record) {
    offset += 4 + 4 + 1 + 8 + 8 + record.payload.size();
    stored.operations.push_back({record.tx, record.op, std::string(record.payload)});
    if (record.kind == kLastOfTransaction) {
      whole_length = offset;
      whole_count = stored.operations.size();
    }
  });
  if (!read) return read.error();
  stored.operations.resize(whole_count);
  auto changes = RecordFile::open_for_append(dir / "changes.log", whole_length);
  if (!changes) return changes.error();
  auto files = std::unique_ptr<ShapeFiles>(new ShapeFiles(dir, std::move(changes).value()));
  files->snapshot_file_ = snapshot_file;
  return std::make_pair(std::move(files), std::move(stored));
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

Result<void> ShapeFiles::compact(const std::vector<std::string>& messages,
                                 const nlohmann::json& meta) {
  std::string next = meta.value("snapshot_file", "");
  if (next.empty() || next == snapshot_file_) {
    return Error{"storage_usage", "compaction needs a new snapshot_file name in meta", ""};
  }
  if (auto written = write_messages(dir_ / next, messages); !written) return written;
  if (auto written = write_meta(meta); !written) return written;
  auto emptied = RecordFile::open_for_append(dir_ / "changes.log", 0);
  if (!emptied) return emptied.error();
  changes_ = std::move(emptied).value();
  std::error_code ec;
  fs::remove(dir_ / snapshot_file_, ec);
  snapshot_file_ = std::move(next);
  return {};
}

void ShapeFiles::append_transaction(const std::vector<StoredOperation>& operations) {
  for (std::size_t i = 0; i < operations.size(); ++i) {
    const auto& operation = operations[i];
    bool last = i + 1 == operations.size();
    changes_.add(
        Record{last ? kLastOfTransaction : kOperation, operation.tx, operation.op, operation.json});
  }
}

Result<void> ShapeFiles::sync() { return changes_.sync(); }

Result<void> ShapeFiles::sync_written(PendingSync pending) {
  if (pending.descriptor < 0) return {};
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

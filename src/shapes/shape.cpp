#include "shapes/shape.h"

#include <nlohmann/json.hpp>

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "shapes/json_text.h"
#include "shapes/row_diff.h"

namespace shapeproxy::shapes {
using replication::Change;
using replication::ColumnValue;

namespace {

void append_row_values(std::string& out, const TableSchema& table, const Row& row,
                       const std::vector<std::size_t>& columns) {
  out += '{';
  bool first = true;
  for (std::size_t index : columns) {
    if (!first) out += ',';
    first = false;
    append_json_string(out, table.columns[index].name);
    out += ':';
    if (index < row.size() && row[index]) {
      append_json_string(out, *row[index]);
    } else {
      out += "null";
    }
  }
  out += '}';
}

void append_snapshot_message(std::string& out, const TableSchema& table,
                             const std::vector<std::size_t>& selected,
                             const std::string& relation_json, std::string_view key,
                             const Row& row) {
  out += "{\"key\":";
  append_json_string(out, key);
  out += ",\"value\":";
  append_row_values(out, table, row, selected);
  out += ",\"headers\":{\"operation\":\"insert\",\"relation\":";
  out += relation_json;
  out += "}}";
}

std::string render_snapshot_message(const TableSchema& table,
                                    const std::vector<std::size_t>& selected,
                                    const std::string& relation_json, const std::string& key,
                                    const Row& row) {
  std::string out;
  append_snapshot_message(out, table, selected, relation_json, key, row);
  return out;
}

// Builds snapshot response bodies message by message: the same bytes as
// ShapeLog::chunk() of the messages (a JSON array per body of at most
// chunk_bytes; a single larger message gets its own; never empty).
class SnapshotChunkWriter {
 public:
  SnapshotChunkWriter(std::size_t chunk_bytes, std::size_t expected_messages)
      : chunk_bytes_(chunk_bytes), expected_(expected_messages) {}

  void add(std::string_view message) {
    if (body_.size() > 1 && body_.size() + message.size() + 2 > chunk_bytes_) close_body();
    if (body_.size() == 1 && body_.capacity() < 2 * message.size()) {
      // Sized from the first message of the body: one allocation for the
      // whole body instead of doubling (and copying) its way up.
      const double estimate = static_cast<double>(expected_ - seen_) * (message.size() + 1) * 1.1;
      body_.reserve(static_cast<std::size_t>(
          std::min(estimate + 64, static_cast<double>(chunk_bytes_) + message.size() + 2)));
    }
    if (body_.size() > 1) body_ += ',';
    body_ += message;
    ++seen_;
  }

  ShapeLog::Chunks finish() {
    close_body();
    return std::move(chunks_);
  }

 private:
  void close_body() {
    body_ += ']';
    chunks_.push_back({std::make_shared<const std::string>(std::move(body_)), {}});
    body_ = "[";
  }

  std::size_t chunk_bytes_;
  std::size_t expected_;
  std::size_t seen_ = 0;
  std::string body_ = "[";
  ShapeLog::Chunks chunks_;
};

// Rebuilds row state from a logged message. Only served columns are known;
// the rest stay NULL (they matter only for unchanged TOAST values). Returns
// false, changing nothing, for a message that is not one (wrong JSON types
// must not throw: this runs on the compaction worker too).
bool replay_parsed(std::unordered_map<std::string, Row>& rows, const TableSchema& table,
                   const nlohmann::json& parsed) {
  if (!parsed.is_object()) return false;
  auto key = parsed.find("key");
  if (key == parsed.end() || !key->is_string()) return false;
  std::string operation = "insert";
  if (auto headers = parsed.find("headers"); headers != parsed.end() && headers->is_object()) {
    auto found = headers->find("operation");
    if (found != headers->end()) {
      if (!found->is_string()) return false;
      operation = found->get<std::string>();
    }
  }
  if (operation == "delete") {
    rows.erase(key->get<std::string>());
    return true;
  }
  auto value = parsed.find("value");
  if (value == parsed.end() || !value->is_object()) return false;
  for (const auto& [name, column] : value->items()) {
    if (!column.is_null() && !column.is_string()) return false;
  }
  Row& row = rows[key->get<std::string>()];
  if (row.size() != table.columns.size()) row.assign(table.columns.size(), std::nullopt);
  for (const auto& [name, column] : value->items()) {
    auto index = table.column_index(name);
    if (!index) continue;
    row[*index] =
        column.is_null() ? std::nullopt : std::optional<std::string>(column.get<std::string>());
  }
  return true;
}

// One message, or a stored snapshot chunk (a JSON array of messages).
// Returns false when something in it is not a message (see replay_parsed).
bool replay_message(std::unordered_map<std::string, Row>& rows, const TableSchema& table,
                    std::string_view message) {
  auto parsed = nlohmann::json::parse(message, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_array()) {
    bool all = true;
    for (const auto& each : parsed) all = replay_parsed(rows, table, each) && all;
    return all;
  }
  return replay_parsed(rows, table, parsed);
}

}  // namespace

void release_free_memory() {
#ifdef __GLIBC__
  ::malloc_trim(0);
#endif
}

namespace {

// Writes chunks built in memory to `path` and returns them as stored there.
Result<ShapeLog::Chunks> store_chunks(const std::filesystem::path& path,
                                      const ShapeLog::Chunks& chunks,
                                      const std::function<bool()>& stopped = {}) {
  std::vector<std::string_view> bodies;
  bodies.reserve(chunks.size());
  for (const auto& chunk : chunks) bodies.emplace_back(*chunk.body);
  auto stored = storage::ShapeFiles::write_chunk_file(path, bodies, stopped);
  if (!stored) return stored.error();
  return ShapeLog::on_disk(stored.value());
}

}  // namespace

struct Shape::Operation {
  enum class Kind { kInsert, kUpdate, kDelete };
  Kind kind;
  std::string key;
  Row row;                           // insert/update: the new row; delete: the old row
  Row old_row;                       // update: the previous row
  std::vector<std::size_t> changed;  // update: served columns that changed
};

Shape::Shape(ShapeDefinition definition, std::string handle, std::size_t chunk_bytes)
    : definition_(std::move(definition)), handle_(std::move(handle)), log_(chunk_bytes) {
  schema_json_ = table().electric_schema_json(definition_.selected);
  relation_json_ = "[";
  append_json_string(relation_json_, table().schema);
  relation_json_ += ',';
  append_json_string(relation_json_, table().name);
  relation_json_ += ']';
  key_prefix_ = table_key(table().schema, table().name);
}

bool Shape::matches_relation(const replication::Relation& relation) const {
  if (relation.schema != table().schema || relation.name != table().name) return false;
  if (relation.columns.size() != table().columns.size()) return false;
  for (std::size_t i = 0; i < relation.columns.size(); ++i) {
    if (relation.columns[i].name != table().columns[i].name ||
        relation.columns[i].type_oid != table().columns[i].type_oid) {
      return false;
    }
  }
  return true;
}

ShapeMeta Shape::meta() const {
  // Until the snapshot is on disk, meta.json must not name it.
  std::optional<PgSnapshot> stored_snapshot = snapshot_stored_ ? snapshot_ : std::nullopt;
  return ShapeMeta{handle_,         definition_.request, table(),
                   stored_snapshot, snapshot_file_,      log_.compacted_at()};
}

Result<std::shared_ptr<ShapeCompaction>> Shape::begin_compaction() {
  if (!files_ || compacting_ || !snapshot_stored_ || phase_ != Phase::kReady)
    return std::shared_ptr<ShapeCompaction>{};
  auto source = files_->begin_compaction();
  if (!source) return source.error();
  if (!source.value()) return std::shared_ptr<ShapeCompaction>{};
  auto compaction = std::make_shared<ShapeCompaction>();
  compaction->source = std::move(*source.value());
  compaction->point = LogOffset::at(compaction->source.last_tx, compaction->source.last_op);
  compaction->previous_point = log_.compacted_at();
  compaction->snapshot_file = "snapshot-" + compaction->point.to_string() + ".log";
  compaction->table = definition_.table;
  compaction->selected = definition_.selected;
  compaction->relation_json = relation_json_;
  compaction->chunk_bytes = log_.chunk_bytes();
  compacting_ = true;
  return compaction;
}

namespace {

Error cancelled_compaction() {
  return Error{"cancelled", "stopped before the compaction was built (shutting down)", ""};
}

Result<void> build_compaction_from_files(ShapeCompaction& compaction) {
  auto stopped = [&compaction] {
    return compaction.stop && compaction.stop->load(std::memory_order_relaxed);
  };
  std::unordered_map<std::string, Row> rows;
  const TableSchema& table = *compaction.table;
  std::optional<std::string> malformed;
  auto fold = [&](std::string_view message) {
    if (malformed || stopped()) return;  // the rest is skipped: the result is thrown away
    if (compaction.step) compaction.step();
    if (!replay_message(rows, table, message)) {
      malformed = std::string(message.substr(0, 200));
    }
  };
  auto folded = storage::ShapeFiles::read_compaction_source(
      compaction.source, fold,
      [&](const storage::StoredOperation& operation) {
        // Left over from a compaction interrupted by a crash: already folded in.
        auto offset = LogOffset::at(operation.tx, operation.op);
        if (compaction.previous_point && offset <= *compaction.previous_point) return;
        fold(operation.json);
      },
      stopped);
  if (!folded) return folded.error();
  if (stopped()) return cancelled_compaction();
  if (malformed) {
    return Error{"storage_corrupt",
                 "a logged message is not a shape message: " + *malformed +
                     "; not compacting (the files are kept as they are)",
                 "the shape keeps serving its uncompacted log"};
  }
  std::vector<std::string> messages;
  messages.reserve(rows.size());
  for (const auto& [key, row] : rows) {
    if (messages.size() % 4096 == 0 && stopped()) return cancelled_compaction();
    messages.push_back(
        render_snapshot_message(table, compaction.selected, compaction.relation_json, key, row));
  }
  rows = {};
  compaction.rows = messages.size();
  auto chunks = ShapeLog::chunk(messages, compaction.chunk_bytes);
  messages = {};
  auto stored = store_chunks(compaction.source.dir / compaction.snapshot_file, chunks, stopped);
  if (!stored) return stored.error();
  compaction.chunks = std::move(stored).value();
  chunks = {};
  release_free_memory();
  return {};
}

}  // namespace

Result<void> Shape::build_compaction(ShapeCompaction& compaction) {
  Result<void> built = Error{"internal", "compaction not built", ""};
  // Nothing thrown here may reach the worker thread (it would end the
  // process): any exception becomes an error, and the files stay.
  try {
    built = build_compaction_from_files(compaction);
  } catch (const std::exception& thrown) {
    built = Error{"internal", std::string("compaction failed: ") + thrown.what(), ""};
  } catch (...) {
    built = Error{"internal", "compaction failed: unknown exception", ""};
  }
  if (!built) {
    // Half written, or written but not to be used: meta.json does not name
    // it, so removing it is safe (the loader would remove it anyway).
    compaction.chunks = {};
    std::error_code ec;
    if (compaction.snapshot_file != compaction.source.snapshot_file) {
      std::filesystem::remove(compaction.source.dir / compaction.snapshot_file, ec);
    }
  }
  return built;
}

Result<void> Shape::finish_compaction(ShapeCompaction& compaction) {
  compacting_ = false;
  if (!files_) return Error{"storage_usage", "finishing a compaction without files", ""};
  std::string previous_file = snapshot_file_;
  snapshot_file_ = compaction.snapshot_file;
  ShapeMeta next = meta();
  next.compacted_at = compaction.point;
  auto finished =
      files_->finish_compaction(compaction.source, compaction.snapshot_file, to_json(next));
  if (!finished) {
    snapshot_file_ = previous_file;
    return finished.error();
  }
  log_.install_compaction(std::move(compaction.chunks), compaction.point);
  return {};
}

Result<bool> Shape::apply_snapshot(SnapshotRows snapshot, SnapshotStorage storage) {
  auto applied = install_snapshot(snapshot.rows, &snapshot.rows, snapshot.snapshot, storage);
  snapshot.rows = {};
  return applied;
}

Result<bool> Shape::apply_snapshot(const std::shared_ptr<const SnapshotRows>& snapshot,
                                   SnapshotStorage storage) {
  return install_snapshot(snapshot->rows, nullptr, snapshot->snapshot, storage);
}

// `owned`: the same vector as `snapshot_rows` when the rows may be moved from.
Result<bool> Shape::install_snapshot(const std::vector<Row>& snapshot_rows, std::vector<Row>* owned,
                                     const PgSnapshot& snapshot, SnapshotStorage storage) {
  // Each message is rendered into one reused buffer and appended straight to
  // its response body (the bytes ShapeLog::chunk() would make of the
  // separate messages): no string per message, no second copy into chunks.
  const bool full = definition_.log == LogMode::kFull;
  SnapshotChunkWriter writer(log_.chunk_bytes(), snapshot_rows.size());
  std::string message;
  rows_.reserve(rows_.size() + snapshot_rows.size());
  for (std::size_t i = 0; i < snapshot_rows.size(); ++i) {
    const Row& each = snapshot_rows[i];
    std::string key = row_key(each);
    if (full) {
      message.clear();
      append_snapshot_message(message, table(), definition_.selected, relation_json_, key, each);
      writer.add(message);
    }
    if (owned) {
      rows_.emplace(std::move(key), std::move((*owned)[i]));
    } else {
      rows_.emplace(std::move(key), each);
    }
  }
  snapshot_ = snapshot;
  auto chunks = writer.finish();
  if (files_ && storage == SnapshotStorage::kAfterServing) {
    snapshot_stored_ = false;  // see begin_snapshot_store()
  } else if (files_) {
    // The snapshot is on disk before meta.json says so; its chunks are read
    // from there when needed.
    auto stored = store_chunks(files_->dir() / snapshot_file_, chunks);
    if (!stored) return stored.error();
    chunks = std::move(stored).value();
    if (auto written = files_->write_meta(to_json(meta())); !written) return written.error();
  }
  log_.set_chunks(std::move(chunks));
  phase_ = Phase::kReady;
  bool grew = false;
  for (auto& buffered : buffered_) {
    std::vector<const Change*> changes;
    for (const auto& change : buffered.changes) changes.push_back(&change);
    grew = apply_changes(buffered.xid, buffered.commit_lsn, changes) || grew;
  }
  buffered_.clear();
  return grew;
}

std::shared_ptr<Shape::SnapshotStore> Shape::begin_snapshot_store() {
  if (snapshot_stored_ || !files_ || phase_ != Phase::kReady) return nullptr;
  auto store = std::make_shared<SnapshotStore>();
  store->path = files_->dir() / snapshot_file_;
  for (const auto& chunk : log_.chunks()) {
    if (!chunk.body) return nullptr;
    store->bodies.push_back(chunk.body);
  }
  return store;
}

Result<void> Shape::write_snapshot_store(SnapshotStore& store, const std::atomic<bool>& stopping) {
  std::vector<std::string_view> bodies;
  bodies.reserve(store.bodies.size());
  for (const auto& body : store.bodies) bodies.emplace_back(*body);
  auto stored = storage::ShapeFiles::write_chunk_file(
      store.path, bodies, [&stopping] { return stopping.load(std::memory_order_relaxed); });
  if (!stored) {
    // Half written: meta.json does not name it (the loader would remove it too).
    std::error_code ec;
    std::filesystem::remove(store.path, ec);
    return stored.error();
  }
  store.stored = std::move(stored).value();
  return {};
}

Result<void> Shape::finish_snapshot_store(SnapshotStore& store) {
  if (snapshot_stored_ || !files_) return {};
  log_.set_chunks(ShapeLog::on_disk(store.stored), log_.compacted_at());
  store.bodies = {};
  snapshot_stored_ = true;
  return files_->write_meta(to_json(meta()));
}

bool Shape::apply_transaction(const replication::Transaction& transaction,
                              const std::vector<const Change*>& changes) {
  if (phase_ == Phase::kGone || transaction.commit_lsn <= last_logged_tx_) return false;
  if (phase_ == Phase::kSnapshotting) {
    Buffered buffered{transaction.xid, transaction.commit_lsn, {}};
    for (const Change* change : changes) buffered.changes.push_back(*change);
    buffered_.push_back(std::move(buffered));
    return false;
  }
  return apply_changes(transaction.xid, transaction.commit_lsn, changes);
}

Result<std::shared_ptr<Shape>> Shape::restore(ShapeDefinition definition, const ShapeMeta& meta,
                                              storage::StoredShape stored,
                                              std::unique_ptr<storage::ShapeFiles> files,
                                              std::size_t chunk_bytes) {
  auto shape = std::make_shared<Shape>(std::move(definition), meta.handle, chunk_bytes);
  shape->snapshot_ = meta.snapshot;
  shape->snapshot_file_ = meta.snapshot_file;
  if (!stored.snapshot_chunks.empty()) {
    shape->log_.set_chunks(ShapeLog::on_disk(stored.snapshot_chunks), meta.compacted_at);
  } else {
    shape->log_.set_snapshot(stored.snapshot, meta.compacted_at);
  }
  if (meta.compacted_at) shape->last_logged_tx_ = meta.compacted_at->tx;
  // The operations stay on disk (the log reads them back when asked).
  if (stored.last_operation) {
    const auto last = LogOffset::at(stored.last_operation->first, stored.last_operation->second);
    if (!meta.compacted_at || last > *meta.compacted_at) {
      shape->log_.set_on_disk(last);
      shape->last_logged_tx_ = std::max<replication::Lsn>(shape->last_logged_tx_, last.tx);
    }
  }
  // Rows, rebuilt from the files.
  auto read = for_each_after(LogSource{files->log_files(), meta.compacted_at}, LogOffset::start(),
                             [&](LogOffset, std::string_view json) {
                               replay_message(shape->rows_, shape->table(), json);
                             });
  if (!read) return read.error();
  shape->files_ = std::move(files);
  shape->phase_ = Phase::kReady;
  return shape;
}

Result<std::shared_ptr<LogDiskRead>> Shape::plan_disk_read(LogOffset after) {
  if (!files_) return Error{"internal", "a disk read of a shape without files", ""};
  auto ranges = files_->ranges_after(after.tx, after.op);
  if (!ranges) return ranges.error();
  auto plan = std::make_shared<LogDiskRead>();
  plan->ranges = std::move(ranges).value();
  plan->after = after;
  plan->skip_through = log_.compacted_at();
  plan->chunk_bytes = log_.chunk_bytes();
  plan->end = log_.end();
  if (auto written = files_->written_last()) {
    plan->unwritten =
        log_.tail_after(LogOffset::at(written->first, written->second), log_.chunk_bytes());
  }
  return plan;
}

bool Shape::apply_changes(replication::Xid xid, replication::Lsn commit_lsn,
                          const std::vector<const Change*>& changes) {
  if (filtering_ && snapshot_) {
    if (snapshot_->visible(xid)) return false;  // already in the snapshot's rows
    if (snapshot_->after_snapshot(xid)) filtering_ = false;
  }
  if (refreshes_in_flight_ > 0) streamed_xids_.push_back(xid);
  std::vector<Operation> operations;
  for (const Change* change : changes) {
    switch (change->kind) {
      case Change::Kind::kInsert:
        apply_insert(*change, operations);
        break;
      case Change::Kind::kUpdate:
        apply_update(*change, operations);
        break;
      case Change::Kind::kDelete:
        apply_delete(*change, operations);
        break;
      case Change::Kind::kTruncate:
        break;  // the service rotates the shape
    }
  }
  if (operations.empty()) return false;
  (void)append_operations(operations, xid, commit_lsn);
  return true;
}

std::uint64_t Shape::begin_refresh() {
  ++refreshes_in_flight_;
  return streamed_base_ + streamed_xids_.size();
}

void Shape::end_refresh() {
  if (refreshes_in_flight_ > 0 && --refreshes_in_flight_ == 0) {
    streamed_base_ += streamed_xids_.size();
    streamed_xids_.clear();
  }
}

Result<bool> Shape::apply_refresh(const SnapshotRows& fresh, std::uint64_t mark) {
  for (std::uint64_t i = mark - streamed_base_; i < streamed_xids_.size(); ++i) {
    if (!fresh.snapshot.visible(streamed_xids_[i])) return false;  // older than the log
  }
  auto diff = diff_rows(rows_, fresh, definition_.selected,
                        [this](const Row& row) { return row_key(row); });
  snapshot_ = fresh.snapshot;
  filtering_ = true;
  std::vector<Operation> operations;
  for (auto& removed : diff.deletes) {
    rows_.erase(removed.key);
    operations.push_back({Operation::Kind::kDelete, removed.key, std::move(removed.row), {}, {}});
  }
  for (auto& updated : diff.updates) {
    rows_[updated.key] = updated.new_row;
    operations.push_back({Operation::Kind::kUpdate, updated.key, std::move(updated.new_row),
                          std::move(updated.old_row), std::move(updated.changed_columns)});
  }
  for (auto& inserted : diff.inserts) {
    rows_[inserted.key] = inserted.row;
    operations.push_back({Operation::Kind::kInsert, inserted.key, std::move(inserted.row), {}, {}});
  }
  if (files_) {
    if (auto written = files_->write_meta(to_json(meta())); !written) return written.error();
  }
  if (operations.empty()) return false;
  // Just past the last logged group: replicated commits that follow lie
  // further on (each commit record takes tens of bytes of WAL).
  auto appended = append_operations(operations, 0, last_logged_tx_ + 1);
  if (!appended) return appended.error();
  return true;
}

Result<void> Shape::append_operations(const std::vector<Operation>& operations,
                                      replication::Xid xid, replication::Lsn commit_lsn) {
  const std::string lsn_text = std::to_string(commit_lsn);
  std::vector<LogEntry> entries;
  entries.reserve(operations.size());
  for (std::size_t i = 0; i < operations.size(); ++i) {
    bool last = i + 1 == operations.size();
    entries.push_back(
        {LogOffset::at(commit_lsn, i), render(operations[i], lsn_text.c_str(), i, xid, last)});
  }
  if (files_) {
    std::vector<storage::StoredOperation> stored;
    stored.reserve(entries.size());
    for (const auto& entry : entries)
      stored.push_back({entry.offset.tx, entry.offset.op, entry.json});
    files_->append_transaction(stored);
  }
  last_logged_tx_ = commit_lsn;
  log_.append(std::move(entries));
  if (files_) {
    // What the files hold already need not stay in memory.
    if (auto written = files_->written_last()) {
      log_.trim(LogOffset::at(written->first, written->second), kLogTailBytes);
    }
  }
  return {};
}

void Shape::apply_insert(const Change& change, std::vector<Operation>& out) {
  Row row = to_row(change.new_tuple, nullptr);
  if (!in_shape(row)) return;
  std::string key = row_key(row);
  rows_[key] = row;
  out.push_back({Operation::Kind::kInsert, std::move(key), std::move(row), {}, {}});
}

void Shape::apply_update(const Change& change, std::vector<Operation>& out) {
  // The row before: from the old tuple's key when the key changed, else the new key.
  std::string old_key;
  if (change.old_tuple) {
    old_key = row_key(to_row(*change.old_tuple, nullptr));
  }
  Row provisional = to_row(change.new_tuple, nullptr);
  if (old_key.empty()) old_key = row_key(provisional);
  auto previous = rows_.find(old_key);
  const Row* previous_row = previous == rows_.end() ? nullptr : &previous->second;
  Row row = to_row(change.new_tuple, previous_row);
  std::string new_key = row_key(row);
  bool was_in = previous_row != nullptr;
  bool now_in = in_shape(row);

  if (was_in && (!now_in || new_key != old_key)) {
    Row old_row = std::move(previous->second);
    rows_.erase(previous);
    out.push_back({Operation::Kind::kDelete, old_key, std::move(old_row), {}, {}});
    was_in = false;
  }
  if (!now_in) return;
  if (!was_in) {
    rows_[new_key] = row;
    out.push_back({Operation::Kind::kInsert, std::move(new_key), std::move(row), {}, {}});
    return;
  }
  Operation update{Operation::Kind::kUpdate, new_key, row, previous->second, {}};
  for (std::size_t index : definition_.selected) {
    if (row[index] != previous->second[index]) update.changed.push_back(index);
  }
  previous->second = std::move(row);
  if (!update.changed.empty()) out.push_back(std::move(update));
}

void Shape::apply_delete(const Change& change, std::vector<Operation>& out) {
  if (!change.old_tuple) return;
  std::string key = row_key(to_row(*change.old_tuple, nullptr));
  auto previous = rows_.find(key);
  if (previous == rows_.end()) return;
  Row old_row = std::move(previous->second);
  rows_.erase(previous);
  out.push_back({Operation::Kind::kDelete, std::move(key), std::move(old_row), {}, {}});
}

Row Shape::to_row(const replication::TupleData& tuple, const Row* previous) const {
  Row row(tuple.size());
  for (std::size_t i = 0; i < tuple.size(); ++i) {
    switch (tuple[i].kind) {
      case ColumnValue::Kind::kText:
      case ColumnValue::Kind::kBinary:
        row[i] = tuple[i].data;
        break;
      case ColumnValue::Kind::kUnchangedToast:
        // Same as before; unknown if the row was not in the shape.
        if (previous != nullptr && i < previous->size()) row[i] = (*previous)[i];
        break;
      case ColumnValue::Kind::kNull:
        break;
    }
  }
  return row;
}

std::string Shape::row_key(const Row& row) const {
  std::string key = key_prefix_;
  for (std::size_t index : table().key_columns) {
    key += '/';
    if (index >= row.size() || !row[index]) {
      key += '_';
      continue;
    }
    key += '"';
    for (char c : *row[index]) {
      if (c == '/') key += '/';
      key += c;
    }
    key += '"';
  }
  return key;
}

bool Shape::in_shape(const Row& row) const {
  return !definition_.where || definition_.where->matches(row);
}

void Shape::append_values(std::string& out, const Row& row,
                          const std::vector<std::size_t>& columns) const {
  append_row_values(out, table(), row, columns);
}

std::string Shape::render(const Operation& operation, const char* lsn_text, std::size_t position,
                          replication::Xid xid, bool last) const {
  std::string out = "{\"key\":";
  append_json_string(out, operation.key);
  out += ",\"value\":";
  const char* name = "insert";
  bool full = definition_.replica == ReplicaMode::kFull;
  switch (operation.kind) {
    case Operation::Kind::kInsert:
      append_values(out, operation.row, definition_.selected);
      break;
    case Operation::Kind::kUpdate: {
      name = "update";
      if (full) {
        append_values(out, operation.row, definition_.selected);
        out += ",\"old_value\":";
        append_values(out, operation.old_row, operation.changed);
      } else {
        std::vector<std::size_t> columns = table().key_columns;
        for (std::size_t index : operation.changed) {
          if (std::find(columns.begin(), columns.end(), index) == columns.end()) {
            columns.push_back(index);
          }
        }
        std::sort(columns.begin(), columns.end());
        append_values(out, operation.row, columns);
      }
      break;
    }
    case Operation::Kind::kDelete:
      name = "delete";
      append_values(out, operation.row, full ? definition_.selected : table().key_columns);
      break;
  }
  out += ",\"headers\":{\"operation\":\"";
  out += name;
  out += "\",\"relation\":";
  out += relation_json_;
  out += ",\"lsn\":\"";
  out += lsn_text;
  out += "\",\"op_position\":";
  out += std::to_string(position);
  out += ",\"txids\":[";
  out += std::to_string(xid);
  out += ']';
  if (last) out += ",\"last\":true";
  out += "}}";
  return out;
}

}  // namespace shapeproxy::shapes

#include "shapes/shape.h"

#include <spdlog/spdlog.h>
#include <algorithm>
#include <nlohmann/json.hpp>

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "shapes/json_text.h"
#include "shapes/row_diff.h"
#include "shapes/shape_messages.h"
#include "shapes/shape_operation.h"

namespace shapeproxy::shapes {
using replication::Change;
using replication::ColumnValue;

void release_free_memory() {
#ifdef __GLIBC__
  ::malloc_trim(0);
#endif
}

namespace {

// Shapes made without a store (tests) share this one. Never destroyed: a
// RocksDB closed during static destruction could outlive its environment.
std::shared_ptr<StateStore> shared_memory_store() {
  static auto* store = new std::shared_ptr<StateStore>([] {
    auto opened = StateStore::in_memory(StateStoreOptions{});
    if (!opened) throw std::runtime_error(opened.error().to_string());
    return opened.value();
  }());
  return *store;
}

std::shared_ptr<StateStore> store_or_shared(std::shared_ptr<StateStore> store) {
  return store ? std::move(store) : shared_memory_store();
}

}  // namespace

Shape::Shape(ShapeDefinition definition, std::string handle, std::size_t chunk_bytes,
             std::shared_ptr<StateStore> store, std::optional<std::uint64_t> state_id)
    : definition_(std::move(definition)),
      handle_(std::move(handle)),
      log_(chunk_bytes),
      state_(store_or_shared(store), state_id ? *state_id : store_or_shared(store)->allocate_id()) {
  schema_json_ = table().electric_schema_json(definition_.selected);
  relation_json_.push_back('[');  // (not = "[": a GCC 12 -Wrestrict false positive)
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
  return ShapeMeta{handle_,        definition_.request, table(),    stored_snapshot,
                   snapshot_file_, log_.compacted_at(), state_.id()};
}

LogOffset Shape::log_end() const {
  const LogOffset folded = log_.compacted_at().value_or(LogOffset::start());
  const LogOffset end = log_.end();
  if (end.is_snapshot() || end <= folded) return folded;
  return end;
}

void Shape::mark_gone() {
  if (phase_ == Phase::kGone) return;
  phase_ = Phase::kGone;
  deferred_state_ = nullptr;  // its rows are dropped below
  if (read_only_) return;     // a view holds no rows
  if (auto dropped = state_.drop(); !dropped)
    spdlog::warn("shapes: the rows of removed shape {} stay in the store until the next start: {}",
                 handle_, dropped.error().to_string());
}

Result<void> Shape::store_deferred_state() {
  settle_state();
  if (deferred_failure_) return *std::exchange(deferred_failure_, std::nullopt);
  return {};
}

void Shape::settle_state() const {
  if (!deferred_state_) return;
  auto store = std::move(deferred_state_);
  deferred_state_ = nullptr;
  if (auto stored = store(); !stored) {
    spdlog::error("shapes: storing the snapshot rows of {}: {}", handle_,
                  stored.error().to_string());
    deferred_failure_ = stored.error();
  }
}

void Shape::commit_unpersisted() {
  if (files_) return;  // the registry commits after the log's fdatasync
  state_.seal(log_end());
  if (auto committed = state_.commit(); !committed)
    spdlog::error("shapes: {}", committed.error().to_string());
}

Result<bool> Shape::apply_snapshot(SnapshotRows snapshot, SnapshotStorage storage) {
  auto applied =
      install_snapshot(snapshot.rows, &snapshot.rows, nullptr, snapshot.snapshot, storage);
  snapshot.rows = {};
  return applied;
}

Result<bool> Shape::apply_snapshot(const std::shared_ptr<const SnapshotRows>& snapshot,
                                   SnapshotStorage storage, ShapeLog::Chunks rendered) {
  return install_snapshot(snapshot->rows, nullptr, snapshot, snapshot->snapshot, storage,
                          std::move(rendered));
}

// `owned`: the same vector as `snapshot_rows` when the rows may be moved from;
// `shared`: the result holding `snapshot_rows` when it is shared (kept for
// a deferred store write).
Result<bool> Shape::install_snapshot(const std::vector<Row>& snapshot_rows, std::vector<Row>* owned,
                                     const std::shared_ptr<const SnapshotRows>& shared,
                                     const PgSnapshot& snapshot, SnapshotStorage storage,
                                     ShapeLog::Chunks rendered) {
  // Each message is rendered into one reused buffer and appended straight to
  // its response body (the bytes ShapeLog::chunk() would make of the
  // separate messages): no string per message, no second copy into chunks.
  // Unless they come rendered already.
  const bool full = definition_.log == LogMode::kFull && rendered.empty();
  SnapshotChunkWriter writer(log_.chunk_bytes(), snapshot_rows.size());
  const SnapshotRenderer render = renderer();  // the bytes a SnapshotStream makes
  std::string message;
  // The rows go to the store as they come (see ShapeState's bulk load):
  // should the process die before meta.json names the snapshot, the shape
  // is discarded at load and its rows with it.
  if (auto begun = state_.begin_bulk(); !begun) return begun.error();
  // With a primary key, the snapshot's keys are distinct: no lookup per row
  // (a store read, slowed by the range deletion begin_bulk() just made).
  const bool unique_keys = std::any_of(table().columns.begin(), table().columns.end(),
                                       [](const TableColumn& c) { return c.pk_index.has_value(); });
  // Served before stored, from a shared result: the rows go to the store
  // after the waiting readers have their answer (see store_deferred_state()).
  const bool defer = shared && unique_keys && storage == SnapshotStorage::kAfterServing;
  std::vector<std::string> deferred_keys;
  if (defer) deferred_keys.reserve(snapshot_rows.size());
  for (std::size_t i = 0; i < snapshot_rows.size(); ++i) {
    const Row& each = snapshot_rows[i];
    std::string key = row_key(each);
    if (full) {
      message.clear();
      render.append_message(message, each);
      writer.add(message);
    }
    if (defer) {
      deferred_keys.push_back(std::move(key));
      continue;
    }
    if (unique_keys) {
      if (auto inserted = state_.bulk_insert(key, each); !inserted) return inserted.error();
      continue;
    }
    if (state_.holds(key)) continue;  // a key repeated: the first one stays
    if (owned) {
      state_.put_new(key, std::move((*owned)[i]));
    } else {
      state_.put_new(key, each);
    }
  }
  if (rendered.empty()) writer.add(snapshot_end_message(snapshot));
  if (defer) {
    deferred_rows_ = snapshot_rows.size();
    deferred_state_ = [this, shared, keys = std::move(deferred_keys)]() -> Result<void> {
      for (std::size_t i = 0; i < keys.size(); ++i) {
        if (auto inserted = state_.bulk_insert(keys[i], shared->rows[i]); !inserted)
          return inserted.error();
      }
      return state_.end_bulk(LogOffset::start());
    };
  } else if (auto ended = state_.end_bulk(LogOffset::start()); !ended) {
    return ended.error();
  }
  snapshot_ = snapshot;
  forget_streamed_xids();
  auto chunks = rendered.empty() ? writer.finish() : std::move(rendered);
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
  if (streamed_xids_.size() == kMaxStreamedXids) {
    const auto dropped = kMaxStreamedXids / 2;
    streamed_xids_.erase(streamed_xids_.begin(), streamed_xids_.begin() + dropped);
    streamed_base_ += dropped;
  }
  streamed_xids_.push_back(xid);
  settle_state();
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
  if (operations.empty()) {
    commit_unpersisted();
    return false;
  }
  (void)append_operations(operations, xid, commit_lsn);
  commit_unpersisted();
  return true;
}

Result<void> Shape::append_operations(const std::vector<Operation>& operations,
                                      replication::Xid xid, replication::Lsn commit_lsn,
                                      const PgSnapshot* snapshot_end) {
  const std::string lsn_text = std::to_string(commit_lsn);
  std::vector<LogEntry> entries;
  entries.reserve(operations.size() + 1);
  for (std::size_t i = 0; i < operations.size(); ++i) {
    bool last = i + 1 == operations.size();
    entries.push_back(
        {LogOffset::at(commit_lsn, i), render(operations[i], lsn_text.c_str(), i, xid, last)});
  }
  if (snapshot_end)
    entries.push_back(
        {LogOffset::at(commit_lsn, operations.size()), snapshot_end_message(*snapshot_end)});
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
  state_.put(key, row);
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
  std::optional<Row> previous = state_.get(old_key);
  Row row = to_row(change.new_tuple, previous ? &*previous : nullptr);
  std::string new_key = row_key(row);
  bool was_in = previous.has_value();
  bool now_in = in_shape(row);

  if (was_in && (!now_in || new_key != old_key)) {
    state_.erase(old_key);
    out.push_back({Operation::Kind::kDelete, old_key, std::move(*previous), {}, {}});
    was_in = false;
  }
  if (!now_in) return;
  if (!was_in) {
    state_.put(new_key, row);
    out.push_back({Operation::Kind::kInsert, std::move(new_key), std::move(row), {}, {}});
    return;
  }
  if (row == *previous) return;
  Operation update{Operation::Kind::kUpdate, new_key, row, *previous, {}};
  for (std::size_t index : definition_.selected) {
    if (row[index] != (*previous)[index]) update.changed.push_back(index);
  }
  state_.put(new_key, std::move(row));
  if (!update.changed.empty()) out.push_back(std::move(update));
}

void Shape::apply_delete(const Change& change, std::vector<Operation>& out) {
  if (!change.old_tuple) return;
  std::string key = row_key(to_row(*change.old_tuple, nullptr));
  std::optional<Row> previous = state_.get(key);
  if (!previous) return;
  state_.erase(key);
  out.push_back({Operation::Kind::kDelete, std::move(key), std::move(*previous), {}, {}});
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

SnapshotRenderer Shape::renderer() const {
  return SnapshotRenderer(definition_.table, definition_.selected, relation_json_, key_prefix_);
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

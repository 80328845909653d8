// ShapeState: the rows one shape holds (key -> row values), kept in the
// StateStore under the shape's state id, with the changes not yet known to
// be durable in the shape's log held in memory.
//
// Invariant (crash consistency, see rfc/0002-shape-state.md): what the store
// holds for a shape never runs ahead of the shape's durable log. Changes go
// to the active in-memory layer; when the registry hands the log's records
// to the OS it seals that layer with the log offset they reach (seal()); once
// their fdatasync succeeded, commit() writes the sealed layers and the marker
// "applied through <offset>, N rows" as one WriteBatch. Reads see the layers
// (newest first) over the store. The layers are bounded by the group-commit
// window (the changes of the transactions of one or two syncs).
//
// Bulk loads (a snapshot, a rebuild from the log) go through begin_bulk()/
// end_bulk(): the rows are written as they come, with no marker until the end,
// so a crash meanwhile leaves the shape without a marker (rebuilt at load).
//
// Single-threaded (the shapes strand); compaction reads the store through a
// snapshot taken on the strand (store_snapshot()).
#pragma once

#include <rocksdb/write_batch.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"
#include "shapes/log_offset.h"
#include "shapes/state_store.h"

namespace shapeproxy::shapes {

class ShapeState {
 public:
  using Row = where::RowValues;

  ShapeState(std::shared_ptr<StateStore> store, std::uint64_t id);

  std::uint64_t id() const { return id_; }
  const std::shared_ptr<StateStore>& store() const { return store_; }
  std::size_t size() const { return rows_; }

  std::optional<Row> get(const std::string& key) const;
  bool holds(const std::string& key) const;
  // Inserts or replaces the row under `key`.
  void put(const std::string& key, Row row);
  // Inserts a row under a key the shape does not hold (a bulk load of a
  // table's rows by primary key, where keys cannot repeat): like put()
  // without the lookup (a store read per row).
  void put_new(const std::string& key, Row row);
  void erase(const std::string& key);
  // Every row in key order (the layers over the store); fn returns false to stop.
  void for_each(const std::function<bool(const std::string& key, const Row& row)>& fn) const;

  // Changes not sealed yet.
  bool pending() const { return !layers_.empty() && !layers_.back().sealed; }
  // Layers of changes in memory, not yet in the store (sealed ones wait for
  // a commit; at most one sealed layer waits after a failed commit).
  std::size_t layers() const { return layers_.size(); }
  // The active layer now reaches `through` in the shape's log (handed to
  // the OS); changes made from now on go to a new layer.
  void seal(LogOffset through);
  // After the log's fdatasync covering every sealed layer: writes them
  // with the marker. An error leaves them sealed, merged into one layer
  // (commit() again later).
  Result<void> commit();
  // What the store's marker says (start() before any).
  LogOffset committed_through() const { return committed_through_; }
  std::uint64_t committed_rows() const { return committed_rows_; }

  // Where a loaded shape's store stands (from StateStore::marker()).
  void set_loaded(const StateMarker& marker);
  // Empties the shape in the store (marker removed) and in memory, for a
  // bulk load; end_bulk() writes what remains and the marker.
  Result<void> begin_bulk();
  // During a bulk load: a row under a key not put before in it (a table's
  // rows by primary key), encoded straight into the store's write batch:
  // no copy of the row, no layer. holds() and get() see such rows only
  // after end_bulk().
  Result<void> bulk_insert(const std::string& key, const Row& row);
  Result<void> end_bulk(LogOffset through);
  // Forgets the shape in the store (removed shape).
  Result<void> drop();

  // A consistent view of the store as committed, for a reader elsewhere.
  std::shared_ptr<const rocksdb::Snapshot> store_snapshot() { return store_->snapshot(); }

 private:
  struct Layer {
    std::map<std::string, std::optional<Row>, std::less<>> changes;  // nullopt: deleted
    bool sealed = false;
    LogOffset through = LogOffset::start();
    std::uint64_t rows = 0;  // the shape's row count once this layer applies
  };
  const std::optional<Row>* in_layers(const std::string& key) const;
  Layer& active();
  Result<void> write_layers(std::size_t count, std::optional<StateMarker> marker);
  void coalesce(std::size_t count);

  std::shared_ptr<StateStore> store_;
  std::uint64_t id_;
  std::deque<Layer> layers_;
  std::uint64_t rows_ = 0;
  LogOffset committed_through_ = LogOffset::start();
  std::uint64_t committed_rows_ = 0;
  bool bulk_ = false;
  rocksdb::WriteBatch bulk_batch_;  // bulk_insert() rows not written yet
  std::size_t bulk_batch_rows_ = 0;
};

}  // namespace shapeproxy::shapes

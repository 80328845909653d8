// ShapeCatalog: which shapes exist. One shape per normalized definition
// (by key), named by its handle, grouped by table; the table schemas looked
// up from the catalog of the database; when each shape was last read; the
// shapes saved on disk, loaded at start-up, with the store of their rows
// (RocksDB under <shapes_dir>/state, see state_store.h); and the periodic
// removal of shapes nobody read for the idle timeout.
//
// Threading: on the registry's strand (every method asserts it), except
// shapes_held() and shapes_snapshotting(), for /v1/status and /metrics from
// any thread.
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "pg/connection_pool.h"
#include "shapes/lifetime.h"
#include "shapes/shape.h"
#include "shapes/shape_index.h"
#include "shapes/state_store.h"

namespace shapeproxy::shapes {

class ShapeCatalog {
 public:
  using Shapes = std::vector<std::shared_ptr<Shape>>;

  // `shapes_dir` unset: shapes live in memory only (nothing to load).
  ShapeCatalog(boost::asio::any_io_executor executor, std::shared_ptr<pg::ConnectionPool> pool,
               std::shared_ptr<Clock> clock, Lifetime lifetime,
               std::optional<std::filesystem::path> shapes_dir, std::size_t chunk_bytes,
               StateStoreOptions state_store = {});

  std::shared_ptr<Shape> by_handle(const std::string& handle) const;
  std::shared_ptr<Shape> by_key(const std::string& key) const;
  // The shapes on a table (by table_key()), null when there are none.
  const Shapes* of_table(const std::string& table) const;
  const std::map<std::string, Shapes>& by_table() const { return by_table_; }
  Shapes all() const;
  // Whether some shape satisfies `predicate` (no copy of the list).
  template <typename Predicate>
  bool any_of(Predicate predicate) const {
    for (const auto& [key, shape] : by_key_) {
      if (predicate(*shape)) return true;
    }
    return false;
  }
  std::size_t size() const;
  // Routes each table's changes to the shapes they may concern.
  ShapeIndex& index() { return index_; }

  // A new shape for `definition` (no shape has its key), with a new handle
  // that sorts after every earlier one; still to be snapshotted. Throws when
  // the state store cannot be opened (load() opens it first, so only
  // without a load).
  std::shared_ptr<Shape> add(const ShapeDefinition& definition);
  // Drops the shape from every index (its files are the caller's business).
  void erase(const std::shared_ptr<Shape>& shape);

  // The table's schema, from the cache or the database.
  boost::asio::awaitable<Result<std::shared_ptr<const TableSchema>>> table_schema(
      const std::string& schema, const std::string& table);
  // Forgets cached schemas of the table with this oid (its schema changed).
  void forget_table(std::uint32_t oid);

  // Loads the shapes saved under shapes_dir (before serving), after opening
  // the state store (an error if it cannot be). Returns how many came back;
  // unreadable or invalid ones are logged with their path and the reason
  // and moved to quarantine_dir() (never fatal, never served: their clients
  // get 409 and refetch); rows of shapes that did not come back leave the
  // store.
  Result<std::size_t> load();
  static std::filesystem::path quarantine_dir(const std::filesystem::path& shapes_dir) {
    return shapes_dir / ".quarantine";
  }

  // The ready shape read least recently (never read counts as oldest) for
  // which `busy` is false; null when there is none.
  std::shared_ptr<Shape> least_recently_read(
      const std::function<bool(const std::shared_ptr<Shape>&)>& busy) const;

  void note_read(const Shape& shape);
  // Whether the shape was read after `since`.
  bool read_after(const Shape& shape, Clock::time_point since) const;

  // Every idle_check_interval, the ready shapes not read for idle_timeout
  // and without parked readers are handed to `remove`.
  struct IdleRemoval {
    std::chrono::seconds idle_timeout{0};
    std::chrono::seconds check_interval{60};
    std::function<bool(const std::shared_ptr<Shape>&)> parked;
    std::function<void(const Shapes&)> remove;
  };
  void start_housekeeping(IdleRemoval removal);

  // A shape's phase changed (its snapshot ended): recounts the gauges.
  void update_gauges();
  // From any thread.
  std::uint64_t shapes_held() const { return shapes_held_.load(std::memory_order_relaxed); }
  std::uint64_t shapes_snapshotting() const {
    return shapes_snapshotting_.load(std::memory_order_relaxed);
  }

 private:
  std::string new_handle(const std::string& key);
  void index_shape(const std::shared_ptr<Shape>& shape);
  void remove_idle_shapes();
  void arm_housekeeping();
  // The shapes' rows: opened by load(), or on first use.
  static constexpr const char* kStateDir = "state";
  std::shared_ptr<StateStore> state_store();
  Result<void> open_state_store();
  void drop_orphan_states(const std::set<std::uint64_t>& loaded);

  boost::asio::any_io_executor executor_;
  std::shared_ptr<pg::ConnectionPool> pool_;
  std::shared_ptr<Clock> clock_;
  Lifetime lifetime_;
  std::optional<std::filesystem::path> shapes_dir_;
  std::size_t chunk_bytes_;
  StateStoreOptions state_options_;
  std::shared_ptr<StateStore> state_store_;

  std::map<std::string, std::shared_ptr<const TableSchema>> tables_;  // by table_key
  std::unordered_map<std::string, std::shared_ptr<Shape>> by_key_;
  std::unordered_map<std::string, std::shared_ptr<Shape>> by_handle_;
  std::map<std::string, Shapes> by_table_;
  ShapeIndex index_;
  std::map<const Shape*, Clock::time_point> last_read_;
  std::int64_t last_handle_micros_ = 0;
  IdleRemoval idle_;
  std::unique_ptr<ClockTimer> housekeeping_;
  std::atomic<std::uint64_t> shapes_held_{0};
  std::atomic<std::uint64_t> shapes_snapshotting_{0};
};

}  // namespace shapeproxy::shapes

// ShapeRegistry: the shapes core behind the HTTP API. It keeps one shape per
// normalized definition (created on first request: catalog lookup, table
// added to the publication, initial snapshot), applies every replicated
// transaction to the shapes of the tables it touches, and answers reads,
// parking live ones until their shape's log grows or the live timeout
// passes. A schema change or a truncate rotates the shapes of that table:
// their clients get 409 and resync.
//
// A facade over collaborators that share its strand (see each header):
//   ShapeCatalog       which shapes exist, tables, loading, the row state
//                      store, idle removal
//   SnapshotTaker      initial snapshots (timeout, per-table share of the
//                      pool, cancelled when nobody waits), reads waiting
//   ShapeReader        answers from a shape's log (older parts read off the
//                      strand), global_last_seen_lsn
//   LiveParking        parked live reads, their deadline, wake-ups
//   LogDurability      group commit (fdatasync on the sync thread), state
//                      store commits, on_durable, storage failures
//   Compactor          compaction and snapshot stores on the worker, back-off
//   FallbackRefresher  degraded mode: poll loop, refresh bracket, refusals
// This file wires them and keeps the ingest of transactions and the routing
// of reads (and shape_registry_describe.cpp, the status page's view).
//
// Threading: all state lives on one strand (`executor`); read(), remove()
// and describe() may be called from any thread, and the gauges
// (shapes_held(), parked_reads(), shapes_snapshotting(), storage_state())
// read from any thread; every other method must run on the strand (the
// replication stream shares it) and asserts it.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <filesystem>
#include <memory>

#include "common/clock.h"
#include "pg/connection_pool.h"
#include "replication/transaction.h"
#include "shapes/compactor.h"
#include "shapes/fallback_refresher.h"
#include "shapes/live_parking.h"
#include "shapes/log_durability.h"
#include "shapes/shape.h"
#include "shapes/shape_catalog.h"
#include "shapes/shape_reader.h"
#include "shapes/shape_service.h"
#include "shapes/snapshot_taker.h"
#include "shapes/state_store.h"

namespace shapeproxy::shapes {

struct ShapeRegistryOptions {
  std::string publication_name = "shapeproxy";
  // Where shape logs are kept; unset: in memory only (lost on restart).
  std::optional<std::filesystem::path> shapes_dir;
  std::size_t chunk_bytes = 10 * 1024 * 1024;
  std::chrono::milliseconds live_timeout{20'000};
  // A shape's operations on disk past this are compacted into its rows.
  std::uint64_t compact_bytes = 64 * 1024 * 1024;
  // Shapes nobody read for this long are removed; zero keeps them forever.
  std::chrono::seconds idle_timeout{7 * 24 * 3600};
  std::chrono::seconds idle_check_interval{60};
  // Most shapes held at once. A new shape past it evicts the least recently
  // read ready shape without parked readers; with none, the read is refused
  // (503 + retry-after, see kTooManyShapes).
  std::size_t max_shapes = 10'000;
  // Degraded mode: each shape being read is re-queried at most this often.
  std::chrono::milliseconds fallback_poll_interval{1'000};
  // The store of the shapes' rows (<shapes_dir>/state, else in memory).
  StateStoreOptions state_store;
  // Initial queries: each statement may run this long (zero: no limit); the
  // readers of a shape whose query timed out get 400.
  std::chrono::milliseconds snapshot_timeout{120'000};
  // At most this many initial queries of one table run at once (the others
  // wait), so costly where clauses on one table cannot hold every pooled
  // connection. Zero: half the pool (at least one).
  std::size_t snapshot_share = 0;
  // Tests: called on the compaction worker once a compacted snapshot is
  // built, before it is swapped in on the strand.
  std::function<void()> compaction_built;
  // Tests: true leaves a synced shape's rows out of the state store (as a
  // process killed between the log's fdatasync and the store's write).
  std::function<bool()> skip_state_commit;
  // Tests: called on the compaction worker for every row it renders.
  std::function<void()> compaction_step;
  // What live deadlines, idle removal, compaction back-off, write retries
  // and fallback polls measure time with (tests: a manual clock).
  std::shared_ptr<Clock> clock = steady_clock();
};

// How the registry is wired to the rest of the proxy; given at construction
// (no setters to race with the strand).
struct ShapeRegistryHooks {
  // Degraded mode's direct queries; unset: no degraded mode.
  FallbackRows fallback_rows;
  // Called (on the strand) with the end LSN up to which every transaction
  // is durably handled by every shape: what the slot may confirm.
  std::function<void(replication::Lsn)> on_durable;
  // Followers (rfc/0003), on the strand, in order: a batch of shape logs is
  // durable (each grown shape's handle and end as of its sealing, and the
  // global_last_seen_lsn then: every operation at or below it lies at or
  // before those ends, or earlier announced ones); a shape was removed.
  using DurableEnds = std::vector<std::pair<std::string, std::optional<LogOffset>>>;
  std::function<void(replication::Lsn last_seen, DurableEnds ends)> durable_ends;
  std::function<void(const std::string& handle)> removed;
};

class ShapeRegistry : public ShapeService, public std::enable_shared_from_this<ShapeRegistry> {
 public:
  ShapeRegistry(boost::asio::any_io_executor executor, std::shared_ptr<pg::ConnectionPool> pool,
                ShapeRegistryOptions options, ShapeRegistryHooks hooks = {});
  ~ShapeRegistry() override;

  std::function<void()> read(ShapeDefinitionRequest definition, ReadRequest request,
                             std::function<void(ReadOutcome)> done) override;
  void remove(ShapeDefinitionRequest definition, std::optional<std::string> handle,
              std::function<void(Result<DeleteOutcome>)> done) override;

  // Degraded mode. With replication unavailable, every shape being read is
  // refreshed from direct queries (diffed into its log) once per poll
  // interval, and responses carry the fallback flag.
  void set_serving_mode(bool fallback);
  // Refreshes every shape once (e.g. after the slot was re-created and the
  // stream restarted past a gap).
  void refresh_all();

  // Loads the shapes saved under options.shapes_dir (before serving).
  // Returns how many came back; unreadable or invalid ones are logged with
  // their path and the reason and moved to quarantine_dir() (never fatal,
  // never served: their clients get 409 and refetch). Their snapshot files
  // are verified afterwards on the compaction worker (see Compactor).
  Result<std::size_t> load();
  static std::filesystem::path quarantine_dir(const std::filesystem::path& shapes_dir) {
    return ShapeCatalog::quarantine_dir(shapes_dir);
  }

  // Applies a committed transaction to every shape it touches.
  void apply_transaction(const replication::Transaction& transaction);
  // The stream is idle at `wal_end` (every earlier commit was delivered).
  // Advances up-to-date's global_last_seen_lsn.
  void note_progress(replication::Lsn wal_end);

  // Answers every parked read now (up-to-date at its offset); for shutdown.
  void release_waiters();

  std::size_t shape_count() const;
  // Every ready persisted shape's handle and log end, and the last LSN seen
  // (strand): what followers start from, taken before streaming starts.
  std::pair<replication::Lsn, ShapeRegistryHooks::DurableEnds> durable_ends() const;
  // From any thread, for /v1/status and /metrics.
  std::uint64_t shapes_held() const { return catalog_.shapes_held(); }
  std::uint64_t parked_reads() const { return parking_.parked_reads(); }
  // Of shapes_held(): those whose first snapshot is under way (the rest serve).
  std::uint64_t shapes_snapshotting() const { return catalog_.shapes_snapshotting(); }
  // From any thread: whether shape logs can be written and synced now.
  using StorageState = shapes::StorageState;
  StorageState storage_state() const { return durability_.storage_state(); }
  // One held shape as the status page lists it.
  struct ShapeDescription {
    std::string handle;
    std::string table;   // "schema.name"
    std::string where;   // normalized; "" without one
    bool ready = false;  // false: first snapshot under way
    std::uint64_t rows = 0;
    std::uint64_t snapshot_bytes = 0;  // its snapshot chunks (in memory or on disk)
    std::uint64_t readers = 0;         // live requests waiting on it now
  };
  // Calls `done` on the strand with every held shape (from any thread;
  // shape_registry_describe.cpp).
  void describe(std::function<void(std::vector<ShapeDescription>)> done);

  // Starts the periodic removal of idle shapes.
  void start_housekeeping();

  // Shutdown, before the io_context goes: a running compaction gives up
  // (its half-written file is removed; the shape's files stay as they were),
  // then the compaction and sync threads are joined. Nothing runs on them
  // afterwards. Blocks briefly; call it on the strand, once the replication
  // stream has stopped. The destructor does it too (from any thread).
  void stop();

 private:
  boost::asio::awaitable<void> serve(ShapeDefinitionRequest definition, ReadRequest request,
                                     std::shared_ptr<ReadTicket> ticket);
  bool serve_known(const ShapeDefinitionRequest& definition, const ReadRequest& request,
                   const std::shared_ptr<ReadTicket>& ticket);
  void answer_or_park(const std::shared_ptr<Shape>& shape, const ReadRequest& request,
                      const std::shared_ptr<ReadTicket>& ticket);
  std::shared_ptr<Shape> known_shape(const ShapeDefinitionRequest& definition,
                                     const ReadRequest& request) const;
  boost::asio::awaitable<std::shared_ptr<Shape>> find_shape(
      const ShapeDefinitionRequest& definition, const ReadRequest& request,
      const std::shared_ptr<ReadTicket>& ticket);
  // The shape of `definition`, made if needed; null when the registry is
  // full and no shape can be evicted.
  std::shared_ptr<Shape> shape_for(const ShapeDefinition& definition);
  bool make_room();
  void rotate(const std::shared_ptr<Shape>& shape, const char* why);
  void forget(const std::shared_ptr<Shape>& shape);
  void stop_workers();
  Lifetime lifetime();

  boost::asio::any_io_executor executor_;
  ShapeRegistryOptions options_;
  std::function<void(const std::string& handle)> removed_;  // hooks.removed
  bool stopped_ = false;
  // In dependency order (each may use those above it).
  FallbackRefresher fallback_;
  ShapeReader reader_;
  ShapeCatalog catalog_;
  LiveParking parking_;
  LogDurability durability_;
  Compactor compactor_;
  SnapshotTaker snapshots_;
};

}  // namespace shapeproxy::shapes

// ShapeRegistry: the shapes core behind the HTTP API. It keeps one shape per
// normalized definition (created on first request: catalog lookup, table
// added to the publication, initial snapshot), applies every replicated
// transaction to the shapes of the tables it touches, and answers reads,
// parking live ones until their shape's log grows or the live timeout
// passes. A schema change or a truncate rotates the shapes of that table:
// their clients get 409 and resync.
//
// Threading: all state lives on one strand (`executor`); read() and remove()
// may be called from any thread, apply_transaction() must run on the strand
// (the replication stream shares it).
#pragma once

#include <libpq-fe.h>

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <filesystem>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <unordered_map>

#include "pg/connection_pool.h"
#include "replication/transaction.h"
#include "shapes/shape.h"
#include "shapes/shape_index.h"
#include "shapes/shape_service.h"

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
};

// Rows of a shape from a direct query (degraded mode); injected so the
// shapes core does not depend on how queries are pooled and capped.
using FallbackRows =
    std::function<boost::asio::awaitable<Result<std::shared_ptr<const SnapshotRows>>>(
        const ShapeDefinition& definition)>;

class ShapeRegistry : public ShapeService, public std::enable_shared_from_this<ShapeRegistry> {
 public:
  ShapeRegistry(boost::asio::any_io_executor executor, std::shared_ptr<pg::ConnectionPool> pool,
                ShapeRegistryOptions options);
  ~ShapeRegistry() override;

  std::function<void()> read(ShapeDefinitionRequest definition, ReadRequest request,
                             std::function<void(ReadOutcome)> done) override;
  void remove(ShapeDefinitionRequest definition, std::optional<std::string> handle,
              std::function<void(Result<DeleteOutcome>)> done) override;

  // Degraded mode. With replication unavailable, every shape being read is
  // refreshed from direct queries (diffed into its log) once per poll
  // interval, and responses carry the fallback flag. On the strand.
  void set_fallback_source(FallbackRows rows) { fallback_rows_ = std::move(rows); }
  void set_serving_mode(bool fallback);
  // Refreshes every shape once (e.g. after the slot was re-created and the
  // stream restarted past a gap). On the strand.
  void refresh_all();

  // Loads the shapes saved under options.shapes_dir (before serving).
  // Returns how many came back; unreadable or invalid ones are logged with
  // their path and the reason and moved to quarantine_dir() (never fatal,
  // never served: their clients get 409 and refetch).
  Result<std::size_t> load();
  static std::filesystem::path quarantine_dir(const std::filesystem::path& shapes_dir) {
    return shapes_dir / ".quarantine";
  }

  // Called (on the strand) with the end LSN up to which every transaction is
  // durably handled by every shape: what the slot may confirm.
  void on_durable(std::function<void(replication::Lsn)> callback) {
    on_durable_ = std::move(callback);
  }

  // On the strand: applies a committed transaction to every shape it touches.
  void apply_transaction(const replication::Transaction& transaction);
  // On the strand: the stream is idle at `wal_end` (every earlier commit was
  // delivered). Advances up-to-date's global_last_seen_lsn.
  void note_progress(replication::Lsn wal_end);

  // Answers every parked read now (up-to-date at its offset); for shutdown.
  void release_waiters();

  std::size_t shape_count() const;  // on the strand
  // From any thread, for /v1/status and /metrics.
  std::uint64_t shapes_held() const { return shapes_held_.load(std::memory_order_relaxed); }
  std::uint64_t parked_reads() const { return parked_reads_.load(std::memory_order_relaxed); }
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
  // Of shapes_held(): those whose first snapshot is under way (the rest serve).
  std::uint64_t shapes_snapshotting() const {
    return shapes_snapshotting_.load(std::memory_order_relaxed);
  }
  // From any thread: whether shape logs can be written and synced now.
  struct StorageState {
    bool failing = false;
    std::string error;
    std::chrono::system_clock::time_point since;
    replication::Lsn durable_lsn = 0;  // last end LSN handed to on_durable
  };
  StorageState storage_state() const;

  // Starts the periodic removal of idle shapes (on the strand).
  void start_housekeeping();

  // Shutdown, before the io_context goes: a running compaction gives up
  // (its half-written file is removed; the shape's files stay as they were),
  // then the compaction and sync threads are joined. Nothing runs on them
  // afterwards. Blocks briefly; call it on the strand, once the replication
  // stream has stopped. The destructor calls it too.
  void stop();

 private:
  struct Ticket;
  struct Waiter;
  struct SnapshotRun;

  boost::asio::awaitable<void> serve(ShapeDefinitionRequest definition, ReadRequest request,
                                     std::shared_ptr<Ticket> ticket);
  bool serve_known(const ShapeDefinitionRequest& definition, const ReadRequest& request,
                   const std::shared_ptr<Ticket>& ticket);
  void answer_or_park(const std::shared_ptr<Shape>& shape, const ReadRequest& request,
                      const std::shared_ptr<Ticket>& ticket);
  std::shared_ptr<Shape> known_shape(const ShapeDefinitionRequest& definition,
                                     const ReadRequest& request) const;
  boost::asio::awaitable<std::shared_ptr<Shape>> find_shape(
      const ShapeDefinitionRequest& definition, const ReadRequest& request,
      const std::shared_ptr<Ticket>& ticket);
  boost::asio::awaitable<Result<std::shared_ptr<const TableSchema>>> table_schema(
      const std::string& schema, const std::string& table);
  std::shared_ptr<Shape> shape_for(const ShapeDefinition& definition);
  boost::asio::awaitable<void> take_snapshot(std::shared_ptr<Shape> shape);
  // Waits for the shape's initial query; false if it failed or the read was
  // cancelled meanwhile (the last reader to leave cancels the query).
  boost::asio::awaitable<bool> wait_until_ready(const std::shared_ptr<Shape>& shape,
                                                const std::shared_ptr<Ticket>& ticket);
  // Nobody waits for a snapshotting shape any more: its initial query is
  // cancelled (PQcancel) or, if still queued for its table's share, dropped.
  void note_reader_gone(const std::shared_ptr<Shape>& shape);
  std::size_t snapshot_share() const;
  boost::asio::awaitable<bool> wait_for_table_slot(const std::string& table,
                                                   const std::shared_ptr<Shape>& shape,
                                                   SnapshotRun& run);
  void release_table_slot(const std::string& table);
  void wake_table_queue(const std::string& table);  // the next waiter, if the share allows
  // An answer now, or nothing: park, or (`disk` set) read older operations
  // off the strand with read_from_disk().
  std::optional<ReadOutcome> read_now(Shape& shape, const ReadRequest& request,
                                      std::shared_ptr<LogDiskRead>* disk);
  void read_from_disk(const std::shared_ptr<Shape>& shape, std::shared_ptr<LogDiskRead> plan,
                      const std::shared_ptr<Ticket>& ticket);
  // Parks a live read until the shape's log grows past `after` or `deadline`.
  void park(const std::shared_ptr<Shape>& shape, LogOffset after,
            const std::shared_ptr<Ticket>& ticket, std::chrono::steady_clock::time_point deadline);
  void wake_waiters(const std::shared_ptr<Shape>& shape);
  void arm_live_deadline(std::chrono::steady_clock::time_point deadline);
  void expire_waiters();
  void rotate(const std::shared_ptr<Shape>& shape, const char* why);
  void forget(const std::shared_ptr<Shape>& shape);
  std::string new_handle(const std::string& key);
  // The shapes' rows: opened by load(), or on first use.
  static constexpr const char* kStateDir = "state";
  std::shared_ptr<StateStore> state_store();
  Result<void> open_state_store();
  void drop_orphan_states(const std::set<std::uint64_t>& loaded);
  void schedule_flush();
  void flush();
  using PendingSync = storage::ShapeFiles::PendingSync;
  void finish_flush(std::vector<std::pair<std::shared_ptr<Shape>, PendingSync>> synced,
                    replication::Lsn durable_lsn, std::optional<Error> failure);
  void note_write_failure(const std::shared_ptr<Shape>& shape, const Error& error);
  void note_compaction_failure(const std::shared_ptr<Shape>& shape, const Error& error,
                               const char* what);
  void remove_idle_shapes();
  void verify_snapshot(const std::shared_ptr<Shape>& shape);
  void start_compaction(const std::shared_ptr<Shape>& shape);
  void store_snapshot(const std::shared_ptr<Shape>& shape);
  void finish_compaction(const std::shared_ptr<Shape>& shape,
                         const std::shared_ptr<ShapeCompaction>& compaction,
                         std::optional<Error> failure,
                         std::chrono::steady_clock::time_point started);
  boost::asio::awaitable<void> fallback_loop();
  boost::asio::awaitable<void> refresh(std::shared_ptr<Shape> shape);
  // Degraded mode: remembers whether the shape's last fallback query was
  // refused for the cap ("overloaded"); its readers get 503 meanwhile.
  void note_refusal(const std::shared_ptr<Shape>& shape, const Error& outcome);
  std::optional<Unavailable> refusal(const std::shared_ptr<Shape>& shape) const;
  // The initial query of a shape failed: remembers a failure caused by the
  // request itself for the readers waiting on that shape.
  void note_query_failure(const std::shared_ptr<Shape>& shape, const Error& error);
  std::optional<InvalidRequest> query_rejection(const std::shared_ptr<Shape>& shape) const;
  std::string up_to_date_json() const;
  ReadResult result(const Shape& shape, LogOffset offset, std::shared_ptr<const std::string> body,
                    bool up_to_date) const;

  boost::asio::any_io_executor executor_;
  std::shared_ptr<pg::ConnectionPool> pool_;
  std::shared_ptr<StateStore> state_store_;
  ShapeRegistryOptions options_;

  std::map<std::string, std::shared_ptr<const TableSchema>> tables_;  // by table_key
  std::unordered_map<std::string, std::shared_ptr<Shape>> by_key_;
  std::unordered_map<std::string, std::shared_ptr<Shape>> by_handle_;
  std::map<std::string, std::vector<std::shared_ptr<Shape>>> by_table_;
  // Routes each table's changes to the shapes they may concern.
  ShapeIndex shape_index_;
  std::map<std::shared_ptr<Shape>, std::list<std::shared_ptr<Waiter>>> waiters_;
  std::map<const Shape*, std::list<boost::asio::steady_timer*>> ready_waiters_;
  // Initial queries running per table (by table_key) and those waiting for
  // the table's fair share (snapshot_share()).
  struct TableSlots {
    std::size_t running = 0;
    std::list<boost::asio::steady_timer*> queue;
  };
  std::map<std::string, TableSlots> table_slots_;
  // Per snapshotting shape: what cancels its initial query.
  struct SnapshotRun {
    bool abandoned = false;                          // nobody waits any more
    boost::asio::steady_timer* slot_wait = nullptr;  // queued for the table's share
    std::shared_ptr<PGcancel> cancel;                // the query running now
  };
  std::map<const Shape*, SnapshotRun> snapshot_runs_;
  // PQcancel blocks (it connects to the server): sent from here.
  boost::asio::thread_pool cancel_thread_{1};
  // The one timer for parked reads' deadlines, armed for the earliest.
  std::unique_ptr<boost::asio::steady_timer> deadline_timer_;
  bool deadline_armed_ = false;
  std::chrono::steady_clock::time_point deadline_at_;
  // global_last_seen_lsn: after every delivered operation, before any to come.
  // A refresh group is logged at last_seen_lsn_ + 1 read when it is applied,
  // not when its query started: a keepalive may raise last_seen_lsn_ while
  // the query runs (replication back, status not yet live), and a group
  // logged below a reported value is dropped by pglite-sync. It stays below
  // the commit LSN of any transaction still to stream (those start at or
  // after the keepalive's wal_end; a commit's WAL takes tens of bytes).
  replication::Lsn last_seen_lsn_ = 0;
  std::int64_t last_handle_micros_ = 0;

  // Durability: shapes with operations not yet synced, and the end LSN of
  // the last transaction applied (acknowledged once everything is synced).
  std::set<std::shared_ptr<Shape>> dirty_;
  replication::Lsn applied_end_lsn_ = 0;
  bool flush_scheduled_ = false;
  bool sync_in_flight_ = false;  // an fdatasync batch runs on sync_thread_
  // A flush was asked for during the sync in flight (maybe for transactions
  // that changed no shape, which leave dirty_ empty but must be acknowledged).
  bool flush_after_sync_ = false;
  boost::asio::thread_pool sync_thread_{1};
  // Compactions fold and write big files here, off the strand and apart
  // from the syncs that acknowledge replication.
  boost::asio::thread_pool compaction_thread_{1};
  // Reads of operations older than a shape's in-memory tail (catch-up).
  boost::asio::thread_pool read_pool_{1};
  // Set by stop(): compactions in flight give up.
  std::shared_ptr<std::atomic<bool>> stopping_ = std::make_shared<std::atomic<bool>>(false);
  bool stopped_ = false;
  // Back-off after a failed compaction, per shape.
  struct CompactionRetry {
    std::weak_ptr<Shape> shape;
    std::chrono::seconds delay{0};
    std::chrono::steady_clock::time_point not_before;
  };
  std::map<const Shape*, CompactionRetry> compaction_retry_;
  // Writing shape logs fails (e.g. disk full): retried on this timer.
  bool write_failing_ = false;
  bool write_retry_armed_ = false;
  std::unique_ptr<boost::asio::steady_timer> write_retry_;
  std::function<void(replication::Lsn)> on_durable_;
  std::map<const Shape*, std::chrono::steady_clock::time_point> last_read_;
  std::unique_ptr<boost::asio::steady_timer> housekeeping_;
  FallbackRows fallback_rows_;
  bool fallback_mode_ = false;
  bool fallback_loop_running_ = false;
  // Shapes whose last fallback query was refused, with the answer to give.
  std::map<const Shape*, std::pair<std::weak_ptr<Shape>, Unavailable>> refusals_;
  // Shapes whose initial query failed for the request's own fault, with the
  // 400 to give their waiting readers (see note_query_failure).
  std::map<const Shape*, std::pair<std::weak_ptr<Shape>, InvalidRequest>> query_rejections_;
  std::atomic<std::uint64_t> shapes_held_{0};
  std::atomic<std::uint64_t> parked_reads_{0};
  std::atomic<std::uint64_t> shapes_snapshotting_{0};
  mutable std::mutex storage_mu_;
  StorageState storage_;  // guarded by storage_mu_
  // On the strand: the writes/syncs failed (error) or work again (nullopt).
  void set_storage_failure(std::optional<Error> failure);
  void update_gauges();
};

}  // namespace shapeproxy::shapes

// LogDurability: group commit of shape logs, and what the replication slot
// may confirm. Shapes whose logs grew are marked dirty; one flush per burst
// hands their records to the OS on the strand, then fdatasyncs them on the
// sync thread (replication keeps flowing meanwhile); once a batch is durable
// the end LSN of every transaction applied before it is reported through
// on_durable, and each synced shape is offered to `synced` (compaction).
// A write that fails (disk full) keeps its records queued and is retried
// every second; nothing past it is acknowledged, so PostgreSQL keeps the WAL.
// The shapes' rows changed by the synced records are committed to the state
// store once those records are durable, never before (a store that lags its
// log is caught up from the log at load; one ahead of it could not be).
//
// Threading: on the registry's strand (every method asserts it), except
// storage_state(), from any thread; the fdatasync calls run on the sync
// thread, joined by stop().
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "replication/transaction.h"
#include "shapes/lifetime.h"
#include "shapes/shape.h"

namespace shapeproxy::shapes {

// Whether shape logs can be written and synced now (for /v1/status and
// /metrics).
struct StorageState {
  bool failing = false;
  // Shape logs fail (true: nothing more is acknowledged to the slot), or
  // only the row store (false).
  bool holds_slot = false;
  std::string error;
  std::chrono::system_clock::time_point since;
  replication::Lsn durable_lsn = 0;  // last end LSN handed to on_durable
};

// A shape's log end as of a sealed batch (unset: no operations yet).
struct DurableEnd {
  std::shared_ptr<Shape> shape;
  std::optional<LogOffset> end;
};

struct LogDurabilityHooks {
  // The end LSN up to which every transaction is durably handled by every
  // shape: what the slot may confirm.
  std::function<void(replication::Lsn)> on_durable;
  // A shape's records up to now are durable (e.g. time to compact it).
  std::function<void(const std::shared_ptr<Shape>&)> synced;
  // Whether some shape still holds transactions that are not on disk (it is
  // taking its snapshot): then nothing is acknowledged yet.
  std::function<bool()> holds_buffered;
  // Followers (rfc/0003). `sealing` is asked when a batch's records are
  // handed to the OS (a value to keep with the batch: the last LSN seen);
  // `durable` gets it back once the batch is durable, with each synced
  // shape's end as of the sealing. Batches are reported in order.
  std::function<std::uint64_t()> sealing;
  std::function<void(const std::vector<DurableEnd>& ends, std::uint64_t sealed)> durable;
  // Tests: true leaves a synced shape's rows out of the state store (as a
  // process killed between the log's fdatasync and the store's write).
  std::function<bool()> skip_state_commit;
};

class LogDurability {
 public:
  LogDurability(boost::asio::any_io_executor executor, std::shared_ptr<Clock> clock,
                Lifetime lifetime, LogDurabilityHooks hooks);

  // The shape's log grew (a no-op for a shape kept in memory only).
  void mark_dirty(const std::shared_ptr<Shape>& shape);
  // A transaction ending at `end_lsn` was applied to every shape.
  void note_applied(replication::Lsn end_lsn);
  // Flushes soon (posted: transactions delivered in one burst share a sync).
  void schedule_flush();
  // The shape is gone: nothing of it is flushed any more.
  void forget(const std::shared_ptr<Shape>& shape);
  // Writing shape logs currently fails (retried every second).
  bool write_failing() const { return write_failing_; }
  // From any thread.
  StorageState storage_state() const;
  // Shutdown: a sync in flight finishes its fdatasync calls; the sync
  // thread is joined. Nothing is retried afterwards.
  void stop();

 private:
  using PendingSync = storage::ShapeFiles::PendingSync;
  using Batch = std::vector<std::pair<std::shared_ptr<Shape>, PendingSync>>;

  void flush();
  void finish_flush(Batch synced, replication::Lsn durable_lsn, std::optional<Error> failure,
                    std::vector<DurableEnd> ends = {}, std::uint64_t sealed = 0);
  void note_write_failure(const std::shared_ptr<Shape>& shape, const Error& error);
  // Flushes again a second from now (once, however often it is asked).
  void retry_in_a_second();
  // The writes/syncs failed (error; `holds_slot`: of shape logs) or work
  // again (nullopt).
  void set_storage_failure(std::optional<Error> failure, bool holds_slot = true);

  boost::asio::any_io_executor executor_;
  std::shared_ptr<Clock> clock_;
  Lifetime lifetime_;
  LogDurabilityHooks hooks_;
  // Shapes with operations not yet synced, and the end LSN of the last
  // transaction applied (acknowledged once everything is synced).
  std::set<std::shared_ptr<Shape>> dirty_;
  replication::Lsn applied_end_lsn_ = 0;
  bool flush_scheduled_ = false;
  bool sync_in_flight_ = false;  // an fdatasync batch runs on sync_thread_
  // A flush was asked for during the sync in flight (maybe for transactions
  // that changed no shape, which leave dirty_ empty but must be acknowledged).
  bool flush_after_sync_ = false;
  boost::asio::thread_pool sync_thread_{1};
  bool stopped_ = false;
  // Writing shape logs, syncing them or storing their rows fails (e.g. disk
  // full): retried on this timer.
  bool write_failing_ = false;
  bool store_failing_ = false;
  bool write_retry_armed_ = false;
  std::unique_ptr<ClockTimer> write_retry_;
  mutable std::mutex storage_mu_;
  StorageState storage_;  // guarded by storage_mu_
};

}  // namespace shapeproxy::shapes

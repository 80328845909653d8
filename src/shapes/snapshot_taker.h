// SnapshotTaker: the initial snapshot of a new shape. Its files are created
// (when persisted), its table added to the publication, then its rows
// queried in a snapshot aligned with the replication stream (in degraded
// mode: a direct query like the others, capped, maybe from the standby).
// Reads of the shape wait in wait_until_ready() meanwhile. On failure the
// shape is dropped (`failed`); on success `ready` runs (persist what was
// buffered, wake readers, store the snapshot).
//
// In degraded mode a new shape's snapshot is rendered while its rows arrive
// (a SnapshotStream, rfc/0005): reads of its first chunk that may stream
// are answered with the stream as soon as its first piece is out. Its files
// are then created while the query runs (their fsyncs wait for the disk,
// not for the core that renders the rows).
//
// Costly initial queries are bounded: each statement runs under
// statement_timeout (options.timeout); one table runs at most its share of
// the pool's connections at once (the others wait, holding nothing), so
// other tables keep being served; and when every reader of a snapshotting
// shape has gone, its query is cancelled (PQcancel, sent from a small
// thread) or dropped from its table's queue. A failure caused by the
// request itself (SQLSTATE class 22, or the timeout) is remembered for the
// shape's waiting readers as a 400 (rejection()).
//
// Threading: on the registry's strand (every method asserts it); PQcancel
// runs on the cancel thread, joined by stop().
#pragma once

#include <libpq-fe.h>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <filesystem>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "common/wait_list.h"
#include "pg/connection_pool.h"
#include "shapes/fallback_refresher.h"
#include "shapes/lifetime.h"
#include "shapes/shape.h"
#include "shapes/shape_reader.h"
#include "shapes/snapshot_stream.h"

namespace shapeproxy::shapes {

struct SnapshotTakerOptions {
  std::string publication_name = "shapeproxy";
  // Where shape files are created; unset: in memory only.
  std::optional<std::filesystem::path> shapes_dir;
  // statement_timeout of each initial query (zero: no limit).
  std::chrono::milliseconds timeout{120'000};
  // Initial queries of one table running at once; zero: half the pool (at
  // least one).
  std::size_t table_share = 0;
};

struct SnapshotTakerHooks {
  std::function<void(const std::shared_ptr<Shape>&)> failed;
  std::function<void(const std::shared_ptr<Shape>&)> ready;
};

class SnapshotTaker {
 public:
  SnapshotTaker(boost::asio::any_io_executor executor, std::shared_ptr<pg::ConnectionPool> pool,
                SnapshotTakerOptions options, FallbackRefresher& fallback, Lifetime lifetime,
                SnapshotTakerHooks hooks);

  // Starts taking the snapshot of a shape just added to the catalog. An
  // exception escaping it is logged and fails the shape (`failed`).
  void start(std::shared_ptr<Shape> shape);
  // Waits while the shape takes its snapshot; whether it is ready after.
  // False too when the ticket is cancelled meanwhile (its client went away);
  // the last reader to leave cancels the query.
  // `streamable`: the read may be answered with the shape's stream; then the
  // wait also ends (true, the shape still snapshotting) once stream() is
  // started.
  boost::asio::awaitable<bool> wait_until_ready(const std::shared_ptr<Shape>& shape,
                                                const std::shared_ptr<ReadTicket>& ticket,
                                                bool streamable = false);
  // The stream of a snapshotting shape's first chunk, once started (null
  // when there is none or it has not started, or has failed).
  std::shared_ptr<SnapshotStream> stream(const std::shared_ptr<Shape>& shape) const;
  // The 400 for readers of a shape whose initial query failed for the
  // request's own fault (see above).
  std::optional<InvalidRequest> rejection(const std::shared_ptr<Shape>& shape) const;
  // The shape is gone: whoever waits for it stops waiting.
  void forget(const std::shared_ptr<Shape>& shape);
  // Shutdown: queued queries give up; the cancel thread is joined.
  void stop();

 private:
  // Per snapshotting shape: what cancels its initial query.
  struct Run {
    bool abandoned = false;                          // nobody waits any more
    boost::asio::steady_timer* slot_wait = nullptr;  // queued for the table's share
    std::shared_ptr<PGcancel> cancel;                // the query running now
  };
  // Initial queries running per table (by table_key) and those waiting for
  // the table's share.
  struct TableSlots {
    std::size_t running = 0;
    std::list<boost::asio::steady_timer*> queue;
  };

  boost::asio::awaitable<void> take(std::shared_ptr<Shape> shape,
                                    std::shared_ptr<const void> keep_alive);
  struct PendingQuery;
  // The fallback query of a new shape, run beside take() (see there).
  static boost::asio::awaitable<void> run_query(FallbackRefresher& fallback,
                                                std::shared_ptr<Shape> shape, RowsObserver on_rows,
                                                std::shared_ptr<PendingQuery> pending,
                                                std::shared_ptr<const void> keep_alive);
  // Waits while `table` runs its share of initial queries. False when the
  // shape is given up meanwhile (nobody waits, gone, or shutting down).
  boost::asio::awaitable<bool> wait_for_table_slot(const std::string& table,
                                                   const std::shared_ptr<Shape>& shape, Run& run);
  void release_table_slot(const std::string& table);
  void wake_table_queue(const std::string& table);  // the next waiter, if the share allows
  std::size_t table_share() const;
  // Nobody waits for a snapshotting shape any more: its initial query is
  // cancelled (PQcancel) or, if still queued for its table's share, dropped.
  void note_reader_gone(const std::shared_ptr<Shape>& shape);
  void note_query_failure(const std::shared_ptr<Shape>& shape, const Error& error);

  boost::asio::any_io_executor executor_;
  std::shared_ptr<pg::ConnectionPool> pool_;
  SnapshotTakerOptions options_;
  FallbackRefresher& fallback_;
  Lifetime lifetime_;
  SnapshotTakerHooks hooks_;
  bool stopped_ = false;
  // Reads waiting for a shape's first snapshot. A waiter leaves its list
  // however its wait ends (also a frame destroyed unresumed at shutdown), so
  // no list names a freed timer; an entry may be left empty, and is erased
  // when found so.
  std::map<const Shape*, WaitList> ready_waiters_;
  std::map<const Shape*, Run> runs_;
  // The streams of shapes rendering their snapshot while the rows arrive.
  std::map<const Shape*, std::shared_ptr<SnapshotStream>> streams_;
  std::map<std::string, TableSlots> table_slots_;
  // Shapes whose initial query failed for the request's own fault, with the
  // 400 to give their waiting readers.
  std::map<const Shape*, std::pair<std::weak_ptr<Shape>, InvalidRequest>> rejections_;
  // PQcancel blocks (it connects to the server): sent from here.
  boost::asio::thread_pool cancel_thread_{1};
};

}  // namespace shapeproxy::shapes

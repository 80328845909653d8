// FallbackRefresher: degraded mode of the shapes core. While replication is
// unavailable, every shape being read is brought up to date from a direct
// query (diffed into its log) once per poll interval, and responses carry the
// fallback flag. A query refused for the cap ("overloaded") is remembered per
// shape: its readers get 503 with retry-after until a later query succeeds.
//
// Threading: on the registry's strand (every method asserts it).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "common/clock.h"
#include "replication/transaction.h"
#include "shapes/lifetime.h"
#include "shapes/shape.h"
#include "shapes/shape_service.h"

namespace shapeproxy::shapes {

// Rows of a shape from a direct query (degraded mode); injected so the
// shapes core does not depend on how queries are pooled and capped.
// `on_rows` (may be empty) sees the rows while they arrive when this call
// runs the query itself; a call that joins a query under way, or reuses a
// recent result, gets only the whole result.
using FallbackRows =
    std::function<boost::asio::awaitable<Result<std::shared_ptr<const SnapshotRows>>>(
        const ShapeDefinition& definition, RowsObserver on_rows)>;

struct FallbackRefresherHooks {
  // The shapes to refresh in a poll started at `now`: those read since
  // `read_since` or with parked readers.
  std::function<std::vector<std::shared_ptr<Shape>>(Clock::time_point read_since)> active_shapes;
  // A refresh appended operations to `shape` (persist them, wake readers,
  // move global_last_seen_lsn past them).
  std::function<void(const std::shared_ptr<Shape>&)> grew;
  // Where a refresh group is logged, read when it is applied (not when its
  // query started: a keepalive may raise global_last_seen_lsn while the
  // query runs): above the last reported global_last_seen_lsn, so clients
  // that drop changes at or below it (pglite-sync) keep them, and below the
  // commit LSN of any transaction still to stream.
  std::function<replication::Lsn()> floor;
};

class FallbackRefresher {
 public:
  FallbackRefresher(boost::asio::any_io_executor executor, std::shared_ptr<Clock> clock,
                    Lifetime lifetime, FallbackRows rows, std::chrono::milliseconds poll_interval,
                    FallbackRefresherHooks hooks);

  // Whether there is a source of direct queries at all.
  bool has_source() const { return static_cast<bool>(rows_); }
  // Serving from direct queries (the responses' fallback flag).
  bool active() const { return active_; }
  // Enters or leaves degraded mode; entering starts the poll loop.
  void set_active(bool fallback);
  // Refreshes each of `shapes` once, one after the other.
  void refresh_all(std::vector<std::shared_ptr<Shape>> shapes);
  // One direct query of the shape's rows (e.g. its initial snapshot in
  // degraded mode); the caller notes a refusal with note_refusal().
  // `on_rows`: see FallbackRows.
  boost::asio::awaitable<Result<std::shared_ptr<const SnapshotRows>>> query(
      const ShapeDefinition& definition, RowsObserver on_rows = {});
  // Remembers whether the shape's last direct query was refused for the cap
  // (error code "overloaded"); any other outcome clears it.
  void note_refusal(const std::shared_ptr<Shape>& shape, const Error& outcome);
  // The answer for readers of a shape whose last query was refused.
  std::optional<Unavailable> refusal(const std::shared_ptr<Shape>& shape) const;

 private:
  // One poll: refreshes the active shapes, then waits for the next one.
  void start_round();
  boost::asio::awaitable<void> refresh(std::shared_ptr<Shape> shape);

  boost::asio::any_io_executor executor_;
  std::shared_ptr<Clock> clock_;
  Lifetime lifetime_;
  FallbackRows rows_;
  std::chrono::milliseconds poll_interval_;
  FallbackRefresherHooks hooks_;
  bool active_ = false;
  bool loop_running_ = false;
  std::unique_ptr<ClockTimer> pause_;  // between polls
  // Shapes whose last fallback query was refused, with the answer to give.
  std::map<const Shape*, std::pair<std::weak_ptr<Shape>, Unavailable>> refusals_;
};

}  // namespace shapeproxy::shapes

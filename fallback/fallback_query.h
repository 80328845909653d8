// What: FallbackQuery answers "the rows of this shape, as of one consistent
// snapshot" with direct queries, for serving shapes while replication is down.
// Why: in fallback every shape request would otherwise become a query, so a
// crowd of clients could finish off a struggling database. Concurrent calls
// for one shape share one query (single flight), a fresh result is reused for
// a short window, and distinct queries are capped (running + queued); calls
// beyond the cap are refused at once ("overloaded": 503 + retry-after). No
// query runs forever: the server cancels it past statement_timeout, and a
// client-side deadline drops a connection whose server stopped answering
// ("query_timeout").
#pragma once

#include <array>
#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "common/histogram.h"
#include "common/result.h"
#include "pg/connection_pool.h"
#include "shapes/fallback_refresher.h"
#include "shapes/shape.h"
#include "shapes/shape_definition.h"
#include "status/serving_gauges.h"

namespace shapeproxy::fallback {

struct FallbackQueryOptions {
  std::size_t max_in_flight = 4;  // distinct queries running at once (the pool size)
  std::size_t max_queued = 64;    // distinct queries waiting beyond that; more: refused
  std::chrono::milliseconds reuse_window{
      1000};                       // a result whose query began this recently is reused
  std::string source = "primary";  // "standby" when a separate connection string is used
  // The server cancels a fallback statement running longer than this (set as
  // the session's statement_timeout); zero: no limit.
  std::chrono::milliseconds statement_timeout{30'000};
  // With a statement_timeout: a query still unanswered this long after it is
  // abandoned on the client side (the connection is dropped), in case the
  // server cannot even cancel it (frozen, network gone).
  std::chrono::milliseconds abandon_grace{2'000};
  std::chrono::milliseconds connect_timeout{10'000};
};

class FallbackQuery : public std::enable_shared_from_this<FallbackQuery> {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  using SharedRows = std::shared_ptr<const shapes::SnapshotRows>;

  // `strand`: where all of this object's state lives; `pool` must be used from
  // that same strand only (create it with `strand` as its executor). It holds
  // connections to the primary, or to a hot standby (the caller decides).
  FallbackQuery(boost::asio::any_io_executor strand, std::shared_ptr<pg::ConnectionPool> pool,
                FallbackQueryOptions options, Clock clock = std::chrono::steady_clock::now);
  ~FallbackQuery();

  // The pool to give the constructor: max_in_flight connections to
  // `conninfo`, on `strand`, each with the options' statement_timeout.
  static std::shared_ptr<pg::ConnectionPool> make_pool(boost::asio::any_io_executor strand,
                                                       std::string conninfo,
                                                       const FallbackQueryOptions& options);

  // The rows of the shape (every column, table order) as of one consistent
  // snapshot. Callable from any executor; the caller resumes on its own.
  // Calls for a definition.key with a query under way (running or queued)
  // join it and get the same shared result; a cached result is pruned once
  // older than reuse_window. Failures are not cached.
  // Errors: code "overloaded" (the cap is reached: answer 503 + retry-after),
  // "query_timeout" (cancelled past statement_timeout, or abandoned),
  // "database_unavailable" (connect or query failed). Messages name no host,
  // user or SQL.
  // `on_rows` (may be empty) sees the rows while they arrive, on this
  // object's strand, when this call leads the query (shapes::FallbackRows).
  boost::asio::awaitable<Result<SharedRows>> rows(const shapes::ShapeDefinition& definition,
                                                  shapes::RowsObserver on_rows = {});

  // Thread-safe: the figures /v1/status and /metrics report.
  status::FallbackActivity activity() const;
  // Thread-safe: database queries issued since construction.
  std::uint64_t queries_started() const { return queries_started_.load(); }

 private:
  struct Flight;
  struct CachedRows {
    SharedRows rows;
    std::chrono::steady_clock::time_point taken;
  };

  boost::asio::awaitable<void> rows_on_strand(shapes::ShapeDefinition definition,
                                              shapes::RowsObserver on_rows,
                                              std::optional<Result<SharedRows>>& outcome);
  boost::asio::awaitable<Result<SharedRows>> lead(std::shared_ptr<Flight> flight,
                                                  const shapes::ShapeDefinition& definition,
                                                  const shapes::RowsObserver& on_rows);
  boost::asio::awaitable<Result<SharedRows>> query(const shapes::ShapeDefinition& definition,
                                                   const shapes::RowsObserver& on_rows);
  void release_slot();
  const SharedRows* fresh_cached(const std::string& key);
  void remember(const std::string& key, SharedRows rows,
                std::chrono::steady_clock::time_point taken);

  boost::asio::any_io_executor strand_;
  std::shared_ptr<pg::ConnectionPool> pool_;
  FallbackQueryOptions options_;
  Clock clock_;

  // Strand-only state.
  std::unordered_map<std::string, std::shared_ptr<Flight>> flights_;  // key -> query under way
  std::unordered_map<std::string, CachedRows> cache_;                 // key -> last result
  std::deque<std::shared_ptr<Flight>> slot_queue_;                    // leaders waiting for a slot
  std::size_t running_ = 0;

  // Published for activity() (any thread).
  std::atomic<std::uint64_t> running_gauge_{0};
  std::atomic<std::uint64_t> queued_gauge_{0};
  std::atomic<std::uint64_t> refused_total_{0};
  std::atomic<std::uint64_t> queries_started_{0};
  // Query durations by outcome: ok, query_timeout, database_unavailable.
  static constexpr std::array<const char*, 3> kOutcomes{"ok", "query_timeout",
                                                        "database_unavailable"};
  std::array<AtomicHistogram, kOutcomes.size()> durations_{AtomicHistogram(duration_bounds()),
                                                           AtomicHistogram(duration_bounds()),
                                                           AtomicHistogram(duration_bounds())};
  static std::vector<double> duration_bounds() {
    return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  }
};

// The registry's source of direct queries (ShapeRegistryHooks::fallback_rows):
// `query` while it lives, an error "stopped" once it is gone.
shapes::FallbackRows registry_source(std::weak_ptr<FallbackQuery> query);

}  // namespace shapeproxy::fallback

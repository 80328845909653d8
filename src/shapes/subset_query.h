// Subset snapshots (Electric's `subset__*` requests): a slice of a shape read
// by its own query in one REPEATABLE READ snapshot, answered as Electric's
// {"metadata":{xmin,xmax,xip_list,database_lsn,snapshot_mark},"data":[...]}.
// Why separate from the registry: a subset never enters the shape's log and
// needs no shape state; it reuses the where-clause module (parsed with
// libpg_query, literals and parameters bound, never pasted) and the catalog
// lookup of the snapshot machinery.
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>

#include "pg/connection_pool.h"
#include "shapes/pg_snapshot.h"
#include "shapes/shape_service.h"

namespace shapeproxy::pg {
class AsyncConnection;
}

namespace shapeproxy::shapes {

// A validated subset (see api/subset_params.h): limit > 0, offset >= 0,
// order_by set whenever limit or offset is.
struct SubsetRequest {
  std::optional<std::string> where;
  std::map<int, std::string> params;  // $n of `where`
  std::optional<std::string> order_by;
  std::optional<std::int64_t> limit;
  std::optional<std::int64_t> offset;
};

struct SubsetResult {
  PgSnapshot snapshot;       // the query's pg_current_snapshot()
  std::string database_lsn;  // decimal WAL position when the query began
  std::int64_t snapshot_mark = 0;
  std::size_t rows = 0;
  std::string body;  // the whole JSON object
};

// InvalidRequest's field is the subset field ("where", "order_by", "params").
using SubsetOutcome = std::variant<SubsetResult, InvalidRequest, Unavailable>;

// Runs the subset query of `shape` on `connection` (its own transaction).
boost::asio::awaitable<SubsetOutcome> query_subset(pg::AsyncConnection& connection,
                                                   const ShapeDefinitionRequest& shape,
                                                   const SubsetRequest& subset,
                                                   std::int64_t snapshot_mark);

// Runs subset queries from any thread, each on a connection of the primary
// pool, or of the fallback pool (a hot standby, when configured) while the
// proxy serves in fallback mode. At most `max_in_flight` run at once; more
// are refused at once (503 + retry-after) rather than piled up.
class SubsetQueries : public std::enable_shared_from_this<SubsetQueries> {
 public:
  // Both pools must be used on `strand` only (created with it).
  SubsetQueries(boost::asio::any_io_executor strand, std::shared_ptr<pg::ConnectionPool> primary,
                std::shared_ptr<pg::ConnectionPool> fallback, std::size_t max_in_flight);

  // `done` runs once, on the strand.
  void run(ShapeDefinitionRequest shape, SubsetRequest subset, bool fallback,
           std::function<void(SubsetOutcome)> done);

 private:
  boost::asio::awaitable<SubsetOutcome> run_one(ShapeDefinitionRequest shape, SubsetRequest subset,
                                                bool fallback);

  boost::asio::any_io_executor strand_;
  std::shared_ptr<pg::ConnectionPool> primary_;
  std::shared_ptr<pg::ConnectionPool> fallback_;
  std::size_t max_in_flight_;
  std::atomic<std::size_t> in_flight_{0};
};

}  // namespace shapeproxy::shapes

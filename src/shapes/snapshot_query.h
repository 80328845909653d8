// The initial query of a shape: its rows as one consistent REPEATABLE READ
// snapshot, together with that snapshot (pg_current_snapshot()) so the
// replication stream can be lined up with it. The where clause goes in as
// rendered SQL with bound parameters, never pasted user text.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <chrono>

#include "common/result.h"
#include "shapes/shape.h"

namespace shapeproxy::pg {
class AsyncConnection;
}

namespace shapeproxy::shapes {

// `statement_timeout` (zero: the session's setting) bounds each statement of
// the query (SET LOCAL): a costly where clause fails with SQLSTATE 57014
// instead of holding the connection.
//
// `on_rows` (optional): the rows are read in single-row mode and passed to
// it as they arrive, batch by batch, on the connection's executor, before
// the whole result is returned (rfc/0005); the rows it saw belong to a
// failed query when an error is returned.
boost::asio::awaitable<Result<SnapshotRows>> query_snapshot(
    pg::AsyncConnection& connection, const ShapeDefinition& definition,
    std::chrono::milliseconds statement_timeout = std::chrono::milliseconds(0),
    const RowsObserver& on_rows = {});

}  // namespace shapeproxy::shapes

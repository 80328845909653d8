// A libpq connection driven by Boost.Asio: its socket is watched by the event
// loop (stream_descriptor::async_wait) so that no thread ever blocks on the
// database. Use from C++20 coroutines on one strand/executor.
#pragma once

#include <libpq-fe.h>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "pg/connection.h"

namespace shapeproxy::pg {

class AsyncConnection {
 public:
  // Non-blocking connect (PQconnectStart/PQconnectPoll) within `timeout`.
  static boost::asio::awaitable<Result<std::unique_ptr<AsyncConnection>>> connect(
      boost::asio::any_io_executor executor, std::string conninfo,
      std::chrono::milliseconds timeout = std::chrono::seconds(10));

  ~AsyncConnection();
  AsyncConnection(const AsyncConnection&) = delete;
  AsyncConnection& operator=(const AsyncConnection&) = delete;

  // Simple-query protocol. Several statements allowed; returns the last
  // result, or the first error. COPY results are returned as-is
  // (PGRES_COPY_BOTH for START_REPLICATION) without draining.
  boost::asio::awaitable<Result<ResultPtr>> query(std::string sql);
  // Extended protocol with text parameters (not on replication connections).
  boost::asio::awaitable<Result<ResultPtr>> query_params(
      std::string sql, std::vector<std::optional<std::string>> params);

  // query_params() in single-row mode: `on_rows` gets the rows as they
  // arrive, one call per batch read from the socket (each result holds one
  // row, PGRES_SINGLE_TUPLE), on this connection's executor. Returns the
  // closing result (PGRES_TUPLES_OK, no rows) or the first error; rows
  // passed before an error belong to a failed query.
  using RowsCallback = std::function<void(std::vector<ResultPtr>& rows)>;
  boost::asio::awaitable<Result<ResultPtr>> query_params_rows(
      std::string sql, std::vector<std::optional<std::string>> params, RowsCallback on_rows);

  // Waits until the socket is readable, then PQconsumeInput. An error means
  // the connection is gone.
  boost::asio::awaitable<Result<void>> wait_readable();
  // Flushes libpq's output buffer, waiting for writability as needed.
  boost::asio::awaitable<Result<void>> flush();
  // Cancels pending waits (used to stop a reader).
  void cancel();

  PGconn* native() const { return conn_.get(); }
  boost::asio::any_io_executor get_executor() { return socket_.get_executor(); }

 private:
  AsyncConnection(boost::asio::any_io_executor executor, ConnPtr conn);
  // Both query_params() flavours; `on_rows` (may be null): single-row mode.
  boost::asio::awaitable<Result<ResultPtr>> send_params(
      std::string sql, std::vector<std::optional<std::string>> params, const RowsCallback* on_rows);
  // `on_rows`: single-row mode (see query_params_rows()).
  boost::asio::awaitable<Result<ResultPtr>> collect_results(const RowsCallback* on_rows = nullptr);

  ConnPtr conn_;
  boost::asio::posix::stream_descriptor socket_;
};

}  // namespace shapeproxy::pg

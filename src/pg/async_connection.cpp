#include "pg/async_connection.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <unistd.h>

#include "common/error_codes.h"
#include "common/no_throw.h"

namespace shapeproxy::pg {
namespace asio = boost::asio;
using asio::posix::stream_descriptor;
using namespace asio::experimental::awaitable_operators;

namespace {

// Waits for `fd` to become ready in direction `wait`, or for the deadline.
// Borrows the descriptor: libpq owns and closes it.
asio::awaitable<Result<void>> wait_socket(asio::any_io_executor executor, int fd,
                                          stream_descriptor::wait_type wait,
                                          asio::steady_timer& deadline) {
  stream_descriptor socket(executor, ::dup(fd));
  auto outcome = co_await (socket.async_wait(wait, kNoThrow) || deadline.async_wait(kNoThrow));
  if (outcome.index() == 1) {
    co_return Error{"connect_timeout", "timed out connecting to PostgreSQL",
                    "check that the server is reachable and accepting connections"};
  }
  auto [ec] = std::get<0>(outcome);
  if (ec)
    co_return Error{"connection_failed", "waiting for the PostgreSQL socket: " + ec.message(), ""};
  co_return Result<void>{};
}

}  // namespace

asio::awaitable<Result<std::unique_ptr<AsyncConnection>>> AsyncConnection::connect(
    asio::any_io_executor executor, std::string conninfo, std::chrono::milliseconds timeout) {
  ConnPtr conn(PQconnectStart(conninfo.c_str()));
  if (!conn || PQstatus(conn.get()) == CONNECTION_BAD) {
    co_return error_from_connection(conn.get());
  }
  asio::steady_timer deadline(executor, timeout);
  for (;;) {
    PostgresPollingStatusType status = PQconnectPoll(conn.get());
    if (status == PGRES_POLLING_OK) break;
    if (status == PGRES_POLLING_FAILED) co_return error_from_connection(conn.get());
    auto wait = status == PGRES_POLLING_READING ? stream_descriptor::wait_read
                                                : stream_descriptor::wait_write;
    auto ready = co_await wait_socket(executor, PQsocket(conn.get()), wait, deadline);
    if (!ready) co_return ready.error();
  }
  if (PQsetnonblocking(conn.get(), 1) != 0) co_return error_from_connection(conn.get());
  co_return std::unique_ptr<AsyncConnection>(new AsyncConnection(executor, std::move(conn)));
}

AsyncConnection::AsyncConnection(asio::any_io_executor executor, ConnPtr conn)
    : conn_(std::move(conn)), socket_(executor, ::dup(PQsocket(conn_.get()))) {}

AsyncConnection::~AsyncConnection() = default;

void AsyncConnection::cancel() { socket_.cancel(); }

asio::awaitable<Result<void>> AsyncConnection::wait_readable() {
  auto [ec] = co_await socket_.async_wait(stream_descriptor::wait_read, kNoThrow);
  if (ec == asio::error::operation_aborted)
    co_return Error{std::string(error_codes::kCancelled), "operation cancelled", ""};
  if (ec) co_return Error{"connection_lost", "PostgreSQL socket error: " + ec.message(), ""};
  if (PQconsumeInput(conn_.get()) == 0)
    co_return error_from_connection(conn_.get(), "connection_lost");
  co_return Result<void>{};
}

asio::awaitable<Result<void>> AsyncConnection::flush() {
  for (;;) {
    int pending = PQflush(conn_.get());
    if (pending == 0) co_return Result<void>{};
    if (pending < 0) co_return error_from_connection(conn_.get(), "connection_lost");
    auto [ec] = co_await socket_.async_wait(stream_descriptor::wait_write, kNoThrow);
    if (ec) co_return Error{"connection_lost", "PostgreSQL socket error: " + ec.message(), ""};
  }
}

asio::awaitable<Result<ResultPtr>> AsyncConnection::query(std::string sql) {
  if (PQsendQuery(conn_.get(), sql.c_str()) == 0) {
    co_return error_from_connection(conn_.get(), "connection_lost");
  }
  auto flushed = co_await flush();
  if (!flushed) co_return flushed.error();
  co_return co_await collect_results();
}

asio::awaitable<Result<ResultPtr>> AsyncConnection::query_params(
    std::string sql, std::vector<std::optional<std::string>> params) {
  co_return co_await send_params(std::move(sql), std::move(params), nullptr);
}

asio::awaitable<Result<ResultPtr>> AsyncConnection::query_params_rows(
    std::string sql, std::vector<std::optional<std::string>> params, RowsCallback on_rows) {
  co_return co_await send_params(std::move(sql), std::move(params), &on_rows);
}

asio::awaitable<Result<ResultPtr>> AsyncConnection::send_params(
    std::string sql, std::vector<std::optional<std::string>> params, const RowsCallback* on_rows) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
  if (PQsendQueryParams(conn_.get(), sql.c_str(), static_cast<int>(values.size()), nullptr,
                        values.data(), nullptr, nullptr, 0) == 0) {
    co_return error_from_connection(conn_.get(), "connection_lost");
  }
  if (on_rows && PQsetSingleRowMode(conn_.get()) == 0)
    co_return error_from_connection(conn_.get(), "connection_lost");
  auto flushed = co_await flush();
  if (!flushed) co_return flushed.error();
  co_return co_await collect_results(on_rows);
}

asio::awaitable<Result<ResultPtr>> AsyncConnection::collect_results(const RowsCallback* on_rows) {
  ResultPtr last;
  std::optional<Error> first_error;
  std::vector<ResultPtr> rows;  // single-row results read since the last callback
  for (;;) {
    while (PQisBusy(conn_.get())) {
      if (!rows.empty()) {
        (*on_rows)(rows);  // what one read brought, before waiting for more
        rows.clear();
      }
      auto readable = co_await wait_readable();
      if (!readable) co_return readable.error();
    }
    ResultPtr result(PQgetResult(conn_.get()));
    if (!result) break;
    if (on_rows && PQresultStatus(result.get()) == PGRES_SINGLE_TUPLE) {
      if (!first_error) rows.push_back(std::move(result));
      continue;
    }
    if (!rows.empty()) {
      (*on_rows)(rows);
      rows.clear();
    }
    switch (PQresultStatus(result.get())) {
      case PGRES_COPY_BOTH:
      case PGRES_COPY_OUT:
      case PGRES_COPY_IN:
        co_return result;  // the caller drives the COPY
      case PGRES_COMMAND_OK:
      case PGRES_TUPLES_OK:
      case PGRES_EMPTY_QUERY:
        last = std::move(result);
        break;
      default:
        if (!first_error) first_error = error_from_result(result.get());
        break;
    }
  }
  if (first_error) co_return *first_error;
  if (!last) co_return error_from_connection(conn_.get(), "connection_lost");
  co_return last;
}

}  // namespace shapeproxy::pg

// A small pool of AsyncConnections to one database, for catalog lookups and
// snapshot queries. At most `max_connections` are open; callers beyond that
// wait their turn. A connection that failed is dropped, not reused.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <deque>
#include <memory>
#include <string>

#include "common/wait_list.h"
#include "pg/async_connection.h"

namespace shapeproxy::pg {

class ConnectionPool : public std::enable_shared_from_this<ConnectionPool> {
 public:
  // Use from one executor (strand) only. `session_sql` (if not empty) runs
  // once on each new connection before its first loan, e.g. to set a
  // statement_timeout; a connection on which it fails is not lent.
  ConnectionPool(boost::asio::any_io_executor executor, std::string conninfo,
                 std::size_t max_connections,
                 std::chrono::milliseconds connect_timeout = std::chrono::seconds(10),
                 std::string session_sql = {});

  // A connection on loan; returned to the pool when destroyed.
  class Lease {
   public:
    Lease(std::shared_ptr<ConnectionPool> pool, std::unique_ptr<AsyncConnection> connection);
    Lease(Lease&&) noexcept = default;
    Lease& operator=(Lease&&) noexcept = default;
    ~Lease();
    AsyncConnection& operator*() const { return *connection_; }
    AsyncConnection* operator->() const { return connection_.get(); }

   private:
    std::shared_ptr<ConnectionPool> pool_;
    std::unique_ptr<AsyncConnection> connection_;
  };

  boost::asio::awaitable<Result<Lease>> acquire();

  std::size_t open_connections() const { return open_; }
  std::size_t max_connections() const { return max_connections_; }

 private:
  void release(std::unique_ptr<AsyncConnection> connection);

  boost::asio::any_io_executor executor_;
  std::string conninfo_;
  std::size_t max_connections_;
  std::chrono::milliseconds connect_timeout_;
  std::string session_sql_;
  std::size_t open_ = 0;
  std::deque<std::unique_ptr<AsyncConnection>> idle_;
  WaitList waiters_;  // callers waiting for a free connection
};

}  // namespace shapeproxy::pg

#include "pg/connection_pool.h"

namespace shapeproxy::pg {
namespace asio = boost::asio;

ConnectionPool::ConnectionPool(asio::any_io_executor executor, std::string conninfo,
                               std::size_t max_connections,
                               std::chrono::milliseconds connect_timeout, std::string session_sql)
    : executor_(std::move(executor)),
      conninfo_(std::move(conninfo)),
      max_connections_(max_connections == 0 ? 1 : max_connections),
      connect_timeout_(connect_timeout),
      session_sql_(std::move(session_sql)) {}

ConnectionPool::Lease::Lease(std::shared_ptr<ConnectionPool> pool,
                             std::unique_ptr<AsyncConnection> connection)
    : pool_(std::move(pool)), connection_(std::move(connection)) {}

ConnectionPool::Lease::~Lease() {
  if (pool_ && connection_) pool_->release(std::move(connection_));
}

asio::awaitable<Result<ConnectionPool::Lease>> ConnectionPool::acquire() {
  auto self = shared_from_this();
  for (;;) {
    if (!idle_.empty()) {
      auto connection = std::move(idle_.front());
      idle_.pop_front();
      co_return Lease(self, std::move(connection));
    }
    if (open_ < max_connections_) {
      ++open_;
      auto connected = co_await AsyncConnection::connect(executor_, conninfo_, connect_timeout_);
      if (connected && !session_sql_.empty()) {
        auto set_up = co_await (*connected)->query(session_sql_);
        if (!set_up) connected = set_up.error();
      }
      if (!connected) {
        --open_;
        waiters_.wake_one();  // the slot is free again
        co_return connected.error();
      }
      co_return Lease(self, std::move(connected).value());
    }
    co_await waiters_.wait(executor_);
  }
}

void ConnectionPool::release(std::unique_ptr<AsyncConnection> connection) {
  bool healthy = PQstatus(connection->native()) == CONNECTION_OK &&
                 PQtransactionStatus(connection->native()) == PQTRANS_IDLE;
  if (healthy) {
    idle_.push_back(std::move(connection));
  } else {
    --open_;
  }
  waiters_.wake_one();
}

}  // namespace shapeproxy::pg

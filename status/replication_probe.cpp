#include "status/replication_probe.h"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <exception>
#include <optional>
#include <utility>
#include <vector>

#include "common/no_throw.h"
#include "pg/async_connection.h"
#include "pg/lsn.h"

namespace shapeproxy::status {
namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;

namespace {

constexpr const char* kHealthQuery =
    "SELECT pg_current_wal_lsn()::text, "
    "(SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1), "
    "(SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1)";

ProbeResult unreachable(std::string why) {
  ProbeResult result;
  result.reachable = false;
  result.error = std::move(why);
  return result;
}

}  // namespace

ReplicationProbe::ReplicationProbe(asio::any_io_executor executor, ReplicationProbeOptions options,
                                   std::function<void(const ProbeResult&)> on_result)
    : executor_(std::move(executor)),
      options_(std::move(options)),
      on_result_(std::move(on_result)),
      interval_timer_(executor_) {}

ReplicationProbe::~ReplicationProbe() = default;

void ReplicationProbe::start() {
  asio::co_spawn(
      executor_,
      [self = shared_from_this()]() -> asio::awaitable<void> {
        try {
          co_await self->run();
        } catch (const std::exception& e) {
          spdlog::error("status: replication probe loop ended: {}", e.what());
        }
      },
      asio::detached);
}

void ReplicationProbe::stop() {
  stopping_ = true;
  interval_timer_.cancel();
  if (connection_) connection_->cancel();
}

asio::awaitable<void> ReplicationProbe::run() {
  while (!stopping_) {
    ProbeResult result = co_await probe_once();
    if (stopping_) break;
    on_result_(result);
    interval_timer_.expires_after(options_.probe_interval);
    auto [ec] = co_await interval_timer_.async_wait(kNoThrow);
    (void)ec;  // cancelled by stop(): the loop condition decides
  }
  connection_.reset();
}

asio::awaitable<ProbeResult> ReplicationProbe::probe_once() {
  ProbeResult result = co_await query_health();
  if (!result.reachable) connection_.reset();  // reopened next round
  co_return result;
}

asio::awaitable<ProbeResult> ReplicationProbe::query_health() {
  if (!connection_) {
    auto connected = co_await pg::AsyncConnection::connect(executor_, options_.conninfo,
                                                           options_.connect_timeout);
    if (!connected) co_return unreachable(connected.error().to_string());
    connection_ = std::move(connected.value());
  }

  // Named values only inside co_await (GCC 12 miscompiles braced temporaries there).
  std::vector<std::optional<std::string>> params;
  params.emplace_back(options_.slot_name);
  std::string sql = kHealthQuery;
  asio::steady_timer deadline(executor_, options_.query_timeout);
  auto query = connection_->query_params(std::move(sql), std::move(params));
  auto timeout = deadline.async_wait(kNoThrow);
  auto outcome = co_await (std::move(query) || std::move(timeout));
  if (outcome.index() == 1) co_return unreachable("health query timed out");
  auto& queried = std::get<0>(outcome);
  if (!queried) co_return unreachable(queried.error().to_string());

  const PGresult* rows = queried.value().get();
  if (PQntuples(rows) != 1 || PQnfields(rows) != 3) {
    co_return unreachable("health query returned an unexpected shape");
  }
  ProbeResult result;
  result.reachable = true;
  if (auto head = pg::get_value(rows, 0, 0)) result.current_wal_lsn = pg::parse_lsn(*head);
  result.slot_wal_status = pg::get_value(rows, 0, 1).value_or("");
  if (auto confirmed = pg::get_value(rows, 0, 2)) {
    result.slot_confirmed_lsn = pg::parse_lsn(*confirmed);
  }
  co_return result;
}

}  // namespace shapeproxy::status

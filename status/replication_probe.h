// What: ReplicationProbe, a coroutine loop that every `probe_interval` asks
// the database, on a normal (non-replication) connection, for its WAL head and
// the slot's state, and reports a ProbeResult:
//   SELECT pg_current_wal_lsn()::text,
//          (SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1),
//          (SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1)
// Why: the replication stream cannot see its own staleness (a dropped or
// invalidated slot, a silent walsender while WAL advances); an independent
// query can. A failed connect or query reports reachable=false and the
// connection is reopened on the next round.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "status/status_monitor.h"

namespace shapeproxy::pg {
class AsyncConnection;
}

namespace shapeproxy::status {

struct ReplicationProbeOptions {
  std::string conninfo;  // a normal libpq conninfo (not replication=database)
  std::string slot_name = "shapeproxy";
  std::chrono::milliseconds probe_interval{1'000};
  std::chrono::milliseconds connect_timeout{5'000};
  // A query that takes longer counts as unreachable (the connection is dropped).
  std::chrono::milliseconds query_timeout{5'000};
};

class ReplicationProbe : public std::enable_shared_from_this<ReplicationProbe> {
 public:
  // `on_result` runs on `executor` after every probe.
  ReplicationProbe(boost::asio::any_io_executor executor, ReplicationProbeOptions options,
                   std::function<void(const ProbeResult&)> on_result);
  ~ReplicationProbe();

  // Starts the loop (first probe at once); returns at once. Call once.
  void start();
  // Stops the loop: no result is reported after the current round. Returns at
  // once; call on the executor. The loop ends within the connect/query timeout.
  void stop();

  // One probe, reusing (or opening) the probe's connection. Run on the
  // executor, and not while the loop runs.
  boost::asio::awaitable<ProbeResult> probe_once();

 private:
  boost::asio::awaitable<void> run();
  boost::asio::awaitable<ProbeResult> query_health();

  boost::asio::any_io_executor executor_;
  ReplicationProbeOptions options_;
  std::function<void(const ProbeResult&)> on_result_;
  boost::asio::steady_timer interval_timer_;
  std::unique_ptr<pg::AsyncConnection> connection_;
  bool stopping_ = false;
};

}  // namespace shapeproxy::status

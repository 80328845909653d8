#include "cluster/election.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <utility>
#include <vector>

#include "common/no_throw.h"
#include "pg/async_connection.h"

namespace shapeproxy::cluster {
namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;

namespace {

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::optional<std::int64_t> parse_int(const std::optional<std::string>& text) {
  if (!text) return std::nullopt;
  try {
    return std::stoll(*text);
  } catch (...) {
    return std::nullopt;
  }
}

}  // namespace

const char* to_string(Role role) { return role == Role::kLeader ? "leader" : "follower"; }

std::int64_t Election::lock_key(std::string_view name) {
  std::uint64_t hash = 14695981039346656037ull;
  for (char c : std::string("shapeproxy:") + std::string(name)) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 1099511628211ull;
  }
  return static_cast<std::int64_t>(hash);
}

Election::Election(asio::any_io_executor executor, ElectionOptions options, ElectionEvents events)
    : executor_(std::move(executor)),
      options_(std::move(options)),
      events_(std::move(events)),
      timer_(executor_) {
  view_.instance_id = options_.instance_id;
}

Election::~Election() = default;

ClusterView Election::view() const {
  std::lock_guard lock(mutex_);
  return view_;
}

void Election::start() {
  asio::co_spawn(
      executor_, [self = shared_from_this()] { return self->run(); }, asio::detached);
}

void Election::stop() {
  stopped_ = true;
  timer_.cancel();
  if (connection_) connection_->cancel();
}

void Election::republish() {
  if (!promoted_ || deposed_ || stopped_) return;
  if (auto written = write_leader_record(options_.data_dir, own_record()); !written) {
    spdlog::warn("cluster: {}", written.error().to_string());
  }
  std::lock_guard lock(mutex_);
  view_.leader = own_record();
}

asio::awaitable<void> Election::run() {
  while (!stopped_ && !deposed_) {
    timer_.expires_after(options_.poll_interval);
    auto [ec] = co_await timer_.async_wait(kNoThrow);
    (void)ec;
    if (stopped_) break;
    co_await round();
  }
  connection_.reset();  // ends the session: the lock goes with it
}

asio::awaitable<bool> Election::connect() {
  if (connection_) co_return true;
  auto connected =
      co_await pg::AsyncConnection::connect(executor_, options_.conninfo, options_.connect_timeout);
  if (!connected) co_return false;
  connection_ = std::move(connected.value());
  // Operators see the leader's session in pg_stat_activity by this name.
  std::vector<std::optional<std::string>> params;
  params.emplace_back("shapeproxy:" + options_.instance_id);
  std::string sql = "SELECT set_config('application_name', $1, false)";
  auto named = co_await query_row(std::move(sql), std::move(params));
  if (!named) co_return false;
  // A session the instance stops using ends on the server: a leader cut off
  // by a partition that drops packets (no reset reaches PostgreSQL) would
  // otherwise hold the advisory lock for as long as TCP takes to notice,
  // hours. Every round queries well within it (PostgreSQL 14 and later; on
  // older servers the setting does not exist and this sets nothing).
  std::vector<std::optional<std::string>> timeout;
  timeout.emplace_back(std::to_string(session_idle_limit().count()) + "ms");
  std::string idle_sql =
      "SELECT set_config('idle_session_timeout', $1, false) FROM pg_settings "
      "WHERE name = 'idle_session_timeout'";
  auto limited = co_await query_row(std::move(idle_sql), std::move(timeout));
  co_return limited.has_value();
}

asio::awaitable<std::optional<std::vector<std::optional<std::string>>>> Election::query_row(
    std::string sql, std::vector<std::optional<std::string>> params) {
  if (!connection_) co_return std::nullopt;
  asio::steady_timer deadline(executor_, options_.query_timeout);
  auto query = connection_->query_params(std::move(sql), std::move(params));
  auto timeout = deadline.async_wait(kNoThrow);
  auto outcome = co_await (std::move(query) || std::move(timeout));
  if (outcome.index() == 1 || !std::get<0>(outcome)) {
    connection_.reset();
    co_return std::nullopt;
  }
  const PGresult* rows = std::get<0>(outcome).value().get();
  std::vector<std::optional<std::string>> values;
  if (PQntuples(rows) >= 1) {
    for (int column = 0; column < PQnfields(rows); ++column) {
      values.push_back(pg::get_value(rows, 0, column));
    }
  }
  co_return values;
}

asio::awaitable<void> Election::round() {
  if (stopped_ || deposed_) co_return;
  // Before anything that may wait on the network: a leader cut off learns
  // from the shared directory that another instance holds the lock, within
  // one round of the claim.
  if (promoted_ && claimed_by_another()) co_return;
  const bool connected = co_await connect();
  if (connected) co_await round_connected();
  if (stopped_ || deposed_) co_return;
  if (!connection_) round_unreachable();
  if (view().lock_held && !promoted_ && try_promote()) co_await take_slot();
}

asio::awaitable<void> Election::round_connected() {
  if (view().lock_held) {
    // Heartbeat: a dead session has released the lock.
    std::string sql = "SELECT 1";
    std::vector<std::optional<std::string>> none;
    auto alive = co_await query_row(std::move(sql), std::move(none));
    if (!alive) {
      spdlog::warn("cluster: the session holding the leader lock was lost; retrying");
      std::lock_guard lock(mutex_);
      view_.lock_held = false;
    }
    co_return;
  }
  const std::uint64_t key = static_cast<std::uint64_t>(lock_key(options_.lock_name));
  std::vector<std::optional<std::string>> params;
  params.emplace_back(std::to_string(static_cast<std::int64_t>(key)));
  std::string try_sql =
      "SELECT pg_try_advisory_lock($1::bigint), pg_backend_pid(), "
      "coalesce(host(inet_client_addr()), '')";
  auto tried = co_await query_row(std::move(try_sql), std::move(params));
  if (!tried || tried->size() != 3) co_return;
  if ((*tried)[0] == "t") {
    backend_pid_ = parse_int((*tried)[1]);
    client_address_ = (*tried)[2].value_or("");
    {
      std::lock_guard lock(mutex_);
      view_.lock_held = true;
    }
    if (promoted_) {
      // A provisional leader, or one whose session came back: record the
      // session now holding the lock, then replication may stream.
      spdlog::info("cluster: {} holds the leader lock (backend {})", options_.instance_id,
                   backend_pid_.value_or(0));
      if (auto written = write_leader_record(options_.data_dir, own_record()); !written) {
        spdlog::warn("cluster: {}", written.error().to_string());
      }
      {
        std::lock_guard lock(mutex_);
        view_.leader = own_record();
      }
      co_await take_slot();
    }
    co_return;
  }
  if (promoted_) {
    depose("another instance holds the leader lock");
    co_return;
  }
  std::vector<std::optional<std::string>> holder_params;
  holder_params.emplace_back(std::to_string(key >> 32));
  holder_params.emplace_back(std::to_string(key & 0xffffffffu));
  std::string holder_sql =
      "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
      "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
      "AND classid = $1::oid AND objid = $2::oid AND objsubid = 1";
  auto holder = co_await query_row(std::move(holder_sql), std::move(holder_params));
  if (!holder) co_return;
  learn_leader(holder->empty() ? std::nullopt : parse_int((*holder)[0]));
}

void Election::learn_leader(std::optional<std::int64_t> holder_pid) {
  auto record = read_leader_record(options_.data_dir);
  // A record is current only if it names the session holding the lock.
  const bool current = record && holder_pid && record->backend_pid == holder_pid;
  std::lock_guard lock(mutex_);
  if (current && view_.leader != record) {
    spdlog::info("cluster: following {}", record->instance_id);
  }
  view_.leader = current ? record : std::nullopt;
}

void Election::round_unreachable() {
  {
    std::lock_guard lock(mutex_);
    view_.lock_held = false;
  }
  if (promoted_) {
    // Leading without the database: the data directory's lock fences the
    // others, until one of them claims it, holding the advisory lock.
    claimed_by_another();
    return;
  }
  auto acquired = DataDirLock::try_acquire(options_.data_dir);
  if (!acquired) {
    spdlog::warn("cluster: {}", acquired.error().to_string());
    return;
  }
  if (*acquired) {
    spdlog::warn(
        "cluster: PostgreSQL is unreachable and no instance holds the data directory: {} leads "
        "provisionally (serves the shapes on disk; replicates once it holds the leader lock)",
        options_.instance_id);
    data_dir_lock_ = std::move(acquired.value());
    backend_pid_.reset();
    try_promote();
    return;
  }
  // The data directory's holder leads: follow its record as it is.
  auto record = read_leader_record(options_.data_dir);
  std::lock_guard lock(mutex_);
  view_.leader = record;
}

bool Election::claimed_by_another() {
  auto claim = read_claim(options_.data_dir);
  if (claim && claim->instance_id != options_.instance_id && claim->since_ms > since_ms_) {
    depose(claim->instance_id + " holds the leader lock and claims the data directory");
    return true;
  }
  return false;
}

std::chrono::milliseconds Election::session_idle_limit() const {
  // Four rounds (at least a second): a leader that stops querying for that
  // long is gone or cut off; a stall shorter than that costs nothing.
  return std::max<std::chrono::milliseconds>(4 * options_.poll_interval, std::chrono::seconds(1));
}

asio::awaitable<void> Election::take_slot() {
  if (!streamed_) {
    // This session holds the advisory lock and this instance has not
    // streamed yet, so a walsender still on the slot belongs to a leader
    // that lost the lock: one cut off by a partition that drops packets
    // stays "active" on the server until wal_sender_timeout. End it so that
    // this instance can stream now (rfc/0003, failover sequence). A leader
    // whose session came back may still be streaming itself: left alone.
    std::vector<std::optional<std::string>> params;
    params.emplace_back(options_.lock_name);
    // Only a walsender of this role (every instance runs as the same one):
    // an error would end this session, and the lock with it.
    std::string sql =
        "SELECT s.active_pid, pg_terminate_backend(s.active_pid) FROM pg_replication_slots s "
        "JOIN pg_stat_activity a ON a.pid = s.active_pid "
        "WHERE s.slot_name = $1 AND a.usename = current_user";
    auto ended = co_await query_row(std::move(sql), std::move(params));
    if (ended && !ended->empty() && (*ended)[0]) {
      spdlog::warn("cluster: ended walsender {} left on slot {} by the previous leader",
                   *(*ended)[0], options_.lock_name);
    }
  }
  if (stopped_ || deposed_) co_return;
  streamed_ = true;
  if (events_.lock_taken) events_.lock_taken();
}

bool Election::try_promote() {
  if (!data_dir_lock_) {
    auto acquired = DataDirLock::try_acquire(options_.data_dir);
    if (!acquired) {
      spdlog::warn("cluster: {}", acquired.error().to_string());
      return false;
    }
    if (!*acquired) {
      if (!waiting_logged_) {
        // The previous leader may be cut from the database: it learns of
        // this claim through the shared directory and steps down.
        LeaderRecord claim = own_record();
        claim.since_ms = now_ms();
        if (auto written = write_claim(options_.data_dir, claim); !written) {
          spdlog::warn("cluster: {}", written.error().to_string());
        }
        spdlog::info(
            "cluster: {} holds the leader lock; waiting for the previous leader to release the "
            "data directory",
            options_.instance_id);
        waiting_logged_ = true;
      }
      return false;
    }
    data_dir_lock_ = std::move(acquired.value());
  }
  since_ms_ = now_ms();
  if (auto written = write_leader_record(options_.data_dir, own_record()); !written) {
    spdlog::warn("cluster: {}", written.error().to_string());
  }
  bool lock_held;
  {
    std::lock_guard lock(mutex_);
    view_.role = Role::kLeader;
    view_.leader = own_record();
    lock_held = view_.lock_held;
  }
  promoted_ = true;
  spdlog::info("cluster: {} leads ({})", options_.instance_id, own_url());
  if (events_.promoted) events_.promoted();
  return lock_held;
}

void Election::depose(const std::string& why) {
  deposed_ = true;
  spdlog::error("cluster: {} is deposed: {}", options_.instance_id, why);
  if (events_.deposed) events_.deposed(why);
}

std::string Election::own_url() const {
  if (options_.advertise_url) return *options_.advertise_url;
  std::string host = client_address_.empty() ? "127.0.0.1" : client_address_;
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  return "http://" + host + ":" + std::to_string(options_.port ? options_.port() : 0);
}

LeaderRecord Election::own_record() const {
  return LeaderRecord{options_.instance_id, own_url(), backend_pid_, since_ms_};
}

}  // namespace shapeproxy::cluster

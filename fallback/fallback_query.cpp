#include "fallback/fallback_query.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cctype>
#include <optional>

#include <sys/socket.h>

#include "common/error_codes.h"
#include "common/text.h"
#include "pg/async_connection.h"
#include "shapes/snapshot_query.h"

namespace shapeproxy::fallback {
namespace asio = boost::asio;
using SharedRows = FallbackQuery::SharedRows;

// One distinct query under way. Followers park on `done` until the leader
// publishes `outcome`; a leader waiting for a query slot parks on `slot_ready`.
struct FallbackQuery::Flight {
  explicit Flight(const asio::any_io_executor& executor)
      : done(executor, asio::steady_timer::time_point::max()),
        slot_ready(executor, asio::steady_timer::time_point::max()) {}

  asio::steady_timer done;
  asio::steady_timer slot_ready;
  bool has_slot = false;
  std::optional<Result<SharedRows>> outcome;
};

namespace {

bool is_sqlstate(const std::string& code) {
  return code.size() == 5 && std::all_of(code.begin(), code.end(), [](unsigned char c) {
           return std::isdigit(c) || std::isupper(c);
         });
}

// The client-facing error: says what failed, never where (no host, user, SQL).
Error database_unavailable(const Error& cause) {
  spdlog::warn("fallback: direct query failed: {}", text::log_safe(cause.to_string()));
  std::string message =
      is_sqlstate(cause.code)
          ? "the database refused the fallback query (SQLSTATE " + cause.code + ")"
          : std::string("the database could not be reached for a fallback query");
  return Error{"database_unavailable", std::move(message),
               "retry shortly; check the database or the fallback connection string"};
}

Error query_timeout(const FallbackQueryOptions& options) {
  spdlog::warn("fallback: direct query cancelled after {} ms", options.statement_timeout.count());
  return Error{std::string(error_codes::kQueryTimeout),
               "the fallback query took longer than " +
                   std::to_string(options.statement_timeout.count()) + " ms and was cancelled",
               "retry shortly; the database is slow (see --fallback-statement-timeout-ms)"};
}

Error overloaded() {
  return Error{std::string(error_codes::kOverloaded),
               "too many fallback queries are running or waiting", "retry after a moment"};
}

}  // namespace

FallbackQuery::FallbackQuery(asio::any_io_executor strand, std::shared_ptr<pg::ConnectionPool> pool,
                             FallbackQueryOptions options, Clock clock)
    : strand_(std::move(strand)),
      pool_(std::move(pool)),
      options_(std::move(options)),
      clock_(std::move(clock)) {
  if (options_.max_in_flight == 0) options_.max_in_flight = 1;
}

FallbackQuery::~FallbackQuery() = default;

std::shared_ptr<pg::ConnectionPool> FallbackQuery::make_pool(asio::any_io_executor strand,
                                                             std::string conninfo,
                                                             const FallbackQueryOptions& options) {
  std::string session_sql;
  if (options.statement_timeout.count() > 0) {
    session_sql = "SET statement_timeout = " + std::to_string(options.statement_timeout.count());
  }
  return std::make_shared<pg::ConnectionPool>(std::move(strand), std::move(conninfo),
                                              std::max<std::size_t>(options.max_in_flight, 1),
                                              options.connect_timeout, std::move(session_sql));
}

status::FallbackActivity FallbackQuery::activity() const {
  status::FallbackActivity activity;
  activity.queries_in_flight = running_gauge_.load();
  activity.queued = queued_gauge_.load();
  activity.refused_total = refused_total_.load();
  activity.source = options_.source;
  for (std::size_t i = 0; i < kOutcomes.size(); ++i)
    activity.query_durations.emplace_back(kOutcomes[i], durations_[i].snapshot());
  return activity;
}

asio::awaitable<Result<SharedRows>> FallbackQuery::rows(const shapes::ShapeDefinition& definition,
                                                        shapes::RowsObserver on_rows) {
  auto self = shared_from_this();
  // co_spawn needs a default-constructible result, hence the optional filled
  // by the strand coroutine (this frame outlives it). The definition is
  // copied into that coroutine's frame.
  std::optional<Result<SharedRows>> outcome;
  auto on_strand = self->rows_on_strand(definition, std::move(on_rows), outcome);
  co_await asio::co_spawn(strand_, std::move(on_strand), asio::use_awaitable);
  if (!outcome) co_return Error{"database_unavailable", "fallback query abandoned", ""};
  co_return std::move(*outcome);
}

asio::awaitable<void> FallbackQuery::rows_on_strand(shapes::ShapeDefinition definition,
                                                    shapes::RowsObserver on_rows,
                                                    std::optional<Result<SharedRows>>& outcome) {
  auto self = shared_from_this();
  if (const SharedRows* cached = fresh_cached(definition.key)) {
    outcome = *cached;
    co_return;
  }

  if (auto it = flights_.find(definition.key); it != flights_.end()) {
    std::shared_ptr<Flight> flight = it->second;
    while (!flight->outcome) co_await flight->done.async_wait(asio::as_tuple(asio::use_awaitable));
    outcome = *flight->outcome;
    co_return;
  }

  if (running_ >= options_.max_in_flight && slot_queue_.size() >= options_.max_queued) {
    refused_total_.fetch_add(1);
    outcome = overloaded();
    co_return;
  }
  auto flight = std::make_shared<Flight>(strand_);
  flights_.emplace(definition.key, flight);
  auto led = co_await lead(flight, definition, on_rows);
  outcome = std::move(led);
}

asio::awaitable<Result<SharedRows>> FallbackQuery::lead(std::shared_ptr<Flight> flight,
                                                        const shapes::ShapeDefinition& definition,
                                                        const shapes::RowsObserver& on_rows) {
  // Whatever happens (even the frame being destroyed at shutdown), followers
  // are released and the key no longer names this flight.
  struct Publish {
    FallbackQuery& owner;
    Flight& flight;
    const std::string& key;
    ~Publish() {
      if (flight.has_slot) {
        owner.release_slot();
      } else {
        std::erase_if(owner.slot_queue_,
                      [&](const auto& queued) { return queued.get() == &flight; });
        owner.queued_gauge_.store(owner.slot_queue_.size());
      }
      if (auto it = owner.flights_.find(key);
          it != owner.flights_.end() && it->second.get() == &flight)
        owner.flights_.erase(it);
      if (!flight.outcome)
        flight.outcome = Error{"database_unavailable", "fallback query abandoned", ""};
      flight.done.cancel();
    }
  } publish{*this, *flight, definition.key};

  if (running_ < options_.max_in_flight) {
    ++running_;
    flight->has_slot = true;
  } else {
    slot_queue_.push_back(flight);
    queued_gauge_.store(slot_queue_.size());
    while (!flight->has_slot)
      co_await flight->slot_ready.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  running_gauge_.store(running_);

  const auto taken = clock_();
  const auto started = std::chrono::steady_clock::now();
  auto result = co_await query(definition, on_rows);
  const std::string_view outcome = result ? "ok" : std::string_view(result.error().code);
  for (std::size_t i = 0; i < kOutcomes.size(); ++i) {
    if (outcome != kOutcomes[i]) continue;
    durations_[i].observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  }
  if (result) remember(definition.key, result.value(), taken);
  flight->outcome = result;
  co_return result;
}

asio::awaitable<Result<SharedRows>> FallbackQuery::query(const shapes::ShapeDefinition& definition,
                                                         const shapes::RowsObserver& on_rows) {
  auto lease = co_await pool_->acquire();
  if (!lease) co_return database_unavailable(lease.error());
  queries_started_.fetch_add(1);

  // The server cancels a slow statement itself (the session's
  // statement_timeout). If it does not answer even then, the deadline shuts
  // the socket down: every wait ends, the query fails, and the pool drops the
  // broken connection. `watch` outlives this frame if the handler is queued.
  struct Watch {
    pg::AsyncConnection* connection;  // null once the query is over
    bool abandoned = false;
  };
  auto watch = std::make_shared<Watch>(Watch{&**lease});
  asio::steady_timer deadline(strand_);
  if (options_.statement_timeout.count() > 0) {
    deadline.expires_after(options_.statement_timeout + options_.abandon_grace);
    deadline.async_wait([watch](boost::system::error_code ec) {
      if (ec || !watch->connection) return;
      watch->abandoned = true;
      ::shutdown(PQsocket(watch->connection->native()), SHUT_RDWR);
    });
  }
  auto snapshot =
      co_await shapes::query_snapshot(**lease, definition, std::chrono::milliseconds(0), on_rows);
  watch->connection = nullptr;
  deadline.cancel();
  if (!snapshot) {
    if (watch->abandoned || snapshot.error().code == error_codes::kSqlstateQueryCanceled)
      co_return query_timeout(options_);
    // The request's own fault (e.g. division by zero): kept as it is, so the
    // client gets a 400 naming it.
    if (error_codes::is_client_data_error(snapshot.error().code)) co_return snapshot.error();
    co_return database_unavailable(snapshot.error());
  }
  SharedRows rows = std::make_shared<const shapes::SnapshotRows>(std::move(snapshot).value());
  co_return rows;
}

// Hands the slot straight to the oldest queued leader (FIFO, no barging), or
// frees it.
void FallbackQuery::release_slot() {
  if (!slot_queue_.empty()) {
    std::shared_ptr<Flight> next = std::move(slot_queue_.front());
    slot_queue_.pop_front();
    next->has_slot = true;
    next->slot_ready.cancel();
  } else if (running_ > 0) {
    --running_;
  }
  queued_gauge_.store(slot_queue_.size());
  running_gauge_.store(running_);
}

const SharedRows* FallbackQuery::fresh_cached(const std::string& key) {
  auto it = cache_.find(key);
  if (it == cache_.end()) return nullptr;
  if (clock_() - it->second.taken < options_.reuse_window) return &it->second.rows;
  cache_.erase(it);
  return nullptr;
}

void FallbackQuery::remember(const std::string& key, SharedRows rows,
                             std::chrono::steady_clock::time_point taken) {
  if (options_.reuse_window.count() <= 0) return;
  const auto now = clock_();
  std::erase_if(
      cache_, [&](const auto& entry) { return now - entry.second.taken >= options_.reuse_window; });
  cache_[key] = CachedRows{std::move(rows), taken};
}

shapes::FallbackRows registry_source(std::weak_ptr<FallbackQuery> query) {
  return [query = std::move(query)](const shapes::ShapeDefinition& definition,
                                    shapes::RowsObserver on_rows)
             -> boost::asio::awaitable<Result<FallbackQuery::SharedRows>> {
    auto live = query.lock();
    if (!live) co_return Error{"stopped", "shutting down", ""};
    co_return co_await live->rows(definition, std::move(on_rows));
  };
}

}  // namespace shapeproxy::fallback

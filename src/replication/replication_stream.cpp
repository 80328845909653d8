#include "replication/replication_stream.h"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/error_codes.h"
#include "common/no_throw.h"
#include "logging/log_format.h"
#include "pg/async_connection.h"
#include "pg/conninfo.h"
#include "replication/pgoutput_decoder.h"
#include "replication/replication_errors.h"
#include "replication/transaction_assembler.h"

namespace shapeproxy::replication {
namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;
using Clock = std::chrono::steady_clock;

namespace {

// An acknowledgement reaches the server within this delay.
constexpr std::chrono::milliseconds kAckDelay{100};
// Messages handled between two yields to the event loop.
constexpr int kMessagesPerSlice = 512;

PgTimestamp now_pg_timestamp() {
  // Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
  constexpr std::int64_t kPgEpochOffsetMicros = 946'684'800'000'000;
  auto since_unix = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::system_clock::now().time_since_epoch());
  return since_unix.count() - kPgEpochOffsetMicros;
}

}  // namespace

const char* to_string(StreamState state) {
  switch (state) {
    case StreamState::kStopped:
      return "stopped";
    case StreamState::kConnecting:
      return "connecting";
    case StreamState::kStreaming:
      return "streaming";
    case StreamState::kDisconnected:
      return "disconnected";
  }
  return "unknown";
}

ReplicationStream::ReplicationStream(asio::any_io_executor executor,
                                     ReplicationStreamOptions options,
                                     ReplicationListener& listener)
    : executor_(std::move(executor)),
      options_(std::move(options)),
      listener_(listener),
      backoff_timer_(executor_),
      status_timer_(executor_) {
  delivered_lsn_ = options_.resume_after;
  acknowledged_lsn_ = options_.resume_after;
}

ReplicationStream::~ReplicationStream() = default;

void ReplicationStream::start() {
  asio::post(executor_, [self = shared_from_this()] {
    if (self->running_) return;
    self->running_ = true;
    self->stopping_ = false;
    asio::co_spawn(
        self->executor_, [self]() { return self->run(); }, asio::detached);
  });
}

void ReplicationStream::stop() {
  asio::post(executor_, [self = shared_from_this()] {
    self->stopping_ = true;
    self->backoff_timer_.cancel();
    self->status_timer_.cancel();
    if (self->active_connection_) self->active_connection_->cancel();
  });
}

void ReplicationStream::acknowledge(Lsn end_lsn) {
  asio::post(executor_, [self = shared_from_this(), end_lsn] {
    if (end_lsn <= self->acknowledged_lsn_) return;
    self->acknowledged_lsn_ = end_lsn;
    self->status_timer_.cancel();  // report it soon (if consume() waits)
  });
}

void ReplicationStream::set_state(StreamState state, const Error* cause) {
  state_ = state;
  listener_.on_state(state, cause);
}

asio::awaitable<void> ReplicationStream::run() {
  auto self = shared_from_this();  // alive until the loop ends
  auto backoff = options_.min_backoff;
  while (!stopping_) {
    set_state(StreamState::kConnecting);
    auto outcome = co_await stream_once();
    bool streamed = state_ == StreamState::kStreaming;
    if (stopping_) break;
    Error cause =
        outcome ? Error{"connection_lost", "replication stream ended", ""} : outcome.error();
    if (streamed) backoff = options_.min_backoff;
    reconnects_.fetch_add(1, std::memory_order_relaxed);
    {
      logging::LogFields fields{{"cause", cause.code}, {"backoff_ms", backoff.count()}};
      spdlog::warn("replication: {}; reconnecting in {} ms", cause.to_string(), backoff.count());
    }
    set_state(StreamState::kDisconnected, &cause);
    backoff_timer_.expires_after(backoff);
    co_await backoff_timer_.async_wait(kNoThrow);
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
  running_ = false;
  set_state(StreamState::kStopped);
}

asio::awaitable<Result<void>> ReplicationStream::stream_once() {
  auto conninfo = pg::replication_conninfo(options_.conninfo);
  if (!conninfo) co_return conninfo.error();
  auto connected =
      co_await pg::AsyncConnection::connect(executor_, conninfo.value(), options_.connect_timeout);
  if (!connected) co_return explain_connect_error(connected.error());
  auto connection = std::move(connected).value();
  active_connection_ = connection.get();
  // Declared after `connection`, so destroyed before it.
  struct Active {
    pg::AsyncConnection*& slot;
    ~Active() { slot = nullptr; }
  } active{active_connection_};
  auto outcome = co_await prepare_slot(*connection);
  if (outcome && !stopping_) outcome = co_await consume(*connection);
  co_return outcome;
}

asio::awaitable<Result<void>> ReplicationStream::prepare_slot(pg::AsyncConnection& connection) {
  auto identified = co_await connection.query("IDENTIFY_SYSTEM");
  if (!identified) co_return identified.error();
  if (PQnfields(identified->get()) < 4 || PQgetisnull(identified->get(), 0, 3)) {
    co_return Error{"not_database_connection", "replication connection is not bound to a database",
                    "DATABASE_URL must name a database (dbname)"};
  }
  auto wal_level = co_await connection.query("SHOW wal_level");
  if (!wal_level) co_return wal_level.error();
  auto level = pg::get_value(wal_level->get(), 0, 0).value_or("");
  if (level != "logical") co_return wal_level_error(level);

  auto slot = co_await connection.query(
      "SELECT plugin, database = current_database(), wal_status, confirmed_flush_lsn "
      "FROM pg_replication_slots WHERE slot_name = " +
      pg::quote_literal(options_.slot_name));
  if (!slot) co_return slot.error();
  bool missing = PQntuples(slot->get()) == 0;
  if (!missing && options_.recreate_lost_slot &&
      pg::get_value(slot->get(), 0, 2).value_or("") == "lost") {
    spdlog::warn(
        "replication: slot \"{}\" was invalidated (its WAL was removed); dropping it "
        "and creating a new one",
        options_.slot_name);
    auto dropped = co_await connection.query("DROP_REPLICATION_SLOT " +
                                             pg::quote_identifier(options_.slot_name));
    if (!dropped) co_return dropped.error();
    missing = true;
  }
  if (missing) {
    auto created = co_await connection.query("CREATE_REPLICATION_SLOT " +
                                             pg::quote_identifier(options_.slot_name) +
                                             " LOGICAL pgoutput (SNAPSHOT 'nothing')");
    if (!created) co_return created.error();
    auto point = pg::parse_lsn(pg::get_value(created->get(), 0, 1).value_or(""));
    {
      logging::LogFields fields{{"slot", options_.slot_name},
                                {"lsn", pg::format_lsn(point.value_or(0))}};
      spdlog::info("replication: created slot \"{}\" at {}", options_.slot_name,
                   pg::format_lsn(point.value_or(0)));
    }
    listener_.on_slot_created(point.value_or(0));
    co_return Result<void>{};
  }
  auto plugin = pg::get_value(slot->get(), 0, 0).value_or("");
  auto same_database = pg::get_value(slot->get(), 0, 1).value_or("f") == "t";
  auto wal_status = pg::get_value(slot->get(), 0, 2).value_or("");
  if (plugin != "pgoutput" || !same_database) co_return slot_mismatch_error(options_.slot_name);
  if (wal_status == "lost") co_return slot_invalidated_error(options_.slot_name);
  if (wal_status == "unreserved") {
    spdlog::warn(
        "replication: slot \"{}\" WAL is unreserved: it will be invalidated unless "
        "the proxy catches up (max_slot_wal_keep_size)",
        options_.slot_name);
  }
  co_return Result<void>{};
}

asio::awaitable<Result<void>> ReplicationStream::consume(pg::AsyncConnection& connection) {
  Lsn start = std::max(acknowledged_lsn_, options_.resume_after);
  auto started = co_await connection.query(
      "START_REPLICATION SLOT " + pg::quote_identifier(options_.slot_name) + " LOGICAL " +
      pg::format_lsn(start) + " (proto_version '1', publication_names " +
      pg::quote_literal(pg::quote_identifier(options_.publication_name)) + ")");
  if (!started) co_return explain_start_error(started.error(), options_);
  if (PQresultStatus(started->get()) != PGRES_COPY_BOTH) {
    co_return Error{"replication_protocol", "START_REPLICATION did not enter COPY mode", ""};
  }
  {
    logging::LogFields fields{{"slot", options_.slot_name}, {"lsn", pg::format_lsn(start)}};
    spdlog::info("replication: streaming slot \"{}\" from {}", options_.slot_name,
                 pg::format_lsn(start));
  }
  set_state(StreamState::kStreaming);

  TransactionAssembler assembler;
  auto last_status = Clock::now() - options_.status_interval;
  Result<void> outcome;
  while (!stopping_ && outcome) {
    bool reply_requested = false;
    for (int handled = 0; handled < kMessagesPerSlice && outcome; ++handled) {
      char* buffer = nullptr;
      int length = PQgetCopyData(connection.native(), &buffer, 1);
      if (length > 0) {
        outcome = handle_copy_data(std::string_view(buffer, static_cast<std::size_t>(length)),
                                   assembler, reply_requested);
        PQfreemem(buffer);
        continue;
      }
      if (length == 0) break;
      pg::ResultPtr final_result(PQgetResult(connection.native()));
      outcome = final_result ? pg::error_from_result(final_result.get())
                             : pg::error_from_connection(connection.native(), "connection_lost");
      if (outcome.error().code.empty()) outcome = Error{"connection_lost", "replication ended", ""};
    }
    if (!outcome || stopping_) break;

    Lsn flush = flush_position(assembler.in_transaction());
    bool ack_pending = flush > confirmed_lsn_;
    auto due = last_status + (ack_pending ? kAckDelay : options_.status_interval);
    if (reply_requested || Clock::now() >= due) {
      outcome = send_status(connection, flush, false);
      if (outcome) outcome = co_await connection.flush();
      last_status = Clock::now();
      continue;
    }
    status_timer_.expires_at(due);
    auto woke = co_await (connection.wait_readable() || status_timer_.async_wait(kNoThrow));
    if (woke.index() == 0) {
      auto& readable = std::get<0>(woke);
      if (!readable && readable.error().code != error_codes::kCancelled) outcome = readable.error();
    }
  }
  if (stopping_) {
    // Report the final acknowledged position, then end COPY politely.
    (void)send_status(connection, flush_position(assembler.in_transaction()), false);
    PQputCopyEnd(connection.native(), nullptr);
    (void)co_await connection.flush();
    co_return Result<void>{};
  }
  co_return outcome;
}

Result<void> ReplicationStream::handle_copy_data(std::string_view bytes,
                                                 TransactionAssembler& assembler,
                                                 bool& reply_requested) {
  auto envelope = decode_copy_data(bytes);
  if (!envelope) return envelope.error();
  if (auto* keepalive = std::get_if<PrimaryKeepalive>(&envelope.value())) {
    server_wal_end_ = std::max(server_wal_end_, keepalive->wal_end);
    // Nothing open and nothing unacknowledged: every transaction committed
    // before this point has been received and handled.
    if (!assembler.in_transaction()) {
      listener_.on_progress(keepalive->wal_end);
      if (delivered_lsn_ <= acknowledged_lsn_) {
        idle_safe_lsn_ = std::max(idle_safe_lsn_, keepalive->wal_end);
      }
    }
    reply_requested = reply_requested || keepalive->reply_requested;
    return {};
  }
  auto& data = std::get<XLogData>(envelope.value());
  server_wal_end_ = std::max(server_wal_end_, data.wal_end);
  received_lsn_ = std::max(received_lsn_, data.wal_start);
  auto message = decode_pgoutput(data.payload);
  if (!message) return message.error();
  auto assembled = assembler.apply(std::move(message).value());
  if (!assembled) return assembled.error();
  if (!assembled.value()) return {};
  Transaction& transaction = *assembled.value();
  if (transaction.end_lsn <= delivered_lsn_) return {};  // already delivered once
  delivered_lsn_ = transaction.end_lsn;
  listener_.on_transaction(std::move(transaction));
  return {};
}

Lsn ReplicationStream::flush_position(bool transaction_open) const {
  Lsn flush = acknowledged_lsn_;
  if (!transaction_open && delivered_lsn_ <= acknowledged_lsn_) {
    flush = std::max(flush, idle_safe_lsn_);
  }
  return std::max(flush, confirmed_lsn());
}

Result<void> ReplicationStream::send_status(pg::AsyncConnection& connection, Lsn flush,
                                            bool reply_requested) {
  Lsn written = std::max(flush, received_lsn_);
  auto message =
      encode_standby_status_update(written, flush, flush, now_pg_timestamp(), reply_requested);
  if (PQputCopyData(connection.native(), message.data(), static_cast<int>(message.size())) <= 0) {
    return pg::error_from_connection(connection.native(), "connection_lost");
  }
  confirmed_lsn_.store(flush, std::memory_order_relaxed);
  return {};
}

}  // namespace shapeproxy::replication

// ReplicationStream: the logical replication ingest. It opens a libpq
// replication connection (replication=database) watched by the Asio event
// loop, makes sure the pgoutput slot exists, streams from the slot's
// confirmed position, assembles committed transactions and hands them to a
// listener in commit order. It answers keepalives and sends standby status
// updates, and it advances the slot's confirmed position only up to what the
// consumer acknowledged as safely handled. On any failure it reports the
// cause, waits (exponential backoff) and reconnects; nothing is skipped: the
// server resends every transaction after the confirmed position, and the
// stream drops the ones at or before the consumer's resume position.
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "common/result.h"
#include "replication/transaction.h"

namespace shapeproxy::pg {
class AsyncConnection;
}

namespace shapeproxy::replication {

class TransactionAssembler;

struct ReplicationStreamOptions {
  std::string conninfo;  // a normal libpq conninfo; replication=database is added
  std::string slot_name = "shapeproxy";
  std::string publication_name = "shapeproxy";
  // Transactions ending at or before this LSN were already handled by the
  // consumer (its durable position); they are not delivered again.
  Lsn resume_after = 0;
  std::chrono::milliseconds status_interval{10'000};
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds min_backoff{500};
  std::chrono::milliseconds max_backoff{30'000};
  // A slot invalidated by PostgreSQL (wal_status 'lost') can never stream
  // again: drop it and create a new one (listeners see on_slot_created and
  // re-query what they serve). Off: report slot_invalidated and keep retrying.
  bool recreate_lost_slot = true;
};

enum class StreamState { kStopped, kConnecting, kStreaming, kDisconnected };
const char* to_string(StreamState state);

// Where the stream reports to. Called on the stream's executor.
class ReplicationListener {
 public:
  virtual ~ReplicationListener() = default;
  // A committed transaction. Call ReplicationStream::acknowledge(end_lsn) once
  // it is durably handled (now or later, from any thread).
  virtual void on_transaction(Transaction transaction) = 0;
  // Connection state changes. `cause` is set for kDisconnected: what failed
  // and what to do about it.
  virtual void on_state(StreamState state, const Error* cause) = 0;
  // The slot did not exist and was created: the stream starts at
  // `consistent_point`; anything before it was never seen by this slot.
  virtual void on_slot_created(Lsn consistent_point) { (void)consistent_point; }
  // The server is at `wal_end` and no transaction is half-received: every
  // transaction committed before it has been delivered.
  virtual void on_progress(Lsn wal_end) { (void)wal_end; }
};

class ReplicationStream : public std::enable_shared_from_this<ReplicationStream> {
 public:
  ReplicationStream(boost::asio::any_io_executor executor, ReplicationStreamOptions options,
                    ReplicationListener& listener);
  ~ReplicationStream();

  // Starts connecting and streaming in the background; returns at once.
  void start();
  // Stops streaming (sends a last status update when connected). Returns at
  // once; on_state(kStopped) follows on the executor.
  void stop();
  // The consumer durably handled every transaction up to `end_lsn`. Thread-safe.
  void acknowledge(Lsn end_lsn);

  StreamState state() const { return state_; }
  // Last position sent to the server as flushed (confirmed). Thread-safe
  // (written on the stream's executor, read by monitors and tests elsewhere:
  // a plain member was a data race found by scripts/tsan).
  Lsn confirmed_lsn() const { return confirmed_lsn_.load(std::memory_order_relaxed); }
  // Latest WAL end reported by the server.
  Lsn server_wal_end() const { return server_wal_end_; }
  // Times the stream was lost (or could not start) and is tried again. Thread-safe.
  std::uint64_t reconnects() const { return reconnects_.load(std::memory_order_relaxed); }

 private:
  boost::asio::awaitable<void> run();
  boost::asio::awaitable<Result<void>> stream_once();
  boost::asio::awaitable<Result<void>> prepare_slot(pg::AsyncConnection& connection);
  boost::asio::awaitable<Result<void>> consume(pg::AsyncConnection& connection);
  Result<void> handle_copy_data(std::string_view bytes, TransactionAssembler& assembler,
                                bool& reply_requested);
  Lsn flush_position(bool transaction_open) const;
  Result<void> send_status(pg::AsyncConnection& connection, Lsn flush, bool reply_requested);
  void set_state(StreamState state, const Error* cause = nullptr);

  boost::asio::any_io_executor executor_;
  std::atomic<std::uint64_t> reconnects_{0};
  ReplicationStreamOptions options_;
  ReplicationListener& listener_;
  boost::asio::steady_timer backoff_timer_;
  // consume() waits on it until the next status update is due; cancelled to
  // send one sooner (an acknowledgement) or to stop. A member, not a local of
  // consume()'s frame: that frame can be destroyed unresumed (its io_context
  // shut down), and a pointer to its timer was then left for acknowledge()
  // and stop() to cancel freed memory.
  boost::asio::steady_timer status_timer_;
  // The connection stream_once() streams on, for stop() to cancel. Owned by
  // stream_once()'s frame; set only while that frame holds it (cleared
  // however the frame ends, also destroyed unresumed).
  pg::AsyncConnection* active_connection_ = nullptr;
  bool stopping_ = false;
  bool running_ = false;
  StreamState state_ = StreamState::kStopped;

  // Positions; touched only on the executor.
  Lsn delivered_lsn_ = 0;     // end_lsn of the last transaction handed to the listener
  Lsn acknowledged_lsn_ = 0;  // highest end_lsn the consumer acknowledged
  Lsn idle_safe_lsn_ = 0;     // WAL end seen while nothing was in flight
  std::atomic<Lsn> confirmed_lsn_{0};
  Lsn server_wal_end_ = 0;
  Lsn received_lsn_ = 0;  // end of the last WAL data received
};

}  // namespace shapeproxy::replication

#include "shapes/snapshot_taker.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/error_codes.h"
#include "common/on_strand.h"
#include "common/text.h"
#include "replication/publication.h"
#include "shapes/on_exception.h"
#include "shapes/snapshot_query.h"

namespace shapeproxy::shapes {
namespace asio = boost::asio;

SnapshotTaker::SnapshotTaker(asio::any_io_executor executor,
                             std::shared_ptr<pg::ConnectionPool> pool, SnapshotTakerOptions options,
                             FallbackRefresher& fallback, Lifetime lifetime,
                             SnapshotTakerHooks hooks)
    : executor_(std::move(executor)),
      pool_(std::move(pool)),
      options_(std::move(options)),
      fallback_(fallback),
      lifetime_(std::move(lifetime)),
      hooks_(std::move(hooks)) {}

// A fallback query whose rows `take` awaits while it makes the shape's
// files: the outcome, and a timer cancelled when it is set.
struct SnapshotTaker::PendingQuery {
  explicit PendingQuery(const asio::any_io_executor& executor)
      : done(executor, asio::steady_timer::time_point::max()) {}
  asio::steady_timer done;
  std::optional<Result<std::shared_ptr<const SnapshotRows>>> outcome;
};

void SnapshotTaker::stop() {
  stopped_ = true;
  cancel_thread_.join();
}

void SnapshotTaker::start(std::shared_ptr<Shape> shape) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  asio::co_spawn(executor_, take(shape, lifetime_().lock()),
                 on_exception(executor_, "an initial query", [this, weak = lifetime_(), shape] {
                   // Its readers wait for the shape to be ready: they are
                   // answered (503) when it goes.
                   auto alive = weak.lock();
                   if (alive && shape->phase() != Shape::Phase::kGone) hooks_.failed(shape);
                 }));
}

asio::awaitable<void> SnapshotTaker::take(std::shared_ptr<Shape> shape,
                                          std::shared_ptr<const void> keep_alive) {
  if (!keep_alive) co_return;
  // What cancels this query (see note_reader_gone); gone with this frame.
  Run& run = runs_[shape.get()];
  struct Forget {
    SnapshotTaker& taker;
    const Shape* shape;
    ~Forget() { taker.runs_.erase(shape); }
  } forget_run{*this, shape.get()};
  auto fail = [&](const Error& error) {
    spdlog::warn("shapes: initial query of {} failed: {}", shape->handle(),
                 text::log_safe(error.to_string()));
    if (!run.abandoned) note_query_failure(shape, error);
    hooks_.failed(shape);
  };
  const Error abandoned{std::string(error_codes::kQueryCancelled),
                        "nobody waits for the shape any more", ""};
  // The shape's directory, with meta.json made durable (fsyncs).
  auto create_files = [&]() -> std::optional<Error> {
    if (!options_.shapes_dir) return std::nullopt;
    const auto dir = *options_.shapes_dir / shape->handle();
    auto files = storage::ShapeFiles::create(dir, to_json(shape->meta()));
    if (!files) {
      // Created part way (e.g. at the open-files limit): nothing of it stays.
      // remove_all needs a descriptor to list the directory, which the
      // open-files limit may refuse: then what create() makes before its
      // changes file is removed by name (no descriptor needed).
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
      if (ec) {
        for (const char* name : {"meta.json.tmp", "meta.json", "changes.log"})
          std::filesystem::remove(dir / name, ec);
        std::filesystem::remove(dir, ec);
      }
      return files.error();
    }
    shape->attach_files(std::move(files).value());
    return std::nullopt;
  };
  // In degraded mode the initial query is a fallback query like the others:
  // capped, and sent to the standby when there is one.
  const bool from_fallback = fallback_.active() && fallback_.has_source();
  if (!from_fallback) {
    if (auto failed = create_files()) co_return fail(*failed);
  }
  // Then the snapshot is rendered while its rows arrive, and its first chunk
  // streamed to the readers that take it (rfc/0005). Whatever ends this
  // frame before the stream is finished cuts those readers' responses.
  std::shared_ptr<SnapshotStream> stream;
  if (from_fallback && shape->definition().log == LogMode::kFull) {
    stream = std::make_shared<SnapshotStream>(
        shape->renderer(), shape->log().chunk_bytes(),
        [this, executor = executor_, weak = lifetime_(), key = shape.get()] {
          // Readers waiting for the shape may take the stream now.
          asio::post(executor, [this, weak, key] {
            if (!weak.lock()) return;
            if (auto it = ready_waiters_.find(key); it != ready_waiters_.end())
              it->second.wake_all();
          });
        });
    streams_[shape.get()] = stream;
  }
  struct EndStream {
    SnapshotTaker& taker;
    const Shape* shape;
    const std::shared_ptr<SnapshotStream>& stream;
    ~EndStream() {
      if (!stream) return;
      stream->fail();  // nothing once finished
      taker.streams_.erase(shape);
    }
  } end_stream{*this, shape.get(), stream};
  std::optional<Result<SnapshotRows>> rows;
  std::shared_ptr<const SnapshotRows> shared_rows;  // from_fallback: the query's shared result
  {
    // The table's fair share of the pool: beyond it, wait (holding nothing)
    // until one of its initial queries ends.
    const std::string table_name = table_key(shape->table().schema, shape->table().name);
    if (!co_await wait_for_table_slot(table_name, shape, run)) co_return fail(abandoned);
    ++table_slots_[table_name].running;
    struct Slot {
      SnapshotTaker& taker;
      const std::string& table;
      ~Slot() { taker.release_table_slot(table); }
    } slot{*this, table_name};

    auto lease = co_await pool_->acquire();
    if (!lease) co_return fail(lease.error());
    replication::TableName table{shape->table().schema, shape->table().name};
    auto published =
        co_await replication::add_table_to_publication(**lease, options_.publication_name, table);
    if (!published) co_return fail(published.error());
    if (run.abandoned) co_return fail(abandoned);
    if (!from_fallback) {
      run.cancel = std::shared_ptr<PGcancel>(PQgetCancel((*lease)->native()), PQfreeCancel);
      auto queried = co_await query_snapshot(**lease, shape->definition(), options_.timeout);
      run.cancel.reset();
      rows.emplace(std::move(queried));
    }
  }
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  if (from_fallback) {
    RowsObserver on_rows;
    if (stream) {
      on_rows.rows = [stream](std::span<const Row> batch) { stream->add(batch); };
      // The first chunk ends as soon as the last row is in.
      on_rows.end = [stream](const PgSnapshot& snapshot) { stream->finish(snapshot); };
    }
    // The query runs (on the fallback strand, its rows rendered there) while
    // the shape's directory is made here: its fsyncs wait for the disk, not
    // for this core. The query's coroutine starts before this one goes on
    // (the strand runs them in order) and leaves the strand at its first wait.
    auto query = std::make_shared<PendingQuery>(executor_);
    asio::co_spawn(executor_,
                   run_query(fallback_, shape, std::move(on_rows), query, lifetime_().lock()),
                   asio::detached);
    co_await asio::post(executor_, asio::use_awaitable);
    // Removed meanwhile: no directory for it (nothing would remove it).
    if (shape->phase() == Shape::Phase::kGone) co_return;
    if (auto failed = create_files()) co_return fail(*failed);
    while (!query->outcome) co_await query->done.async_wait(asio::as_tuple(asio::use_awaitable));
    auto fresh = std::move(*query->outcome);
    if (!fresh) {
      fallback_.note_refusal(shape, fresh.error());
      co_return fail(fresh.error());
    }
    shared_rows = std::move(fresh).value();
  } else if (!*rows) {
    co_return fail(rows->error());
  }
  if (shape->phase() == Shape::Phase::kGone) co_return;
  std::size_t count = shared_rows ? shared_rows->rows.size() : (*rows)->rows.size();
  ShapeLog::Chunks rendered;  // by the stream: not rendered again
  if (stream) {
    // A query joined under way, or a recent result reused, came whole.
    if (stream->rows() == 0) stream->add(shared_rows->rows);
    if (stream->rows() == count) {
      stream->finish(shared_rows->snapshot);  // unless the query's end did
      rendered = stream->take_chunks();
    }
  }
  // Degraded mode: answered from memory first, stored right after (there is
  // no replication to acknowledge, and an fdatasync of a big snapshot can
  // take longer than the query itself).
  auto applied = shared_rows
                     ? shape->apply_snapshot(shared_rows, Shape::SnapshotStorage::kAfterServing,
                                             std::move(rendered))
                     : shape->apply_snapshot(std::move(*rows).value());
  if (!applied) co_return fail(applied.error());
  spdlog::info("shapes: {} ready with {} rows", shape->handle(), count);
  // The waiting readers are woken first: their wake-ups are queued on the
  // strand before whatever `ready` posts (a log flush, which would store
  // deferred rows) and before this frame goes on below.
  if (auto it = ready_waiters_.find(shape.get()); it != ready_waiters_.end()) {
    it->second.wake_all();
    ready_waiters_.erase(it);
  }
  hooks_.ready(shape);
  if (!shape->has_deferred_state()) co_return;
  // Their answers go out while the rows are stored.
  co_await asio::post(executor_, asio::use_awaitable);
  if (auto stored = shape->store_deferred_state(); !stored) {
    spdlog::error("shapes: storing the rows of {} failed: {}", shape->handle(),
                  stored.error().to_string());
    if (shape->phase() != Shape::Phase::kGone) hooks_.failed(shape);
  }
}

asio::awaitable<void> SnapshotTaker::run_query(FallbackRefresher& fallback,
                                               std::shared_ptr<Shape> shape, RowsObserver on_rows,
                                               std::shared_ptr<PendingQuery> pending,
                                               std::shared_ptr<const void> keep_alive) {
  if (!keep_alive) co_return;
  std::optional<Result<std::shared_ptr<const SnapshotRows>>> outcome;
  try {
    outcome.emplace(co_await fallback.query(shape->definition(), std::move(on_rows)));
  } catch (const std::exception& e) {
    outcome.emplace(
        Error{"snapshot_failed", std::string("the fallback query failed: ") + e.what(), ""});
  }
  pending->outcome = std::move(outcome);
  pending->done.cancel();
}

asio::awaitable<bool> SnapshotTaker::wait_until_ready(const std::shared_ptr<Shape>& shape,
                                                      const std::shared_ptr<ReadTicket>& ticket,
                                                      bool streamable) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  // Held here: ticket->unpark must outlive the wait (WaitList empties it
  // when the wait ends, also when this frame is destroyed unresumed).
  std::shared_ptr<ReadTicket> held = ticket;
  auto streaming = [&] { return streamable && stream(shape) != nullptr; };
  while (shape->phase() == Shape::Phase::kSnapshotting && !held->cancelled && !streaming()) {
    // The read's cancel (its client went away) wakes this waiter alone.
    co_await ready_waiters_[shape.get()].wait(executor_, &held->unpark);
    if (auto it = ready_waiters_.find(shape.get());
        it != ready_waiters_.end() && it->second.empty())
      ready_waiters_.erase(it);
    if (held->cancelled) note_reader_gone(shape);
  }
  if (ticket->cancelled) co_return false;
  co_return shape->phase() == Shape::Phase::kReady ||
      (shape->phase() == Shape::Phase::kSnapshotting && streaming());
}

std::shared_ptr<SnapshotStream> SnapshotTaker::stream(const std::shared_ptr<Shape>& shape) const {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  auto it = streams_.find(shape.get());
  if (it == streams_.end() || !it->second->started()) return nullptr;
  return it->second;
}

void SnapshotTaker::forget(const std::shared_ptr<Shape>& shape) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  if (auto it = streams_.find(shape.get()); it != streams_.end()) it->second->fail();
  if (auto it = ready_waiters_.find(shape.get()); it != ready_waiters_.end()) {
    it->second.wake_all();
    ready_waiters_.erase(it);
  }
}

asio::awaitable<bool> SnapshotTaker::wait_for_table_slot(const std::string& table_name,
                                                         const std::shared_ptr<Shape>& shape,
                                                         Run& run) {
  while (table_slots_[table_name].running >= table_share()) {
    bool give_up = false;
    {
      asio::steady_timer wake(executor_, asio::steady_timer::time_point::max());
      // In the queue while this frame waits (also if it is destroyed there).
      struct Queued {
        std::list<asio::steady_timer*>& queue;
        std::list<asio::steady_timer*>::iterator position;
        Run& run;
        ~Queued() {
          queue.erase(position);
          run.slot_wait = nullptr;
        }
      } queued{table_slots_[table_name].queue,
               table_slots_[table_name].queue.insert(table_slots_[table_name].queue.end(), &wake),
               run};
      run.slot_wait = &wake;
      co_await wake.async_wait(asio::as_tuple(asio::use_awaitable));
      give_up = run.abandoned || shape->phase() == Shape::Phase::kGone || stopped_;
    }
    if (give_up) {
      wake_table_queue(table_name);  // a slot handed to this waiter goes on
      co_return false;
    }
  }
  co_return true;
}

void SnapshotTaker::note_reader_gone(const std::shared_ptr<Shape>& shape) {
  if (shape->phase() != Shape::Phase::kSnapshotting) return;
  // Readers of its stream still wait for the rows.
  if (auto it = streams_.find(shape.get()); it != streams_.end() && it->second->subscribers() > 0)
    return;
  if (auto it = ready_waiters_.find(shape.get()); it != ready_waiters_.end()) {
    if (!it->second.empty()) return;  // others still wait
    ready_waiters_.erase(it);
  }
  auto run = runs_.find(shape.get());
  if (run == runs_.end() || run->second.abandoned) return;
  run->second.abandoned = true;
  spdlog::info("shapes: nobody waits for {} any more; its initial query is cancelled",
               shape->handle());
  if (run->second.slot_wait) run->second.slot_wait->cancel();  // take() gives up
  if (auto cancel = run->second.cancel) {
    if (!stopped_) {
      asio::post(cancel_thread_, [cancel] {
        char error[256];
        if (!PQcancel(cancel.get(), error, sizeof error))
          spdlog::debug("shapes: cancelling an initial query failed: {}", error);
      });
    }
  }
}

std::size_t SnapshotTaker::table_share() const {
  if (options_.table_share > 0) return options_.table_share;
  return std::max<std::size_t>(1, pool_->max_connections() / 2);
}

void SnapshotTaker::release_table_slot(const std::string& table) {
  auto it = table_slots_.find(table);
  if (it != table_slots_.end() && it->second.running > 0) --it->second.running;
  wake_table_queue(table);
}

void SnapshotTaker::wake_table_queue(const std::string& table) {
  auto it = table_slots_.find(table);
  if (it == table_slots_.end()) return;
  if (!it->second.queue.empty()) {
    if (it->second.running < table_share())
      it->second.queue.front()->cancel();  // the oldest waiter tries again
  } else if (it->second.running == 0) {
    table_slots_.erase(it);
  }
}

// A failure caused by the request itself (its where clause or parameters
// against the table's data: SQLSTATE class 22, e.g. division by zero or an
// integer out of range) is permanent: the readers waiting for this shape get
// a 400 naming it instead of a 503 that invites retries of the same query.
void SnapshotTaker::note_query_failure(const std::shared_ptr<Shape>& shape, const Error& error) {
  std::erase_if(rejections_, [](const auto& entry) { return entry.second.first.expired(); });
  const std::string field = shape->definition().request.where ? "where" : "table";
  if (error_codes::is_client_data_error(error.code)) {
    rejections_[shape.get()] = {
        shape, InvalidRequest{field, "the where clause cannot be evaluated on the table's rows: " +
                                         error.message}};
  } else if (error.code == error_codes::kSqlstateQueryCanceled && options_.timeout.count() > 0) {
    // statement_timeout: this shape's query is too costly to serve here;
    // its clients are told so instead of retrying it (and holding a
    // connection) again and again.
    rejections_[shape.get()] = {
        shape, InvalidRequest{field, "the shape's initial query took longer than " +
                                         std::to_string(options_.timeout.count()) +
                                         " ms and was cancelled; narrow the where clause (the "
                                         "limit is --snapshot-timeout-ms)"}};
  }
}

std::optional<InvalidRequest> SnapshotTaker::rejection(const std::shared_ptr<Shape>& shape) const {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  auto it = rejections_.find(shape.get());
  if (it == rejections_.end() || it->second.first.lock() != shape) return std::nullopt;
  return it->second.second;
}

}  // namespace shapeproxy::shapes

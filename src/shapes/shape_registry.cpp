#include "shapes/shape_registry.h"

#include <rocksdb/write_batch.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <charconv>
#include <functional>
#include <utility>

#include "common/error_codes.h"
#include "common/text.h"
#include "replication/publication.h"
#include "shapes/shape_meta.h"
#include "shapes/snapshot_query.h"

namespace shapeproxy::shapes {
namespace asio = boost::asio;
using replication::Change;

// One read in flight: finished once, or cancelled by the client going away.
struct ShapeRegistry::Ticket {
  std::function<void(ReadOutcome)> done;
  bool finished = false;
  bool cancelled = false;
  std::function<void()> unpark;  // set while parked

  void finish(ReadOutcome outcome) {
    if (finished || cancelled) return;
    finished = true;
    unpark = nullptr;
    auto callback = std::move(done);
    callback(std::move(outcome));
  }
};

// A parked live read. Its deadline is watched by the registry's one
// deadline timer (no timer per waiter: parking and waking stay cheap).
struct ShapeRegistry::Waiter {
  LogOffset after;
  std::shared_ptr<Ticket> ticket;
  std::chrono::steady_clock::time_point deadline;
};

namespace {
// The completion of a coroutine spawned on `executor`: an exception that
// escapes it is logged and `on_failure` runs on the strand (failing the
// requests that wait on it), never swallowed as with asio::detached.
template <class OnFailure>
auto on_exception(const asio::any_io_executor& executor, const char* what, OnFailure on_failure) {
  return asio::bind_executor(
      executor, [what, on_failure = std::move(on_failure)](std::exception_ptr thrown) mutable {
        if (!thrown) return;
        std::string why = "unknown exception";
        try {
          std::rethrow_exception(thrown);
        } catch (const std::exception& e) {
          why = e.what();
        } catch (...) {
        }
        spdlog::error("shapes: {} threw: {}", what, text::log_safe(why));
        on_failure();
      });
}

// Electric's text for a handle that names a shape of another definition.
constexpr char kHandleMismatch[] =
    "The specified shape definition and handle do not match. Please ensure the shape definition "
    "is correct or omit the shape handle from the request to obtain a new one.";
}  // namespace

ShapeRegistry::ShapeRegistry(asio::any_io_executor executor,
                             std::shared_ptr<pg::ConnectionPool> pool, ShapeRegistryOptions options)
    : executor_(std::move(executor)), pool_(std::move(pool)), options_(std::move(options)) {}

ShapeRegistry::~ShapeRegistry() { stop(); }

void ShapeRegistry::stop() {
  if (std::exchange(stopped_, true)) return;
  stopping_->store(true);
  // Every job is bounded once stopping_ is set: a running compaction gives
  // up, queued ones return at once, a sync finishes its fdatasync calls.
  const auto started = std::chrono::steady_clock::now();
  compaction_thread_.join();
  sync_thread_.join();
  read_pool_.join();
  cancel_thread_.join();
  spdlog::info("shapes: worker threads stopped in {} ms",
               std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - started)
                   .count());
}

std::function<void()> ShapeRegistry::read(ShapeDefinitionRequest definition, ReadRequest request,
                                          std::function<void(ReadOutcome)> done) {
  auto ticket = std::make_shared<Ticket>();
  ticket->done = std::move(done);
  auto self = shared_from_this();
  asio::post(executor_, [self, definition = std::move(definition), request = std::move(request),
                         ticket]() mutable {
    if (self->serve_known(definition, request, ticket)) return;
    asio::co_spawn(
        self->executor_,
        [self, definition = std::move(definition), request = std::move(request), ticket]() mutable {
          return self->serve(std::move(definition), std::move(request), ticket);
        },
        on_exception(self->executor_, "serving a read", [ticket] {
          ticket->finish(Unavailable{"internal error while serving this shape; retry shortly"});
        }));
  });
  return [self, ticket] {
    asio::post(self->executor_, [ticket] {
      ticket->cancelled = true;
      if (auto unpark = std::exchange(ticket->unpark, nullptr)) unpark();
    });
  };
}

void ShapeRegistry::remove(ShapeDefinitionRequest definition, std::optional<std::string> handle,
                           std::function<void(Result<DeleteOutcome>)> done) {
  auto self = shared_from_this();
  // Called once: by the coroutine, or with an error if it throws.
  auto finish = [once = std::make_shared<std::function<void(Result<DeleteOutcome>)>>(
                     std::move(done))](Result<DeleteOutcome> outcome) {
    if (auto done = std::exchange(*once, nullptr)) done(std::move(outcome));
  };
  asio::co_spawn(
      executor_,
      [self, definition = std::move(definition), handle = std::move(handle),
       done = finish]() mutable -> asio::awaitable<void> {
        // A definition (table given) is validated like a read's, and a
        // handle given with it must name a shape of that definition.
        std::optional<std::string> key;
        if (!definition.table.empty()) {
          auto table = co_await self->table_schema(definition.schema, definition.table);
          if (!table) {
            if (table.error().code == error_codes::kTableNotFound ||
                table.error().code == error_codes::kTableUnsupported) {
              done(DeleteOutcome{false, InvalidRequest{"table", table.error().message}});
            } else {
              done(table.error());
            }
            co_return;
          }
          auto made = ShapeDefinition::make(definition, table.value());
          if (auto* invalid = std::get_if<InvalidRequest>(&made)) {
            done(DeleteOutcome{false, *invalid});
            co_return;
          }
          key = std::get<ShapeDefinition>(made).key;
        }
        std::shared_ptr<Shape> shape;
        if (handle) {
          auto it = self->by_handle_.find(*handle);
          if (it != self->by_handle_.end()) shape = it->second;
          if (shape && key && shape->definition().key != *key) {
            done(DeleteOutcome{false, InvalidRequest{"handle", kHandleMismatch}});
            co_return;
          }
        } else if (key) {
          auto it = self->by_key_.find(*key);
          if (it != self->by_key_.end()) shape = it->second;
        }
        if (shape) self->rotate(shape, "deleted by request");
        done(DeleteOutcome{shape != nullptr, std::nullopt});
      },
      on_exception(executor_, "a delete", [finish] {
        finish(Error{"internal", "internal error while deleting the shape", ""});
      }));
}

std::size_t ShapeRegistry::shape_count() const { return by_key_.size(); }

void ShapeRegistry::update_gauges() {
  shapes_held_.store(by_key_.size(), std::memory_order_relaxed);
  std::uint64_t snapshotting = 0;
  for (const auto& [key, shape] : by_key_)
    snapshotting += shape->phase() == Shape::Phase::kSnapshotting;
  shapes_snapshotting_.store(snapshotting, std::memory_order_relaxed);
  std::uint64_t parked = 0;
  for (const auto& [shape, list] : waiters_) parked += list.size();
  parked_reads_.store(parked, std::memory_order_relaxed);
}

asio::awaitable<void> ShapeRegistry::serve(ShapeDefinitionRequest request_definition,
                                           ReadRequest request, std::shared_ptr<Ticket> ticket) {
  auto self = shared_from_this();
  std::shared_ptr<Shape> shape = known_shape(request_definition, request);
  if (!shape) {
    auto found = co_await find_shape(request_definition, request, ticket);
    if (!found) co_return;  // answered
    shape = std::move(found);
  }
  if (!co_await wait_until_ready(shape, ticket)) {
    if (ticket->cancelled) co_return;
    if (auto rejected = query_rejection(shape)) {
      ticket->finish(*rejected);
      co_return;
    }
    auto refused = refusal(shape);
    ticket->finish(refused ? *refused
                           : Unavailable{"the shape's initial query failed; retry shortly"});
    co_return;
  }
  answer_or_park(shape, request, ticket);
}

// Serves a read of a known, ready shape without a coroutine (no frames to
// allocate): the usual case of a re-parked long-poll. False when the read
// needs serve().
bool ShapeRegistry::serve_known(const ShapeDefinitionRequest& definition,
                                const ReadRequest& request, const std::shared_ptr<Ticket>& ticket) {
  auto shape = known_shape(definition, request);
  if (!shape || shape->phase() != Shape::Phase::kReady) return false;
  answer_or_park(shape, request, ticket);
  return true;
}

void ShapeRegistry::answer_or_park(const std::shared_ptr<Shape>& shape, const ReadRequest& request,
                                   const std::shared_ptr<Ticket>& ticket) {
  if (ticket->cancelled) return;
  last_read_[shape.get()] = std::chrono::steady_clock::now();
  // Degraded mode, and this shape's last refresh was refused (too many
  // fallback queries): what it holds may be stale, so say so instead.
  if (auto refused = fallback_mode_ ? refusal(shape) : std::nullopt) {
    ticket->finish(*refused);
    return;
  }
  std::shared_ptr<LogDiskRead> disk;
  if (auto outcome = read_now(*shape, request, &disk)) {
    ticket->finish(std::move(*outcome));
    return;
  }
  if (disk) return read_from_disk(shape, std::move(disk), ticket);
  park(shape, request.offset, ticket, std::chrono::steady_clock::now() + options_.live_timeout);
}

namespace {

bool same_request(const ShapeDefinitionRequest& a, const ShapeDefinitionRequest& b) {
  return a.schema == b.schema && a.table == b.table && a.where == b.where && a.params == b.params &&
         a.columns == b.columns && a.replica == b.replica && a.log == b.log;
}

}  // namespace

// A read at an offset of a known handle whose definition is spelled exactly
// as when that shape was made is a read of that shape: no table lookup,
// where-clause parse or key to build (every re-parked long-poll comes here).
std::shared_ptr<Shape> ShapeRegistry::known_shape(const ShapeDefinitionRequest& definition,
                                                  const ReadRequest& request) const {
  if (request.start != ReadRequest::Start::kAt || !request.handle) return nullptr;
  auto it = by_handle_.find(*request.handle);
  if (it == by_handle_.end() || !same_request(it->second->definition().request, definition))
    return nullptr;
  return it->second;
}

// The shape a read is for, from its definition; null when the read was
// answered (an invalid definition, a database error, a must-refetch).
asio::awaitable<std::shared_ptr<Shape>> ShapeRegistry::find_shape(
    const ShapeDefinitionRequest& request_definition, const ReadRequest& request,
    const std::shared_ptr<Ticket>& ticket) {
  auto table = co_await table_schema(request_definition.schema, request_definition.table);
  if (!table) {
    if (table.error().code == error_codes::kTableNotFound ||
        table.error().code == error_codes::kTableUnsupported) {
      ticket->finish(InvalidRequest{"table", table.error().message});
    } else {
      ticket->finish(Unavailable{"database unavailable: " + table.error().message});
    }
    co_return nullptr;
  }
  auto made = ShapeDefinition::make(request_definition, table.value());
  if (auto* invalid = std::get_if<InvalidRequest>(&made)) {
    ticket->finish(*invalid);
    co_return nullptr;
  }
  auto& definition = std::get<ShapeDefinition>(made);
  if (request.start != ReadRequest::Start::kAt) co_return shape_for(definition);
  auto it = request.handle ? by_handle_.find(*request.handle) : by_handle_.end();
  if (it == by_handle_.end() || it->second->definition().key != definition.key) {
    ticket->finish(MustRefetch{shape_for(definition)->handle()});
    co_return nullptr;
  }
  co_return it->second;
}

asio::awaitable<Result<std::shared_ptr<const TableSchema>>> ShapeRegistry::table_schema(
    const std::string& schema, const std::string& table) {
  std::string key = table_key(schema, table);
  if (auto it = tables_.find(key); it != tables_.end()) co_return it->second;
  auto lease = co_await pool_->acquire();
  if (!lease) co_return lease.error();
  auto loaded = co_await load_table_schema(**lease, schema, table);
  if (!loaded) co_return loaded.error();
  auto shared = std::make_shared<const TableSchema>(std::move(loaded).value());
  tables_[key] = shared;
  co_return shared;
}

std::shared_ptr<Shape> ShapeRegistry::shape_for(const ShapeDefinition& definition) {
  if (auto it = by_key_.find(definition.key); it != by_key_.end()) return it->second;
  auto shape = std::make_shared<Shape>(definition, new_handle(definition.key), options_.chunk_bytes,
                                       state_store());
  by_key_[definition.key] = shape;
  by_handle_[shape->handle()] = shape;
  by_table_[table_key(shape->table().schema, shape->table().name)].push_back(shape);
  spdlog::info("shapes: new shape {} on {}.{}", shape->handle(),
               text::log_safe(shape->table().schema), text::log_safe(shape->table().name));
  asio::co_spawn(executor_, take_snapshot(shape),
                 on_exception(executor_, "an initial query", [self = shared_from_this(), shape] {
                   // Its readers wait for the shape to be ready: they are
                   // answered (503) when it goes.
                   if (shape->phase() != Shape::Phase::kGone) self->forget(shape);
                 }));
  update_gauges();
  return shape;
}

asio::awaitable<void> ShapeRegistry::take_snapshot(std::shared_ptr<Shape> shape) {
  auto self = shared_from_this();
  // What cancels this query (see note_reader_gone); gone with this frame.
  SnapshotRun& run = snapshot_runs_[shape.get()];
  struct Forget {
    ShapeRegistry& registry;
    const Shape* shape;
    ~Forget() { registry.snapshot_runs_.erase(shape); }
  } forget_run{*this, shape.get()};
  auto fail = [&](const Error& error) {
    spdlog::warn("shapes: initial query of {} failed: {}", shape->handle(),
                 text::log_safe(error.to_string()));
    if (!run.abandoned) note_query_failure(shape, error);
    forget(shape);
  };
  const Error abandoned{std::string(error_codes::kQueryCancelled),
                        "nobody waits for the shape any more", ""};
  if (options_.shapes_dir) {
    auto files =
        storage::ShapeFiles::create(*options_.shapes_dir / shape->handle(), to_json(shape->meta()));
    if (!files) co_return fail(files.error());
    shape->attach_files(std::move(files).value());
  }
  // In degraded mode the initial query is a fallback query like the others:
  // capped, and sent to the standby when there is one.
  const bool from_fallback = fallback_mode_ && fallback_rows_;
  std::optional<Result<SnapshotRows>> rows;
  std::shared_ptr<const SnapshotRows> shared_rows;  // from_fallback: the query's shared result
  {
    // The table's fair share of the pool: beyond it, wait (holding nothing)
    // until one of its initial queries ends.
    const std::string table_name = table_key(shape->table().schema, shape->table().name);
    if (!co_await wait_for_table_slot(table_name, shape, run)) co_return fail(abandoned);
    ++table_slots_[table_name].running;
    struct Slot {
      ShapeRegistry& registry;
      const std::string& table;
      ~Slot() { registry.release_table_slot(table); }
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
      auto queried =
          co_await query_snapshot(**lease, shape->definition(), options_.snapshot_timeout);
      run.cancel.reset();
      rows.emplace(std::move(queried));
    }
  }
  if (from_fallback) {
    auto fresh = co_await fallback_rows_(shape->definition());
    if (!fresh) {
      note_refusal(shape, fresh.error());
      co_return fail(fresh.error());
    }
    shared_rows = std::move(fresh).value();
  } else if (!*rows) {
    co_return fail(rows->error());
  }
  if (shape->phase() == Shape::Phase::kGone) co_return;
  std::size_t count = shared_rows ? shared_rows->rows.size() : (*rows)->rows.size();
  // Degraded mode: answered from memory first, stored right after (there is
  // no replication to acknowledge, and an fdatasync of a big snapshot can
  // take longer than the query itself).
  auto applied = shared_rows
                     ? shape->apply_snapshot(shared_rows, Shape::SnapshotStorage::kAfterServing)
                     : shape->apply_snapshot(std::move(*rows).value());
  if (!applied) co_return fail(applied.error());
  if (shape->files()) dirty_.insert(shape);
  schedule_flush();  // buffered transactions: durable, then acknowledged
  // Memory freed after building the snapshot goes back to the system, off
  // the strand (malloc_trim can take long with a big heap).
  if (!stopped_) asio::post(compaction_thread_, [] { release_free_memory(); });
  spdlog::info("shapes: {} ready with {} rows", shape->handle(), count);
  for (auto* timer : ready_waiters_[shape.get()]) timer->cancel();
  ready_waiters_.erase(shape.get());
  wake_waiters(shape);
  store_snapshot(shape);
}

// A snapshot installed with kAfterServing: written and synced on the
// compaction thread, then meta.json names it (back on the strand). If the
// shape went meanwhile, what the worker wrote is removed with it.
void ShapeRegistry::store_snapshot(const std::shared_ptr<Shape>& shape) {
  if (stopped_) return;  // not stored: discarded at start-up, like a crash before the store
  auto store = shape->begin_snapshot_store();
  if (!store) return;
  asio::post(compaction_thread_,
             [weak = weak_from_this(), executor = executor_, shape, store, stopping = stopping_] {
               auto written = Shape::write_snapshot_store(*store, *stopping);
               asio::post(executor, [weak, shape, store, written = std::move(written)] {
                 auto self = weak.lock();
                 if (!self) return;
                 if (shape->phase() == Shape::Phase::kGone) {
                   if (shape->files()) (void)shape->files()->remove();
                   return;
                 }
                 auto finished =
                     written ? shape->finish_snapshot_store(*store) : Result<void>(written.error());
                 if (!finished) {
                   spdlog::error("shapes: cannot store the snapshot of {}: {}", shape->handle(),
                                 finished.error().to_string());
                   self->rotate(shape, "its snapshot could not be stored");
                 }
               });
             });
}

asio::awaitable<bool> ShapeRegistry::wait_until_ready(const std::shared_ptr<Shape>& shape,
                                                      const std::shared_ptr<Ticket>& ticket) {
  while (shape->phase() == Shape::Phase::kSnapshotting && !ticket->cancelled) {
    asio::steady_timer wake(executor_, asio::steady_timer::time_point::max());
    auto& list = ready_waiters_[shape.get()];
    auto position = list.insert(list.end(), &wake);
    // The read's cancel (its client went away) wakes this wait; `wake`
    // lives in this frame, which is suspended until then.
    ticket->unpark = [&wake] { wake.cancel(); };
    co_await wake.async_wait(asio::as_tuple(asio::use_awaitable));
    ticket->unpark = nullptr;
    if (auto it = ready_waiters_.find(shape.get()); it != ready_waiters_.end()) {
      it->second.erase(position);
      if (it->second.empty()) ready_waiters_.erase(it);
    }
    if (ticket->cancelled) note_reader_gone(shape);
  }
  co_return !ticket->cancelled && shape->phase() == Shape::Phase::kReady;
}

// Waits while `table` runs its share of initial queries. False when the
// shape is given up meanwhile (nobody waits, gone, or shutting down).
asio::awaitable<bool> ShapeRegistry::wait_for_table_slot(const std::string& table_name,
                                                         const std::shared_ptr<Shape>& shape,
                                                         SnapshotRun& run) {
  while (table_slots_[table_name].running >= snapshot_share()) {
    bool give_up = false;
    {
      asio::steady_timer wake(executor_, asio::steady_timer::time_point::max());
      // In the queue while this frame waits (also if it is destroyed there).
      struct Queued {
        std::list<asio::steady_timer*>& queue;
        std::list<asio::steady_timer*>::iterator position;
        SnapshotRun& run;
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

void ShapeRegistry::note_reader_gone(const std::shared_ptr<Shape>& shape) {
  if (shape->phase() != Shape::Phase::kSnapshotting || ready_waiters_.count(shape.get())) return;
  auto run = snapshot_runs_.find(shape.get());
  if (run == snapshot_runs_.end() || run->second.abandoned) return;
  run->second.abandoned = true;
  spdlog::info("shapes: nobody waits for {} any more; its initial query is cancelled",
               shape->handle());
  if (run->second.slot_wait) run->second.slot_wait->cancel();  // take_snapshot gives up
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

std::size_t ShapeRegistry::snapshot_share() const {
  if (options_.snapshot_share > 0) return options_.snapshot_share;
  return std::max<std::size_t>(1, pool_->max_connections() / 2);
}

void ShapeRegistry::release_table_slot(const std::string& table) {
  auto it = table_slots_.find(table);
  if (it != table_slots_.end() && it->second.running > 0) --it->second.running;
  wake_table_queue(table);
}

void ShapeRegistry::wake_table_queue(const std::string& table) {
  auto it = table_slots_.find(table);
  if (it == table_slots_.end()) return;
  if (!it->second.queue.empty()) {
    if (it->second.running < snapshot_share())
      it->second.queue.front()->cancel();  // the oldest waiter tries again
  } else if (it->second.running == 0) {
    table_slots_.erase(it);
  }
}

ReadResult ShapeRegistry::result(const Shape& shape, LogOffset offset,
                                 std::shared_ptr<const std::string> body, bool up_to_date) const {
  ReadResult out;
  out.handle = shape.handle();
  out.offset = offset;
  out.body = std::move(body);
  out.up_to_date = up_to_date;
  out.schema_json = shape.schema_json();
  out.fallback = fallback_mode_;
  return out;
}

void ShapeRegistry::set_serving_mode(bool fallback) {
  if (fallback == fallback_mode_) return;
  fallback_mode_ = fallback;
  refusals_.clear();
  spdlog::info("shapes: serving {}", fallback ? "from direct queries (fallback)" : "live");
  if (fallback && fallback_rows_ && !fallback_loop_running_) {
    fallback_loop_running_ = true;
    asio::co_spawn(executor_, fallback_loop(),
                   on_exception(executor_, "the fallback loop", [self = shared_from_this()] {
                     self->fallback_loop_running_ = false;
                   }));
  }
}

void ShapeRegistry::refresh_all() {
  if (!fallback_rows_) return;
  auto self = shared_from_this();
  asio::co_spawn(
      executor_,
      [self]() -> asio::awaitable<void> {
        std::vector<std::shared_ptr<Shape>> shapes;
        for (const auto& [key, shape] : self->by_key_) shapes.push_back(shape);
        for (const auto& shape : shapes) co_await self->refresh(shape);
      },
      on_exception(executor_, "refreshing every shape", [] {}));
}

asio::awaitable<void> ShapeRegistry::fallback_loop() {
  auto self = shared_from_this();
  asio::steady_timer pause(executor_);
  while (fallback_mode_) {
    auto started = std::chrono::steady_clock::now();
    std::vector<std::shared_ptr<Shape>> active;
    for (const auto& [key, shape] : by_key_) {
      auto read = last_read_.find(shape.get());
      bool recently_read =
          read != last_read_.end() && started - read->second < std::chrono::minutes(5);
      if (waiters_.count(shape) || recently_read) active.push_back(shape);
    }
    for (const auto& shape : active) co_await refresh(shape);
    pause.expires_at(started + options_.fallback_poll_interval);
    co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  fallback_loop_running_ = false;
}

asio::awaitable<void> ShapeRegistry::refresh(std::shared_ptr<Shape> shape) {
  if (shape->phase() != Shape::Phase::kReady) co_return;
  const auto mark = shape->begin_refresh();
  auto rows = co_await fallback_rows_(shape->definition());
  note_refusal(shape, rows ? Error{} : rows.error());
  if (!rows) {
    shape->end_refresh();
    spdlog::debug("shapes: refreshing {} failed: {}", shape->handle(),
                  text::log_safe(rows.error().to_string()));
    co_return;
  }
  if (shape->phase() != Shape::Phase::kReady) {
    shape->end_refresh();
    co_return;
  }
  auto grew = shape->apply_refresh(**rows, mark, last_seen_lsn_ + 1);
  shape->end_refresh();
  if (!grew) {
    spdlog::warn("shapes: refreshing {} failed: {}", shape->handle(), grew.error().to_string());
    co_return;
  }
  if (!grew.value()) co_return;
  // up-to-date's global_last_seen_lsn: after the group just logged (as
  // after a replicated commit).
  last_seen_lsn_ = std::max(last_seen_lsn_, shape->last_logged_lsn() + 1);
  if (shape->files()) dirty_.insert(shape);
  wake_waiters(shape);
  schedule_flush();
}

void ShapeRegistry::note_refusal(const std::shared_ptr<Shape>& shape, const Error& outcome) {
  std::erase_if(refusals_, [](const auto& entry) { return entry.second.first.expired(); });
  if (outcome.code != error_codes::kOverloaded) {
    // Served, or failed otherwise (database unreachable: what the shape
    // holds is served, flagged).
    refusals_.erase(shape.get());
    return;
  }
  auto retry_after = std::chrono::ceil<std::chrono::seconds>(options_.fallback_poll_interval);
  Unavailable refused{"overloaded: " + outcome.message + "; retry after " +
                          std::to_string(std::max<std::int64_t>(1, retry_after.count())) + " s",
                      std::max(retry_after, std::chrono::seconds(1))};
  refusals_[shape.get()] = {shape, std::move(refused)};
}

// A failure caused by the request itself (its where clause or parameters
// against the table's data: SQLSTATE class 22, e.g. division by zero or an
// integer out of range) is permanent: the readers waiting for this shape get
// a 400 naming it instead of a 503 that invites retries of the same query.
void ShapeRegistry::note_query_failure(const std::shared_ptr<Shape>& shape, const Error& error) {
  std::erase_if(query_rejections_, [](const auto& entry) { return entry.second.first.expired(); });
  const std::string field = shape->definition().request.where ? "where" : "table";
  if (error_codes::is_client_data_error(error.code)) {
    query_rejections_[shape.get()] = {
        shape, InvalidRequest{field, "the where clause cannot be evaluated on the table's rows: " +
                                         error.message}};
  } else if (error.code == error_codes::kSqlstateQueryCanceled &&
             options_.snapshot_timeout.count() > 0) {
    // statement_timeout: this shape's query is too costly to serve here;
    // its clients are told so instead of retrying it (and holding a
    // connection) again and again.
    query_rejections_[shape.get()] = {
        shape, InvalidRequest{field, "the shape's initial query took longer than " +
                                         std::to_string(options_.snapshot_timeout.count()) +
                                         " ms and was cancelled; narrow the where clause (the "
                                         "limit is --snapshot-timeout-ms)"}};
  }
}

std::optional<InvalidRequest> ShapeRegistry::query_rejection(
    const std::shared_ptr<Shape>& shape) const {
  auto it = query_rejections_.find(shape.get());
  if (it == query_rejections_.end() || it->second.first.lock() != shape) return std::nullopt;
  return it->second.second;
}

std::optional<Unavailable> ShapeRegistry::refusal(const std::shared_ptr<Shape>& shape) const {
  auto it = refusals_.find(shape.get());
  if (it == refusals_.end() || it->second.first.lock() != shape) return std::nullopt;
  return it->second.second;
}

std::string ShapeRegistry::up_to_date_json() const {
  // SSE clients continue from "<global_last_seen_lsn>_0", so the value lies
  // after every operation delivered (<commit lsn>_<n>) and before every one
  // to come; see note_progress() and apply_transaction().
  return "{\"headers\":{\"control\":\"up-to-date\",\"global_last_seen_lsn\":\"" +
         std::to_string(last_seen_lsn_) + "\"}}";
}

std::optional<ReadOutcome> ShapeRegistry::read_now(Shape& shape, const ReadRequest& request,
                                                   std::shared_ptr<LogDiskRead>* disk) {
  const ShapeLog& log = shape.log();
  if (request.start == ReadRequest::Start::kNow) {
    auto body = std::make_shared<const std::string>("[" + up_to_date_json() + "]");
    return result(shape, log.end(), std::move(body), true);
  }
  LogOffset after =
      request.start == ReadRequest::Start::kBeforeAll ? LogOffset::start() : request.offset;
  // Past everything this proxy has seen: no offset it handed out lies there
  // (operations sit at commit LSNs, up-to-date at global_last_seen_lsn), and
  // a live read parked there would skip the operations others receive.
  // Electric answers the same 400. Judged only once the stream has reported
  // a position since start (before that last_seen_lsn_ is not known).
  if (request.start == ReadRequest::Start::kAt && !after.is_snapshot() && last_seen_lsn_ > 0 &&
      after.tx > std::max<std::uint64_t>(last_seen_lsn_, log.end().tx)) {
    return InvalidRequest{"offset", "out of bounds for this shape"};
  }
  // Before a compaction point (or past the snapshot): the client resyncs.
  if (!log.contains(after)) return MustRefetch{shape.handle()};
  auto slice = log.read_after(after);
  if (slice.error) {
    spdlog::error("shapes: cannot read {} from disk: {}", shape.handle(), *slice.error);
    return Unavailable{"cannot read the shape log from disk; retry shortly"};
  }
  if (slice.on_disk) {  // older than the in-memory tail: read off the strand
    auto plan = shape.plan_disk_read(after);
    if (!plan) {
      spdlog::error("shapes: cannot read {} from disk: {}", shape.handle(),
                    plan.error().to_string());
      return Unavailable{"cannot read the shape log from disk; retry shortly"};
    }
    *disk = std::move(plan).value();
    return std::nullopt;
  }
  if (slice.chunk) return result(shape, slice.last, slice.chunk, false);
  if (slice.stored.file) {  // on disk: not read here (the HTTP layer sends it from the file)
    ReadResult stored = result(shape, slice.last, nullptr, false);
    stored.stored = std::move(slice.stored);
    return stored;
  }
  if (slice.entries.empty() && request.live) return std::nullopt;  // park
  std::string body = "[";
  for (const auto& entry : slice.entries) {
    if (body.size() > 1) body += ',';
    body.append(entry);
  }
  close_body(body, slice.entries.size(), slice.reached_end ? up_to_date_json() : std::string());
  return result(shape, slice.last, std::make_shared<const std::string>(std::move(body)),
                slice.reached_end);
}

// Operations no longer in the shape's memory tail: read on read_pool_, the
// answer given back on the strand (where tickets live).
void ShapeRegistry::read_from_disk(const std::shared_ptr<Shape>& shape,
                                   std::shared_ptr<LogDiskRead> plan,
                                   const std::shared_ptr<Ticket>& ticket) {
  asio::post(read_pool_, [weak = weak_from_this(), executor = executor_, shape, ticket,
                          plan = std::move(plan)] {
    auto slice = plan->run();
    asio::post(executor, [weak, shape, ticket, slice = std::move(slice)]() mutable {
      auto self = weak.lock();
      if (!self || ticket->finished || ticket->cancelled) return;
      if (!slice) {
        spdlog::error("shapes: cannot read {} from disk: {}", shape->handle(),
                      slice.error().to_string());
        ticket->finish(Unavailable{"cannot read the shape log from disk; retry shortly"});
        return;
      }
      if (shape->phase() == Shape::Phase::kGone) {
        ticket->finish(MustRefetch{});
        return;
      }
      auto& read = slice.value();
      close_body(read.body, read.count, read.reached_end ? self->up_to_date_json() : std::string());
      ticket->finish(self->result(*shape, read.last,
                                  std::make_shared<const std::string>(std::move(read.body)),
                                  read.reached_end));
    });
  });
}

void ShapeRegistry::park(const std::shared_ptr<Shape>& shape, LogOffset after,
                         const std::shared_ptr<Ticket>& ticket,
                         std::chrono::steady_clock::time_point deadline) {
  auto waiter = std::make_shared<Waiter>();
  waiter->after = after;
  waiter->ticket = ticket;
  waiter->deadline = deadline;
  auto& list = waiters_[shape];
  auto position = list.insert(list.end(), waiter);
  std::weak_ptr<Shape> key = shape;
  std::weak_ptr<ShapeRegistry> weak = shared_from_this();
  auto unpark = [weak, key, position] {
    auto self = weak.lock();
    if (!self) return;
    auto shape = key.lock();
    if (!shape) return;
    if (auto it = self->waiters_.find(shape); it != self->waiters_.end()) {
      it->second.erase(position);
      if (it->second.empty()) self->waiters_.erase(it);
    }
    self->update_gauges();
  };
  ticket->unpark = std::move(unpark);
  update_gauges();
  arm_live_deadline(deadline);
}

// One timer for every parked read: set to the earliest deadline (new parks
// come with later deadlines, so it is rarely moved).
void ShapeRegistry::arm_live_deadline(std::chrono::steady_clock::time_point deadline) {
  if (deadline_armed_ && deadline >= deadline_at_) return;
  if (!deadline_timer_) deadline_timer_ = std::make_unique<asio::steady_timer>(executor_);
  deadline_armed_ = true;
  deadline_at_ = deadline;
  deadline_timer_->expires_at(deadline);  // a pending wait completes as aborted
  std::weak_ptr<ShapeRegistry> weak = shared_from_this();
  deadline_timer_->async_wait([weak](boost::system::error_code ec) {
    if (ec) return;  // moved (a newer wait is pending) or shutting down
    if (auto self = weak.lock()) self->expire_waiters();
  });
}

// Answers every parked read whose deadline passed (up-to-date at its
// offset), then re-arms the timer for the earliest remaining deadline.
void ShapeRegistry::expire_waiters() {
  deadline_armed_ = false;
  const auto now = std::chrono::steady_clock::now();
  std::optional<std::chrono::steady_clock::time_point> next;
  std::shared_ptr<const std::string> body;
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    const std::shared_ptr<Shape>& shape = it->first;
    auto& list = it->second;
    for (auto w = list.begin(); w != list.end();) {
      if ((*w)->deadline > now) {
        if (!next || (*w)->deadline < *next) next = (*w)->deadline;
        ++w;
        continue;
      }
      auto waiter = std::move(*w);
      w = list.erase(w);
      waiter->ticket->unpark = nullptr;
      if (!body) body = std::make_shared<const std::string>("[" + up_to_date_json() + "]");
      waiter->ticket->finish(result(*shape, waiter->after, body, true));
    }
    it = list.empty() ? waiters_.erase(it) : std::next(it);
  }
  update_gauges();
  if (next) arm_live_deadline(*next);
}

void ShapeRegistry::wake_waiters(const std::shared_ptr<Shape>& shape) {
  auto it = waiters_.find(shape);
  if (it == waiters_.end()) return;
  auto parked = std::move(it->second);
  waiters_.erase(it);
  // Waiters at the same offset share one response body.
  std::map<LogOffset, ReadOutcome> by_offset;
  for (auto& waiter : parked) {
    const auto deadline = waiter->deadline;
    waiter->ticket->unpark = nullptr;
    if (shape->phase() == Shape::Phase::kGone) {
      waiter->ticket->finish(MustRefetch{});
      continue;
    }
    auto found = by_offset.find(waiter->after);
    if (found == by_offset.end()) {
      ReadRequest request;
      request.start = ReadRequest::Start::kAt;
      request.offset = waiter->after;
      std::shared_ptr<LogDiskRead> disk;
      auto outcome = read_now(*shape, request, &disk);
      if (disk) {  // appended past the tail since it parked
        read_from_disk(shape, std::move(disk), waiter->ticket);
        continue;
      }
      if (!outcome) {  // nothing new for this offset: stay parked
        park(shape, waiter->after, waiter->ticket, deadline);
        continue;
      }
      found = by_offset.emplace(waiter->after, std::move(*outcome)).first;
    }
    waiter->ticket->finish(found->second);
  }
  update_gauges();
}

void ShapeRegistry::release_waiters() {
  auto parked = std::move(waiters_);
  waiters_.clear();
  auto body = std::make_shared<const std::string>("[" + up_to_date_json() + "]");
  for (auto& [shape, list] : parked) {
    for (auto& waiter : list) {
      waiter->ticket->unpark = nullptr;
      waiter->ticket->finish(result(*shape, waiter->after, body, true));
    }
  }
  update_gauges();
}

void ShapeRegistry::start_housekeeping() {
  if (options_.idle_timeout.count() == 0) return;
  housekeeping_ = std::make_unique<asio::steady_timer>(executor_, options_.idle_check_interval);
  housekeeping_->async_wait([weak = weak_from_this()](boost::system::error_code ec) {
    auto self = weak.lock();
    if (ec || !self) return;
    self->remove_idle_shapes();
    self->start_housekeeping();
  });
}

void ShapeRegistry::remove_idle_shapes() {
  auto now = std::chrono::steady_clock::now();
  std::vector<std::shared_ptr<Shape>> idle;
  for (const auto& [key, shape] : by_key_) {
    if (shape->phase() != Shape::Phase::kReady || waiters_.count(shape)) continue;
    auto& last = last_read_[shape.get()];
    if (last == std::chrono::steady_clock::time_point{}) last = now;  // loaded: count from now
    if (now - last >= options_.idle_timeout) idle.push_back(shape);
  }
  for (const auto& shape : idle) rotate(shape, "idle");
}

void ShapeRegistry::forget(const std::shared_ptr<Shape>& shape) {
  shape->mark_gone();
  last_read_.erase(shape.get());
  compaction_retry_.erase(shape.get());
  dirty_.erase(shape);
  if (shape->files()) {
    if (auto removed = shape->files()->remove(); !removed) {
      spdlog::warn("shapes: {}", removed.error().to_string());
    }
  }
  if (auto it = by_key_.find(shape->definition().key); it != by_key_.end() && it->second == shape) {
    by_key_.erase(it);
  }
  by_handle_.erase(shape->handle());
  auto& list = by_table_[table_key(shape->table().schema, shape->table().name)];
  list.erase(std::remove(list.begin(), list.end(), shape), list.end());
  if (auto it = ready_waiters_.find(shape.get()); it != ready_waiters_.end()) {
    for (auto* timer : it->second) timer->cancel();
  }
  wake_waiters(shape);
  update_gauges();
}

void ShapeRegistry::rotate(const std::shared_ptr<Shape>& shape, const char* why) {
  spdlog::info("shapes: {} on {}.{} removed ({}); its clients will resync", shape->handle(),
               text::log_safe(shape->table().schema), text::log_safe(shape->table().name), why);
  forget(shape);
}

void ShapeRegistry::note_progress(replication::Lsn wal_end) {
  // Every commit before wal_end was delivered; the next one starts at or
  // after it, and WAL records are 8-byte aligned.
  if (wal_end > 0) last_seen_lsn_ = std::max(last_seen_lsn_, wal_end - 1);
}

void ShapeRegistry::apply_transaction(const replication::Transaction& transaction) {
  // The next commit record starts past this one's end.
  last_seen_lsn_ = std::max(last_seen_lsn_, transaction.commit_lsn + 1);
  for (const auto& relation : transaction.relations) {
    std::vector<std::shared_ptr<Shape>> stale;
    for (const auto& [table, shapes] : by_table_) {
      for (const auto& shape : shapes) {
        if (shape->table().oid == relation->oid && !shape->matches_relation(*relation)) {
          stale.push_back(shape);
        }
      }
    }
    for (auto it = tables_.begin(); it != tables_.end();) {
      it = it->second->oid == relation->oid && !stale.empty() ? tables_.erase(it) : std::next(it);
    }
    for (const auto& shape : stale) rotate(shape, "table schema changed");
  }
  std::map<std::string, std::vector<const Change*>> by_table;
  for (const auto& change : transaction.changes) {
    if (change.kind == Change::Kind::kTruncate) {
      for (const auto& relation : change.truncated) {
        auto shapes = by_table_[table_key(relation->schema, relation->name)];
        for (const auto& shape : shapes) rotate(shape, "table truncated");
      }
      continue;
    }
    by_table[table_key(change.relation->schema, change.relation->name)].push_back(&change);
  }
  for (const auto& [table, changes] : by_table) {
    auto found = by_table_.find(table);
    if (found == by_table_.end()) continue;
    auto shapes = found->second;  // a copy: waking waiters may not alter it, but be safe
    // Only the shapes each change may concern (see shape_index.h).
    for (const auto& route : shape_index_.route(table, shapes, changes)) {
      const auto& shape = shapes[route.shape];
      if (!shape->apply_transaction(transaction, route.all ? changes : route.changes)) {
        // Rows changed without a logged operation (a column it does not
        // serve): still committed to the store with the next sync.
        if (shape->files() && shape->state_pending()) dirty_.insert(shape);
        continue;
      }
      if (shape->files()) dirty_.insert(shape);
      wake_waiters(shape);
    }
  }
  applied_end_lsn_ = std::max(applied_end_lsn_, transaction.end_lsn);
  schedule_flush();
}

void ShapeRegistry::schedule_flush() {
  if (flush_scheduled_) return;
  flush_scheduled_ = true;
  // Posted: transactions delivered in the same burst share one sync.
  asio::post(executor_, [weak = weak_from_this()] {
    if (auto self = weak.lock()) self->flush();
  });
}

// Group commit: the records of every transaction applied so far are handed
// to the OS here, on the strand; the fdatasync calls run on sync_thread_ so
// replication keeps flowing meanwhile, and whatever arrives during a sync is
// covered by the next one.
void ShapeRegistry::flush() {
  flush_scheduled_ = false;
  if (sync_in_flight_) {
    flush_after_sync_ = true;  // finish_flush() flushes again
    return;
  }
  std::vector<std::pair<std::shared_ptr<Shape>, storage::ShapeFiles::PendingSync>> batch;
  for (const auto& shape : dirty_) {
    if (shape->phase() == Shape::Phase::kGone || !shape->files()) continue;
    if (auto written = shape->files()->write(); !written) {
      note_write_failure(shape, written.error());
      return;
    }
    // Its rows changed so far are committed to the state store once these
    // records are durable (finish_flush), never before.
    shape->seal_state();
    batch.emplace_back(shape, shape->files()->pending_sync());
  }
  if (write_failing_) {
    write_failing_ = false;
    spdlog::info("shapes: shape logs are written again; the slot advances");
  }
  dirty_.clear();
  // A shape still taking its snapshot holds transactions that are not on disk.
  replication::Lsn durable = applied_end_lsn_;
  for (const auto& [key, shape] : by_key_) {
    if (shape->phase() == Shape::Phase::kSnapshotting && shape->has_buffered()) durable = 0;
  }
  if (batch.empty()) {
    finish_flush({}, durable, std::nullopt);
    return;
  }
  sync_in_flight_ = true;
  asio::post(sync_thread_, [weak = weak_from_this(), executor = executor_, batch = std::move(batch),
                            durable]() mutable {
    std::optional<Error> failure;
    // Nothing may escape this thread (it would end the process).
    try {
      for (const auto& [shape, file] : batch) {
        if (auto synced = storage::ShapeFiles::sync_written(file); !synced) {
          failure = synced.error();
        }
      }
    } catch (const std::exception& thrown) {
      failure = Error{"internal", std::string("syncing shape logs: ") + thrown.what(), ""};
    }
    asio::post(executor, [weak, batch = std::move(batch), durable, failure]() mutable {
      if (auto self = weak.lock()) self->finish_flush(std::move(batch), durable, failure);
    });
  });
}

// A shape's records could not be handed to the OS (no space, I/O error).
// Its file was cut back to the last whole write and the records stay
// queued; nothing past them is acknowledged to the slot, so PostgreSQL
// keeps the WAL and nothing is lost. Retried every second (and with every
// new transaction); logged once per episode.
ShapeRegistry::StorageState ShapeRegistry::storage_state() const {
  std::lock_guard lock(storage_mu_);
  return storage_;
}

void ShapeRegistry::set_storage_failure(std::optional<Error> failure) {
  std::lock_guard lock(storage_mu_);
  if (!failure) {
    storage_.failing = false;
    storage_.error.clear();
    return;
  }
  if (!storage_.failing) storage_.since = std::chrono::system_clock::now();
  storage_.failing = true;
  storage_.error = failure->message;
}

void ShapeRegistry::note_write_failure(const std::shared_ptr<Shape>& shape, const Error& error) {
  if (!write_failing_) {
    spdlog::error(
        "shapes: cannot write the log of {}: {}; transactions from here on are not "
        "acknowledged to the replication slot until it is written (retrying every second)",
        shape->handle(), error.to_string());
  }
  write_failing_ = true;
  set_storage_failure(error);
  if (stopped_) return;
  if (!write_retry_) write_retry_ = std::make_unique<asio::steady_timer>(executor_);
  if (write_retry_armed_) return;
  write_retry_armed_ = true;
  write_retry_->expires_after(std::chrono::seconds(1));
  write_retry_->async_wait([weak = weak_from_this()](boost::system::error_code ec) {
    auto self = weak.lock();
    if (!self) return;
    self->write_retry_armed_ = false;
    if (!ec) self->schedule_flush();
  });
}

void ShapeRegistry::finish_flush(std::vector<std::pair<std::shared_ptr<Shape>, PendingSync>> synced,
                                 replication::Lsn durable_lsn, std::optional<Error> failure) {
  sync_in_flight_ = false;
  if (failure) {
    spdlog::error("shapes: cannot make shape logs durable: {}; the slot will not advance",
                  failure->to_string());
    for (const auto& [shape, file] : synced) dirty_.insert(shape);  // try again
    set_storage_failure(*failure);
    schedule_flush();
    return;
  }
  for (const auto& [shape, file] : synced) {
    if (shape->phase() == Shape::Phase::kGone || !shape->files()) continue;
    shape->files()->mark_synced(file);
    if (options_.skip_state_commit && options_.skip_state_commit()) continue;
    if (auto committed = shape->commit_state(); !committed) {
      // The store lags the log: harmless (the tail is replayed at load),
      // retried with the next sync; no compaction meanwhile.
      spdlog::error("shapes: cannot store the rows of {}: {}", shape->handle(),
                    committed.error().to_string());
      dirty_.insert(shape);
      continue;
    }
    // A changes_only log holds no snapshot rows: folding its partial updates
    // would invent rows, so it is not compacted.
    const bool foldable = shape->definition().log == LogMode::kFull;
    if (foldable && shape->files()->changes_bytes() > options_.compact_bytes) {
      start_compaction(shape);
    }
  }
  set_storage_failure(std::nullopt);  // written and synced
  if (durable_lsn > 0) {
    std::lock_guard lock(storage_mu_);
    storage_.durable_lsn = std::max(storage_.durable_lsn, durable_lsn);
  }
  if (on_durable_ && durable_lsn > 0) on_durable_(durable_lsn);
  if (!dirty_.empty() || std::exchange(flush_after_sync_, false)) schedule_flush();
}

// Compaction: the shape's files are switched to a new changes file here (on
// the strand); the worker folds the older ones into a new snapshot file;
// back on the strand, meta.json and the in-memory log switch to it. Every
// transaction applied meanwhile lands in the new changes file and stays.
void ShapeRegistry::start_compaction(const std::shared_ptr<Shape>& shape) {
  if (stopped_) return;
  // After a failure, not again before the back-off passes (a shape whose
  // files cannot be folded must not be retried on every sync).
  if (auto it = compaction_retry_.find(shape.get()); it != compaction_retry_.end()) {
    if (std::chrono::steady_clock::now() < it->second.not_before) return;
  }
  auto begun = shape->begin_compaction();
  if (!begun) {
    note_compaction_failure(shape, begun.error(), "start compacting");
    return;
  }
  auto compaction = std::move(begun).value();
  if (!compaction) return;
  compaction->stop = stopping_;
  compaction->step = options_.compaction_step;
  auto started = std::chrono::steady_clock::now();
  asio::post(compaction_thread_, [weak = weak_from_this(), executor = executor_, shape, compaction,
                                  built_hook = options_.compaction_built, started] {
    std::optional<Error> failure;
    if (auto built = Shape::build_compaction(*compaction); !built) failure = built.error();
    if (built_hook && !failure) {
      try {
        built_hook();
      } catch (...) {
      }
    }
    asio::post(executor, [weak, shape, compaction, failure, started] {
      if (auto self = weak.lock()) self->finish_compaction(shape, compaction, failure, started);
    });
  });
}

void ShapeRegistry::note_compaction_failure(const std::shared_ptr<Shape>& shape, const Error& error,
                                            const char* what) {
  auto& retry = compaction_retry_[shape.get()];
  retry.shape = shape;
  retry.delay = std::clamp(retry.delay * 2, std::chrono::seconds(30), std::chrono::seconds(3600));
  retry.not_before = std::chrono::steady_clock::now() + retry.delay;
  spdlog::error("shapes: cannot {} {}: {}; its log stays uncompacted, next try in {} s", what,
                shape->handle(), error.to_string(), retry.delay.count());
}

void ShapeRegistry::finish_compaction(const std::shared_ptr<Shape>& shape,
                                      const std::shared_ptr<ShapeCompaction>& compaction,
                                      std::optional<Error> failure,
                                      std::chrono::steady_clock::time_point started) {
  if (shape->phase() == Shape::Phase::kGone) {
    // Removed meanwhile: the worker may have written into the removed directory.
    std::error_code ec;
    std::filesystem::remove_all(compaction->source.dir, ec);
    return;
  }
  if (!failure) {
    if (auto finished = shape->finish_compaction(*compaction); !finished) {
      failure = finished.error();
    }
  }
  if (failure) {
    shape->abandon_compaction();
    if (failure->code == error_codes::kCancelled) {
      spdlog::info("shapes: compacting {} stopped: {}", shape->handle(), failure->message);
    } else {
      note_compaction_failure(shape, *failure, "compact");
    }
    return;
  }
  compaction_retry_.erase(shape.get());
  auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now() - started)
                    .count();
  spdlog::info("shapes: compacted {} up to {} into {} rows in {} ms", shape->handle(),
               compaction->point.to_string(), compaction->rows, millis);
}

// The load reads no snapshot chunk body; this pass does, after start-up, on
// the compaction worker: a chunk whose checksum fails drops its shape (its
// clients get 409 and refetch) before it is served again.
void ShapeRegistry::verify_snapshot(const std::shared_ptr<Shape>& shape) {
  if (!shape->files()) return;
  auto path = shape->files()->dir() / shape->meta().snapshot_file;
  asio::post(compaction_thread_, [weak = weak_from_this(), executor = executor_, shape,
                                  path = std::move(path), stopping = stopping_] {
    if (stopping->load()) return;
    auto verified = storage::ShapeFiles::verify_snapshot(path);
    if (verified || verified.error().code != error_codes::kStorageCorrupt) return;
    asio::post(executor, [weak, shape, error = verified.error()] {
      auto self = weak.lock();
      if (!self || shape->phase() == Shape::Phase::kGone) return;
      spdlog::error("shapes: {}: {}", shape->handle(), error.to_string());
      self->rotate(shape, "its snapshot file is damaged");
    });
  });
}

Result<std::size_t> ShapeRegistry::load() {
  if (!options_.shapes_dir) return std::size_t{0};
  std::error_code ec;
  std::filesystem::create_directories(*options_.shapes_dir, ec);
  if (ec) {
    return Error{"storage_io",
                 "cannot create " + options_.shapes_dir->string() + ": " + ec.message(),
                 "check permissions of the data directory"};
  }
  auto store = open_state_store();
  if (!store) return store.error();
  std::size_t loaded = 0;
  std::set<std::uint64_t> state_ids;
  for (const auto& entry : std::filesystem::directory_iterator(*options_.shapes_dir, ec)) {
    if (!entry.is_directory() || entry.path().filename().string().starts_with(".") ||
        entry.path().filename() == kStateDir) {
      continue;
    }
    auto discard = [&](const std::string& why) {
      spdlog::warn("shapes: dropping saved shape {}: {}", entry.path().filename().string(), why);
      std::filesystem::remove_all(entry.path(), ec);
    };
    // Files that break what the shape needs (corrupt, invalid, pointing
    // elsewhere): never served, never fatal to the others; kept aside for
    // the operator. Its clients get 409 (the handle is unknown) and refetch.
    auto quarantine = [&](const std::string& why) {
      const auto aside = quarantine_dir(*options_.shapes_dir) / entry.path().filename();
      std::error_code moved;
      std::filesystem::create_directories(aside.parent_path(), moved);
      std::filesystem::remove_all(aside, moved);
      std::filesystem::rename(entry.path(), aside, moved);
      if (moved) std::filesystem::remove_all(entry.path(), moved);
      spdlog::warn("shapes: quarantined saved shape {} ({}): {}", entry.path().string(),
                   moved ? "removed: " + moved.message() : "moved to " + aside.string(), why);
    };
    auto opened = storage::ShapeFiles::open(entry.path());
    if (!opened && opened.error().code == error_codes::kStorageResource) {
      // Not corruption (too many open files, no memory): keep the files and
      // refuse to start rather than drop a shape its clients still follow.
      return Error{"storage_io",
                   "cannot open saved shape " + entry.path().string() + ": " +
                       opened.error().message + " (nothing was removed)",
                   "fix the cause (permissions, the open-files limit) and restart"};
    }
    if (!opened) {
      quarantine(opened.error().to_string());
      continue;
    }
    auto [files, stored] = std::move(opened).value();
    auto meta = shape_meta_from_json(stored.meta);
    if (!meta) {
      quarantine(meta.error().to_string());
      continue;
    }
    if (!meta->snapshot) {
      discard("its initial snapshot never completed");
      continue;
    }
    auto table = std::make_shared<const TableSchema>(meta->table);
    auto made = ShapeDefinition::make(meta->request, table);
    if (auto* invalid = std::get_if<InvalidRequest>(&made)) {
      quarantine(invalid->message);
      continue;
    }
    auto definition = std::get<ShapeDefinition>(std::move(made));
    if (by_key_.count(definition.key)) {
      discard("a newer instance of the same shape exists");
      continue;
    }
    if (meta->state_id) state_store_->reserve_through(*meta->state_id);
    auto shape = Shape::restore(std::move(definition), *meta, std::move(stored), std::move(files),
                                options_.chunk_bytes, state_store_);
    if (!shape && shape.error().code == error_codes::kStorageResource) {
      return Error{"storage_io",
                   "cannot read saved shape " + entry.path().string() + ": " +
                       shape.error().message + " (nothing was removed)",
                   "fix the cause (the open-files limit, memory) and restart"};
    }
    if (!shape) {
      quarantine(shape.error().to_string());
      continue;
    }
    auto& restored = shape.value();
    state_ids.insert(restored->meta().state_id.value_or(0));
    tables_.emplace(table_key(table->schema, table->name), table);
    by_key_[restored->definition().key] = restored;
    by_handle_[restored->handle()] = restored;
    by_table_[table_key(table->schema, table->name)].push_back(restored);
    // Handles are "<hash>-<micros>"; new ones must sort after every loaded one.
    const auto& loaded_handle = restored->handle();
    const auto dash = loaded_handle.find('-');
    std::int64_t micros = 0;
    if (dash != std::string::npos) {
      std::from_chars(loaded_handle.data() + dash + 1, loaded_handle.data() + loaded_handle.size(),
                      micros);
    }
    last_handle_micros_ = std::max(last_handle_micros_, micros);
    verify_snapshot(restored);
    ++loaded;
  }
  drop_orphan_states(state_ids);
  update_gauges();
  if (ec)
    return Error{"storage_io", "cannot list " + options_.shapes_dir->string() + ": " + ec.message(),
                 ""};
  return loaded;
}

std::shared_ptr<StateStore> ShapeRegistry::state_store() {
  if (!state_store_) {
    if (auto opened = open_state_store(); !opened)
      throw std::runtime_error(opened.error().to_string());
  }
  return state_store_;
}

Result<void> ShapeRegistry::open_state_store() {
  if (state_store_) return {};
  auto opened = options_.shapes_dir
                    ? StateStore::open(*options_.shapes_dir / kStateDir, options_.state_store)
                    : StateStore::in_memory(options_.state_store);
  if (!opened) return opened.error();
  state_store_ = std::move(opened).value();
  return {};
}

// Rows of shapes that are no more (removed while the process died, or
// discarded at load) leave the store.
void ShapeRegistry::drop_orphan_states(const std::set<std::uint64_t>& loaded) {
  auto ids = state_store_->ids();
  if (!ids) {
    spdlog::warn("shapes: cannot list the state store: {}", ids.error().to_string());
    return;
  }
  for (std::uint64_t id : ids.value()) {
    state_store_->reserve_through(id);
    if (loaded.contains(id)) continue;
    rocksdb::WriteBatch batch;
    StateStore::drop(batch, id);
    if (auto written = state_store_->write(batch); !written)
      spdlog::warn("shapes: {}", written.error().to_string());
  }
}

std::string ShapeRegistry::new_handle(const std::string& key) {
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  last_handle_micros_ = std::max(last_handle_micros_ + 1, static_cast<std::int64_t>(micros));
  char hash[17];
  std::snprintf(hash, sizeof hash, "%08zx", std::hash<std::string>{}(key)&0xffffffffu);
  return std::string(hash) + "-" + std::to_string(last_handle_micros_);
}

}  // namespace shapeproxy::shapes

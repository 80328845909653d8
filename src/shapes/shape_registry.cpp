#include "shapes/shape_registry.h"

#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <utility>

#include "common/error_codes.h"
#include "common/on_strand.h"
#include "common/text.h"
#include "shapes/on_exception.h"

namespace shapeproxy::shapes {
namespace asio = boost::asio;
using replication::Change;

namespace {

// Electric's text for a handle that names a shape of another definition.
constexpr char kHandleMismatch[] =
    "The specified shape definition and handle do not match. Please ensure the shape definition "
    "is correct or omit the shape handle from the request to obtain a new one.";

// The answer when the registry holds max_shapes and none can be evicted.
Unavailable too_many_shapes(std::size_t max_shapes) {
  return Unavailable{"too_many_shapes: the proxy holds its maximum of " +
                         std::to_string(max_shapes) +
                         " shapes (--max-shapes) and every one is being read; retry later",
                     std::chrono::seconds(10)};
}

}  // namespace

ShapeRegistry::ShapeRegistry(asio::any_io_executor executor,
                             std::shared_ptr<pg::ConnectionPool> pool, ShapeRegistryOptions options,
                             ShapeRegistryHooks hooks)
    : executor_(std::move(executor)),
      options_(std::move(options)),
      removed_(std::move(hooks.removed)),
      fallback_(executor_, options_.clock, lifetime(), std::move(hooks.fallback_rows),
                options_.fallback_poll_interval,
                {.active_shapes =
                     [this](Clock::time_point read_since) {
                       ShapeCatalog::Shapes active;
                       for (const auto& shape : catalog_.all()) {
                         if (parking_.has_parked(shape) || catalog_.read_after(*shape, read_since))
                           active.push_back(shape);
                       }
                       return active;
                     },
                 .grew =
                     [this](const std::shared_ptr<Shape>& shape) {
                       reader_.note_logged(shape->last_logged_lsn() + 1);
                       durability_.mark_dirty(shape);
                       parking_.wake(shape);
                       durability_.schedule_flush();
                     },
                 .floor = [this] { return reader_.last_seen_lsn() + 1; }}),
      reader_(executor_, lifetime(), fallback_),
      catalog_(executor_, pool, options_.clock, lifetime(), options_.shapes_dir,
               options_.chunk_bytes, options_.state_store),
      parking_(executor_, options_.clock, lifetime(), reader_, options_.live_timeout),
      durability_(
          executor_, options_.clock, lifetime(),
          {.on_durable = std::move(hooks.on_durable),
           .synced =
               [this](const std::shared_ptr<Shape>& shape) { compactor_.maybe_compact(shape); },
           .holds_buffered =
               [this] {
                 return catalog_.any_of([](const Shape& shape) {
                   return shape.phase() == Shape::Phase::kSnapshotting && shape.has_buffered();
                 });
               },
           .sealing = [this] { return reader_.last_seen_lsn(); },
           .durable = hooks.durable_ends
                          ? std::function<void(const std::vector<DurableEnd>&, std::uint64_t)>(
                                [announce = std::move(hooks.durable_ends)](
                                    const std::vector<DurableEnd>& ends, std::uint64_t sealed) {
                                  ShapeRegistryHooks::DurableEnds out;
                                  out.reserve(ends.size());
                                  for (const auto& each : ends) {
                                    out.emplace_back(each.shape->handle(), each.end);
                                  }
                                  announce(sealed, std::move(out));
                                })
                          : nullptr,
           .skip_state_commit = options_.skip_state_commit}),
      compactor_(
          executor_, options_.clock, lifetime(),
          {.compact_bytes = options_.compact_bytes,
           .built = options_.compaction_built,
           .step = options_.compaction_step},
          [this](const std::shared_ptr<Shape>& shape, const char* why) { rotate(shape, why); }),
      snapshots_(executor_, std::move(pool),
                 {.publication_name = options_.publication_name,
                  .shapes_dir = options_.shapes_dir,
                  .timeout = options_.snapshot_timeout,
                  .table_share = options_.snapshot_share},
                 fallback_, lifetime(),
                 {.failed = [this](const std::shared_ptr<Shape>& shape) { forget(shape); },
                  .ready =
                      [this](const std::shared_ptr<Shape>& shape) {
                        catalog_.update_gauges();
                        durability_.mark_dirty(shape);
                        durability_.schedule_flush();  // buffered transactions: durable, then
                                                       // acknowledged
                        // Memory freed after building the snapshot goes back to the system.
                        compactor_.release_free_memory();
                        parking_.wake(shape);
                        compactor_.store_snapshot(shape);
                      }}) {
  // A chunk that did not decode while sent: the whole file is checked again
  // (on the worker) and the shape rotated when it is damaged.
  reader_.on_damaged_chunk([this](const std::string& handle) {
    if (auto shape = catalog_.by_handle(handle)) compactor_.verify_snapshot(shape);
  });
}

ShapeRegistry::~ShapeRegistry() { stop_workers(); }

Lifetime ShapeRegistry::lifetime() {
  return [this] { return std::weak_ptr<const void>(weak_from_this()); };
}

void ShapeRegistry::stop() {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  stop_workers();
}

void ShapeRegistry::stop_workers() {
  if (std::exchange(stopped_, true)) return;
  // Every job is bounded once stopping: a running compaction gives up,
  // queued ones return at once, a sync finishes its fdatasync calls.
  const auto started = std::chrono::steady_clock::now();
  compactor_.stop();
  durability_.stop();
  reader_.stop();
  snapshots_.stop();
  spdlog::info("shapes: worker threads stopped in {} ms",
               std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - started)
                   .count());
}

std::function<void()> ShapeRegistry::read(ShapeDefinitionRequest definition, ReadRequest request,
                                          std::function<void(ReadOutcome)> done) {
  auto ticket = std::make_shared<ReadTicket>();
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
  // The cancel holds the read weakly: callers keep it in what `done`
  // captures, and a strong ticket there was a cycle (ticket -> done -> the
  // caller's state -> cancel -> ticket) that leaked the read, its exchange
  // and the registry whenever the read ended without finishing (issue 16).
  return [executor = executor_, weak = std::weak_ptr<ReadTicket>(ticket)] {
    asio::post(executor, [weak] {
      auto ticket = weak.lock();
      if (!ticket) return;  // the read is over
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
          auto table = co_await self->catalog_.table_schema(definition.schema, definition.table);
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
          shape = self->catalog_.by_handle(*handle);
          if (shape && key && shape->definition().key != *key) {
            done(DeleteOutcome{false, InvalidRequest{"handle", kHandleMismatch}});
            co_return;
          }
        } else if (key) {
          shape = self->catalog_.by_key(*key);
        }
        if (shape) self->rotate(shape, "deleted by request");
        done(DeleteOutcome{shape != nullptr, std::nullopt});
      },
      on_exception(executor_, "a delete", [finish] {
        finish(Error{"internal", "internal error while deleting the shape", ""});
      }));
}

std::pair<replication::Lsn, ShapeRegistryHooks::DurableEnds> ShapeRegistry::durable_ends() const {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  ShapeRegistryHooks::DurableEnds ends;
  for (const auto& shape : catalog_.all()) {
    if (shape->phase() != Shape::Phase::kReady || !shape->files()) continue;
    const auto last = shape->files()->written_last();
    ends.emplace_back(shape->handle(), last
                                           ? std::optional(LogOffset::at(last->first, last->second))
                                           : std::nullopt);
  }
  return {reader_.last_seen_lsn(), std::move(ends)};
}

std::size_t ShapeRegistry::shape_count() const {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  return catalog_.size();
}

asio::awaitable<void> ShapeRegistry::serve(ShapeDefinitionRequest request_definition,
                                           ReadRequest request,
                                           std::shared_ptr<ReadTicket> ticket) {
  auto self = shared_from_this();
  std::shared_ptr<Shape> shape = known_shape(request_definition, request);
  if (!shape) {
    auto found = co_await find_shape(request_definition, request, ticket);
    if (!found) co_return;  // answered
    shape = std::move(found);
  }
  // A new shape's first chunk may be answered while its query runs.
  const bool streamable = request.may_stream && request.start == ReadRequest::Start::kBeforeAll;
  if (!co_await snapshots_.wait_until_ready(shape, ticket, streamable)) {
    if (ticket->cancelled) co_return;
    if (auto rejected = snapshots_.rejection(shape)) {
      ticket->finish(*rejected);
      co_return;
    }
    auto refused = fallback_.refusal(shape);
    ticket->finish(refused ? *refused
                           : Unavailable{"the shape's initial query failed; retry shortly"});
    co_return;
  }
  if (shape->phase() == Shape::Phase::kSnapshotting) {  // its stream has started
    catalog_.note_read(*shape);
    auto stream = snapshots_.stream(shape);
    ticket->finish(stream ? ReadOutcome(reader_.streaming(*shape, std::move(stream)))
                          : Unavailable{"the shape's initial query failed; retry shortly"});
    co_return;
  }
  answer_or_park(shape, request, ticket);
}

// Serves a read of a known, ready shape without a coroutine (no frames to
// allocate): the usual case of a re-parked long-poll. False when the read
// needs serve().
bool ShapeRegistry::serve_known(const ShapeDefinitionRequest& definition,
                                const ReadRequest& request,
                                const std::shared_ptr<ReadTicket>& ticket) {
  auto shape = known_shape(definition, request);
  if (!shape || shape->phase() != Shape::Phase::kReady) return false;
  answer_or_park(shape, request, ticket);
  return true;
}

void ShapeRegistry::answer_or_park(const std::shared_ptr<Shape>& shape, const ReadRequest& request,
                                   const std::shared_ptr<ReadTicket>& ticket) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  if (ticket->cancelled) return;
  catalog_.note_read(*shape);
  // Degraded mode, and this shape's last refresh was refused (too many
  // fallback queries): what it holds may be stale, so say so instead.
  if (auto refused = fallback_.active() ? fallback_.refusal(shape) : std::nullopt) {
    ticket->finish(*refused);
    return;
  }
  if (request.live && reader_.beyond_seen(*shape, request)) {
    parking_.park_ahead(shape, request.offset, ticket);
    return;
  }
  std::shared_ptr<LogDiskRead> disk;
  if (auto outcome = reader_.read_now(*shape, request, &disk)) {
    ticket->finish(std::move(*outcome));
    return;
  }
  if (disk) return reader_.read_from_disk(shape, std::move(disk), ticket);
  parking_.park(shape, request.offset, ticket);
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
  auto shape = catalog_.by_handle(*request.handle);
  if (!shape || !same_request(shape->definition().request, definition)) return nullptr;
  return shape;
}

// The shape a read is for, from its definition; null when the read was
// answered (an invalid definition, a database error, a must-refetch).
asio::awaitable<std::shared_ptr<Shape>> ShapeRegistry::find_shape(
    const ShapeDefinitionRequest& request_definition, const ReadRequest& request,
    const std::shared_ptr<ReadTicket>& ticket) {
  auto table = co_await catalog_.table_schema(request_definition.schema, request_definition.table);
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
  if (request.start != ReadRequest::Start::kAt) {
    auto made = shape_for(definition);
    if (!made) ticket->finish(too_many_shapes(options_.max_shapes));
    co_return made;
  }
  auto shape = request.handle ? catalog_.by_handle(*request.handle) : nullptr;
  if (!shape || shape->definition().key != definition.key) {
    auto current = shape_for(definition);
    if (current) {
      ticket->finish(MustRefetch{current->handle()});
    } else {
      ticket->finish(too_many_shapes(options_.max_shapes));
    }
    co_return nullptr;
  }
  co_return shape;
}

// Under the limit, or made so by evicting the least recently read ready
// shape nobody waits on (its clients get 409 and refetch).
bool ShapeRegistry::make_room() {
  if (catalog_.size() < options_.max_shapes) return true;
  auto victim = catalog_.least_recently_read(
      [this](const std::shared_ptr<Shape>& shape) { return parking_.has_parked(shape); });
  if (!victim) return false;
  rotate(victim, "evicted: the proxy holds its maximum of shapes (--max-shapes)");
  return catalog_.size() < options_.max_shapes;
}

std::shared_ptr<Shape> ShapeRegistry::shape_for(const ShapeDefinition& definition) {
  if (auto existing = catalog_.by_key(definition.key)) return existing;
  if (!make_room()) return nullptr;
  auto shape = catalog_.add(definition);
  spdlog::info("shapes: new shape {} on {}.{}", shape->handle(),
               text::log_safe(shape->table().schema), text::log_safe(shape->table().name));
  snapshots_.start(shape);
  return shape;
}

void ShapeRegistry::set_serving_mode(bool fallback) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  fallback_.set_active(fallback);
}

void ShapeRegistry::refresh_all() {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  fallback_.refresh_all(catalog_.all());
}

Result<std::size_t> ShapeRegistry::load() {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  auto loaded = catalog_.load();
  if (loaded) {
    for (const auto& shape : catalog_.all()) compactor_.verify_snapshot(shape);
  }
  return loaded;
}

void ShapeRegistry::release_waiters() {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  parking_.release_all();
}

void ShapeRegistry::start_housekeeping() {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  catalog_.start_housekeeping(
      {.idle_timeout = options_.idle_timeout,
       .check_interval = options_.idle_check_interval,
       .parked = [this](const std::shared_ptr<Shape>& shape) { return parking_.has_parked(shape); },
       .remove =
           [this](const ShapeCatalog::Shapes& idle) {
             for (const auto& shape : idle) rotate(shape, "idle");
           }});
}

void ShapeRegistry::forget(const std::shared_ptr<Shape>& shape) {
  if (removed_) removed_(shape->handle());
  shape->mark_gone();
  compactor_.forget(shape);
  durability_.forget(shape);
  if (shape->files()) {
    if (auto removed = shape->files()->remove(); !removed) {
      spdlog::warn("shapes: {}", removed.error().to_string());
    }
  }
  catalog_.erase(shape);
  snapshots_.forget(shape);
  parking_.wake(shape);
}

void ShapeRegistry::rotate(const std::shared_ptr<Shape>& shape, const char* why) {
  spdlog::info("shapes: {} on {}.{} removed ({}); its clients will resync", shape->handle(),
               text::log_safe(shape->table().schema), text::log_safe(shape->table().name), why);
  forget(shape);
}

void ShapeRegistry::note_progress(replication::Lsn wal_end) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  reader_.note_progress(wal_end);
}

void ShapeRegistry::apply_transaction(const replication::Transaction& transaction) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  reader_.note_commit(transaction.commit_lsn);
  for (const auto& relation : transaction.relations) {
    std::vector<std::shared_ptr<Shape>> stale;
    for (const auto& [table, shapes] : catalog_.by_table()) {
      for (const auto& shape : shapes) {
        if (shape->table().oid == relation->oid && !shape->matches_relation(*relation)) {
          stale.push_back(shape);
        }
      }
    }
    if (!stale.empty()) catalog_.forget_table(relation->oid);
    for (const auto& shape : stale) rotate(shape, "table schema changed");
  }
  std::map<std::string, std::vector<const Change*>> by_table;
  for (const auto& change : transaction.changes) {
    if (change.kind == Change::Kind::kTruncate) {
      for (const auto& relation : change.truncated) {
        const auto* shapes = catalog_.of_table(table_key(relation->schema, relation->name));
        if (!shapes) continue;
        for (const auto& shape : ShapeCatalog::Shapes(*shapes)) rotate(shape, "table truncated");
      }
      continue;
    }
    by_table[table_key(change.relation->schema, change.relation->name)].push_back(&change);
  }
  for (const auto& [table, changes] : by_table) {
    const auto* found = catalog_.of_table(table);
    if (!found) continue;
    auto shapes = *found;  // a copy: waking waiters may not alter it, but be safe
    // Only the shapes each change may concern (see shape_index.h).
    for (const auto& route : catalog_.index().route(table, shapes, changes)) {
      const auto& shape = shapes[route.shape];
      if (!shape->apply_transaction(transaction, route.all ? changes : route.changes)) {
        // Rows changed without a logged operation (a column it does not
        // serve): still committed to the store with the next sync.
        if (shape->state_pending()) durability_.mark_dirty(shape);
        continue;
      }
      durability_.mark_dirty(shape);
      parking_.wake(shape);
    }
  }
  durability_.note_applied(transaction.end_lsn);
  durability_.schedule_flush();
}

}  // namespace shapeproxy::shapes

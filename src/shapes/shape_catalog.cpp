#include "shapes/shape_catalog.h"

#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <filesystem>

#include "common/error_codes.h"
#include "common/on_strand.h"
#include "shapes/shape_meta.h"

namespace shapeproxy::shapes {
namespace asio = boost::asio;

ShapeCatalog::ShapeCatalog(asio::any_io_executor executor, std::shared_ptr<pg::ConnectionPool> pool,
                           std::shared_ptr<Clock> clock, Lifetime lifetime,
                           std::optional<std::filesystem::path> shapes_dir, std::size_t chunk_bytes,
                           StateStoreOptions state_store)
    : executor_(std::move(executor)),
      pool_(std::move(pool)),
      clock_(std::move(clock)),
      lifetime_(std::move(lifetime)),
      shapes_dir_(std::move(shapes_dir)),
      chunk_bytes_(chunk_bytes),
      state_options_(std::move(state_store)),
      housekeeping_(clock_->timer(executor_)) {}

std::shared_ptr<Shape> ShapeCatalog::by_handle(const std::string& handle) const {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  auto it = by_handle_.find(handle);
  return it == by_handle_.end() ? nullptr : it->second;
}

std::shared_ptr<Shape> ShapeCatalog::by_key(const std::string& key) const {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  auto it = by_key_.find(key);
  return it == by_key_.end() ? nullptr : it->second;
}

const ShapeCatalog::Shapes* ShapeCatalog::of_table(const std::string& table) const {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  auto it = by_table_.find(table);
  return it == by_table_.end() ? nullptr : &it->second;
}

ShapeCatalog::Shapes ShapeCatalog::all() const {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  Shapes shapes;
  shapes.reserve(by_key_.size());
  for (const auto& [key, shape] : by_key_) shapes.push_back(shape);
  return shapes;
}

std::size_t ShapeCatalog::size() const {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  return by_key_.size();
}

void ShapeCatalog::index_shape(const std::shared_ptr<Shape>& shape) {
  by_key_[shape->definition().key] = shape;
  by_handle_[shape->handle()] = shape;
  by_table_[table_key(shape->table().schema, shape->table().name)].push_back(shape);
  update_gauges();
}

void ShapeCatalog::update_gauges() {
  std::uint64_t snapshotting = 0;
  for (const auto& [key, shape] : by_key_)
    snapshotting += shape->phase() == Shape::Phase::kSnapshotting;
  shapes_held_.store(by_key_.size(), std::memory_order_relaxed);
  shapes_snapshotting_.store(snapshotting, std::memory_order_relaxed);
}

std::shared_ptr<Shape> ShapeCatalog::add(const ShapeDefinition& definition) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  auto shape =
      std::make_shared<Shape>(definition, new_handle(definition.key), chunk_bytes_, state_store());
  index_shape(shape);
  return shape;
}

void ShapeCatalog::erase(const std::shared_ptr<Shape>& shape) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  last_read_.erase(shape.get());
  if (auto it = by_key_.find(shape->definition().key); it != by_key_.end() && it->second == shape) {
    by_key_.erase(it);
  }
  by_handle_.erase(shape->handle());
  auto& list = by_table_[table_key(shape->table().schema, shape->table().name)];
  list.erase(std::remove(list.begin(), list.end(), shape), list.end());
  update_gauges();
}

asio::awaitable<Result<std::shared_ptr<const TableSchema>>> ShapeCatalog::table_schema(
    const std::string& schema, const std::string& table) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
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

void ShapeCatalog::forget_table(std::uint32_t oid) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  std::erase_if(tables_, [oid](const auto& entry) { return entry.second->oid == oid; });
}

std::shared_ptr<Shape> ShapeCatalog::least_recently_read(
    const std::function<bool(const std::shared_ptr<Shape>&)>& busy) const {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  std::shared_ptr<Shape> oldest;
  Clock::time_point oldest_read = Clock::time_point::max();
  for (const auto& [key, shape] : by_key_) {
    if (shape->phase() != Shape::Phase::kReady || busy(shape)) continue;
    auto it = last_read_.find(shape.get());
    const auto read = it == last_read_.end() ? Clock::time_point{} : it->second;
    if (!oldest || read < oldest_read) {
      oldest = shape;
      oldest_read = read;
    }
  }
  return oldest;
}

void ShapeCatalog::note_read(const Shape& shape) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  last_read_[&shape] = clock_->now();
}

bool ShapeCatalog::read_after(const Shape& shape, Clock::time_point since) const {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  auto it = last_read_.find(&shape);
  return it != last_read_.end() && it->second > since;
}

void ShapeCatalog::start_housekeeping(IdleRemoval removal) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  idle_ = std::move(removal);
  arm_housekeeping();
}

void ShapeCatalog::arm_housekeeping() {
  if (idle_.idle_timeout.count() == 0) return;
  housekeeping_->wait_until(clock_->now() + idle_.check_interval, [this, weak = lifetime_()] {
    auto alive = weak.lock();
    if (!alive) return;
    remove_idle_shapes();
    arm_housekeeping();
  });
}

void ShapeCatalog::remove_idle_shapes() {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  auto now = clock_->now();
  Shapes idle;
  for (const auto& [key, shape] : by_key_) {
    if (shape->phase() != Shape::Phase::kReady || idle_.parked(shape)) continue;
    auto& last = last_read_[shape.get()];
    if (last == Clock::time_point{}) last = now;  // loaded: count from now
    if (now - last >= idle_.idle_timeout) idle.push_back(shape);
  }
  idle_.remove(idle);
}

Result<std::size_t> ShapeCatalog::load() {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  if (!shapes_dir_) return std::size_t{0};
  std::error_code ec;
  std::filesystem::create_directories(*shapes_dir_, ec);
  if (ec) {
    return Error{"storage_io", "cannot create " + shapes_dir_->string() + ": " + ec.message(),
                 "check permissions of the data directory"};
  }
  auto store = open_state_store();
  if (!store) return store.error();
  std::size_t loaded = 0;
  std::set<std::uint64_t> state_ids;
  for (const auto& entry : std::filesystem::directory_iterator(*shapes_dir_, ec)) {
    std::error_code not_a_directory;  // also when it cannot be stated (a symlink loop)
    if (!entry.is_directory(not_a_directory) || entry.path().filename().string().starts_with(".") ||
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
      const auto aside = quarantine_dir(*shapes_dir_) / entry.path().filename();
      std::error_code moved;
      std::filesystem::create_directories(aside.parent_path(), moved);
      std::filesystem::remove_all(aside, moved);
      std::filesystem::rename(entry.path(), aside, moved);
      if (moved) std::filesystem::remove_all(entry.path(), moved);
      spdlog::warn("shapes: quarantined saved shape {} ({}): {}", entry.path().string(),
                   moved ? "removed: " + moved.message() : "moved to " + aside.string(), why);
    };
    // A filesystem call that throws (an error the loader did not expect on
    // this shape's files) is this shape's error, never the start-up's.
    auto opened = [&]() -> decltype(storage::ShapeFiles::open(entry.path())) {
      try {
        return storage::ShapeFiles::open(entry.path());
      } catch (const std::filesystem::filesystem_error& e) {
        const auto code = e.code().value();
        return Error{std::string(code == EMFILE || code == ENFILE || code == ENOMEM
                                     ? error_codes::kStorageResource
                                     : std::string_view("storage_io")),
                     e.what(), ""};
      }
    }();
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
                                chunk_bytes_, state_store_);
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
    index_shape(restored);
    // Handles are "<hash>-<micros>"; new ones must sort after every loaded one.
    const auto& loaded_handle = restored->handle();
    const auto dash = loaded_handle.find('-');
    std::int64_t micros = 0;
    if (dash != std::string::npos) {
      std::from_chars(loaded_handle.data() + dash + 1, loaded_handle.data() + loaded_handle.size(),
                      micros);
    }
    last_handle_micros_ = std::max(last_handle_micros_, micros);
    ++loaded;
  }
  drop_orphan_states(state_ids);
  if (ec)
    return Error{"storage_io", "cannot list " + shapes_dir_->string() + ": " + ec.message(), ""};
  return loaded;
}

std::shared_ptr<StateStore> ShapeCatalog::state_store() {
  if (!state_store_) {
    if (auto opened = open_state_store(); !opened)
      throw std::runtime_error(opened.error().to_string());
  }
  return state_store_;
}

Result<void> ShapeCatalog::open_state_store() {
  if (state_store_) return {};
  auto opened = shapes_dir_ ? StateStore::open(*shapes_dir_ / kStateDir, state_options_)
                            : StateStore::in_memory(state_options_);
  if (!opened) return opened.error();
  state_store_ = std::move(opened).value();
  return {};
}

// Rows of shapes that are no more (removed while the process died, or
// discarded at load) leave the store.
void ShapeCatalog::drop_orphan_states(const std::set<std::uint64_t>& loaded) {
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

std::string ShapeCatalog::new_handle(const std::string& key) {
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  last_handle_micros_ = std::max(last_handle_micros_ + 1, static_cast<std::int64_t>(micros));
  char hash[17];
  std::snprintf(hash, sizeof hash, "%08zx", std::hash<std::string>{}(key)&0xffffffffu);
  return std::string(hash) + "-" + std::to_string(last_handle_micros_);
}

}  // namespace shapeproxy::shapes

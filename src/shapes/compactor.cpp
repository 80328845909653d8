#include "shapes/compactor.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/post.hpp>

#include "common/error_codes.h"
#include "common/on_strand.h"

namespace shapeproxy::shapes {
namespace asio = boost::asio;

Compactor::Compactor(asio::any_io_executor executor, std::shared_ptr<Clock> clock,
                     Lifetime lifetime, CompactorOptions options,
                     std::function<void(const std::shared_ptr<Shape>&, const char*)> rotate)
    : executor_(std::move(executor)),
      clock_(std::move(clock)),
      lifetime_(std::move(lifetime)),
      options_(std::move(options)),
      rotate_(std::move(rotate)) {}

void Compactor::stop() {
  stopped_ = true;
  stopping_->store(true);
  worker_.join();
}

std::size_t Compactor::backing_off() const {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  return retry_.size();
}

void Compactor::forget(const std::shared_ptr<Shape>& shape) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  retry_.erase(shape.get());
}

void Compactor::release_free_memory() {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  // Off the strand: malloc_trim can take long with a big heap.
  if (!stopped_) asio::post(worker_, [] { shapes::release_free_memory(); });
}

void Compactor::maybe_compact(const std::shared_ptr<Shape>& shape) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  // A changes_only log holds no snapshot rows: folding its partial updates
  // would invent rows, so it is not compacted.
  const bool foldable = shape->definition().log == LogMode::kFull;
  if (foldable && shape->files() && shape->files()->changes_bytes() > options_.compact_bytes) {
    start(shape);
  }
}

// A snapshot installed with kAfterServing: written and synced on the
// worker, then meta.json names it (back on the strand). If the shape went
// meanwhile, what the worker wrote is removed with it.
void Compactor::store_snapshot(const std::shared_ptr<Shape>& shape) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  if (stopped_) return;  // not stored: discarded at start-up, like a crash before the store
  auto store = shape->begin_snapshot_store();
  if (!store) return;
  asio::post(worker_,
             [this, weak = lifetime_(), executor = executor_, shape, store, stopping = stopping_] {
               auto written = Shape::write_snapshot_store(*store, *stopping);
               asio::post(executor, [this, weak, shape, store, written = std::move(written)] {
                 auto alive = weak.lock();
                 if (!alive) return;
                 if (shape->phase() == Shape::Phase::kGone) {
                   if (shape->files()) (void)shape->files()->remove();
                   return;
                 }
                 auto finished =
                     written ? shape->finish_snapshot_store(*store) : Result<void>(written.error());
                 if (!finished) {
                   spdlog::error("shapes: cannot store the snapshot of {}: {}", shape->handle(),
                                 finished.error().to_string());
                   rotate_(shape, "its snapshot could not be stored");
                 }
               });
             });
}

void Compactor::verify_snapshot(const std::shared_ptr<Shape>& shape) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  if (!shape->files() || stopped_) return;
  auto path = shape->files()->dir() / shape->meta().snapshot_file;
  asio::post(worker_, [this, weak = lifetime_(), executor = executor_, shape,
                       path = std::move(path), stopping = stopping_] {
    if (stopping->load()) return;
    auto verified = storage::ShapeFiles::verify_snapshot(path);
    if (verified || verified.error().code != error_codes::kStorageCorrupt) return;
    asio::post(executor, [this, weak, shape, error = verified.error()] {
      auto alive = weak.lock();
      if (!alive || shape->phase() == Shape::Phase::kGone) return;
      spdlog::error("shapes: {}: {}", shape->handle(), error.to_string());
      rotate_(shape, "its snapshot file is damaged");
    });
  });
}

// Compaction: the shape's files are switched to a new changes file here (on
// the strand); the worker folds the older ones into a new snapshot file;
// back on the strand, meta.json and the in-memory log switch to it. Every
// transaction applied meanwhile lands in the new changes file and stays.
void Compactor::start(const std::shared_ptr<Shape>& shape) {
  if (stopped_) return;
  // After a failure, not again before the back-off passes (a shape whose
  // files cannot be folded must not be retried on every sync).
  if (auto it = retry_.find(shape.get()); it != retry_.end()) {
    if (clock_->now() < it->second.not_before) return;
  }
  auto begun = shape->begin_compaction();
  if (!begun) {
    note_failure(shape, begun.error(), "start compacting");
    return;
  }
  auto compaction = std::move(begun).value();
  if (!compaction) return;
  compaction->stop = stopping_;
  compaction->step = options_.step;
  auto started = std::chrono::steady_clock::now();
  asio::post(worker_, [this, weak = lifetime_(), executor = executor_, shape, compaction,
                       built_hook = options_.built, started] {
    std::optional<Error> failure;
    if (auto built = Shape::build_compaction(*compaction); !built) failure = built.error();
    if (built_hook && !failure) {
      try {
        built_hook();
      } catch (...) {
      }
    }
    asio::post(executor, [this, weak, shape, compaction, failure, started] {
      if (auto alive = weak.lock()) finish(shape, compaction, failure, started);
    });
  });
}

void Compactor::note_failure(const std::shared_ptr<Shape>& shape, const Error& error,
                             const char* what) {
  auto& retry = retry_[shape.get()];
  retry.shape = shape;
  retry.delay = std::clamp(retry.delay * 2, std::chrono::seconds(30), std::chrono::seconds(3600));
  retry.not_before = clock_->now() + retry.delay;
  spdlog::error("shapes: cannot {} {}: {}; its log stays uncompacted, next try in {} s", what,
                shape->handle(), error.to_string(), retry.delay.count());
}

void Compactor::finish(const std::shared_ptr<Shape>& shape,
                       const std::shared_ptr<ShapeCompaction>& compaction,
                       std::optional<Error> failure,
                       std::chrono::steady_clock::time_point started) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
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
      note_failure(shape, *failure, "compact");
    }
    return;
  }
  retry_.erase(shape.get());
  auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now() - started)
                    .count();
  spdlog::info("shapes: compacted {} up to {} into {} rows in {} ms", shape->handle(),
               compaction->point.to_string(), compaction->rows, millis);
}

}  // namespace shapeproxy::shapes

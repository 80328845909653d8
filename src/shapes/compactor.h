// Compactor: the shapes' work on big files, on one worker thread apart from
// the strand and from the syncs that acknowledge replication.
// - Compaction: a shape whose changes on disk passed compact_bytes is
//   switched to a new changes file on the strand; the worker folds the older
//   files into a new snapshot file; back on the strand, meta.json and the
//   in-memory log switch to it. Transactions applied meanwhile stay in the
//   new changes file. After a failure a shape is not retried before a
//   back-off (30 s doubling to an hour) passes.
// - Storing a snapshot served before it reached the disk (degraded mode).
// - Verifying the snapshot files of loaded shapes.
// - Giving freed memory back to the system after a big build.
// stop() makes a running job give up (its half-written file is removed; the
// shape's files stay as they were) and joins the worker.
//
// Threading: on the registry's strand (every method asserts it).
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>

#include "common/clock.h"
#include "shapes/lifetime.h"
#include "shapes/shape.h"

namespace shapeproxy::shapes {

struct CompactorOptions {
  // A shape's operations on disk past this are compacted into its rows.
  std::uint64_t compact_bytes = 64 * 1024 * 1024;
  // Tests: called on the worker once a compacted snapshot is built, before
  // it is swapped in on the strand.
  std::function<void()> built;
  // Tests: called on the worker for every message it folds.
  std::function<void()> step;
};

class Compactor {
 public:
  // `rotate` removes a shape whose snapshot could not be stored or is damaged.
  Compactor(boost::asio::any_io_executor executor, std::shared_ptr<Clock> clock, Lifetime lifetime,
            CompactorOptions options,
            std::function<void(const std::shared_ptr<Shape>&, const char* why)> rotate);

  // After a sync: compacts the shape if its changes outgrew compact_bytes
  // (a changes_only log is never folded: it holds no snapshot rows).
  void maybe_compact(const std::shared_ptr<Shape>& shape);
  // Writes and syncs a snapshot installed with kAfterServing, then lets
  // meta.json name it; if the shape went meanwhile, its files are removed.
  void store_snapshot(const std::shared_ptr<Shape>& shape);
  // After the load (which reads no snapshot chunk body): the shape's
  // snapshot checksums are verified on the worker; a damaged one rotates
  // the shape (its clients get 409 and refetch) before it is served again.
  void verify_snapshot(const std::shared_ptr<Shape>& shape);
  // malloc_trim on the worker.
  void release_free_memory();
  // The shape is gone: its back-off is dropped.
  void forget(const std::shared_ptr<Shape>& shape);
  // Shapes whose last compaction failed and that wait for their back-off.
  std::size_t backing_off() const;
  // Shutdown (see above). Blocks until the worker is idle.
  void stop();

 private:
  void start(const std::shared_ptr<Shape>& shape);
  void note_failure(const std::shared_ptr<Shape>& shape, const Error& error, const char* what);
  void finish(const std::shared_ptr<Shape>& shape,
              const std::shared_ptr<ShapeCompaction>& compaction, std::optional<Error> failure,
              std::chrono::steady_clock::time_point started);

  boost::asio::any_io_executor executor_;
  std::shared_ptr<Clock> clock_;
  Lifetime lifetime_;
  CompactorOptions options_;
  std::function<void(const std::shared_ptr<Shape>&, const char*)> rotate_;
  boost::asio::thread_pool worker_{1};
  // Set by stop(): jobs in flight give up.
  std::shared_ptr<std::atomic<bool>> stopping_ = std::make_shared<std::atomic<bool>>(false);
  bool stopped_ = false;
  // Back-off after a failed compaction, per shape.
  struct Retry {
    std::weak_ptr<Shape> shape;
    std::chrono::seconds delay{0};
    Clock::time_point not_before;
  };
  std::map<const Shape*, Retry> retry_;
};

}  // namespace shapeproxy::shapes

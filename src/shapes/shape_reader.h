// ReadTicket and ShapeReader: answering a read from what a shape holds.
// ShapeReader renders a read after an offset into a response (a chunk of the
// log, a stored snapshot chunk, or up-to-date), reads operations older than
// a shape's in-memory tail back from its files on a read pool (off the
// strand), and keeps the global_last_seen_lsn that up-to-date messages carry.
//
// Threading: on the registry's strand (asserted), except the disk reads on
// the read pool, joined by stop().
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/thread_pool.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "replication/transaction.h"
#include "shapes/lifetime.h"
#include "shapes/log_disk_read.h"
#include "shapes/shape.h"
#include "shapes/shape_service.h"

namespace shapeproxy::shapes {

class FallbackRefresher;

// One read in flight: finished once, or cancelled by the client going away.
struct ReadTicket {
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

class ShapeReader {
 public:
  // `fallback` tells whether responses carry the fallback flag.
  ShapeReader(boost::asio::any_io_executor executor, Lifetime lifetime,
              const FallbackRefresher& fallback);
  // `fallback_active` (strand) says whether responses carry the fallback
  // flag: a follower's reader, whose shapes have no refresher (rfc/0003).
  ShapeReader(boost::asio::any_io_executor executor, Lifetime lifetime,
              std::function<bool()> fallback_active);

  // The answer to `request` now; nullopt when it is a live read with nothing
  // new (to park), or when the operations after the offset are no longer in
  // memory: then `disk` is set, for read_from_disk(). Offsets before the
  // log's start answer must-refetch; offsets past everything seen, 400.
  std::optional<ReadOutcome> read_now(Shape& shape, const ReadRequest& request,
                                      std::shared_ptr<LogDiskRead>* disk) const;
  // Whether `request` starts past everything this proxy has seen (past the
  // shape's log and global_last_seen_lsn): no offset it handed out since it
  // started lies there. Only judged once the stream has reported a position.
  bool beyond_seen(const Shape& shape, const ReadRequest& request) const;
  // The answer to a read still beyond_seen() when it is judged.
  static InvalidRequest out_of_bounds() { return {"offset", "out of bounds for this shape"}; }
  // Runs `plan` on the read pool and answers the ticket on the strand.
  void read_from_disk(const std::shared_ptr<Shape>& shape, std::shared_ptr<LogDiskRead> plan,
                      const std::shared_ptr<ReadTicket>& ticket);
  // Shutdown: the read pool is joined.
  void stop() { read_pool_.join(); }
  // An up-to-date answer at `offset` (a live read whose time ran out), with
  // a body from up_to_date_body() that many answers may share.
  ReadResult up_to_date(const Shape& shape, LogOffset offset,
                        std::shared_ptr<const std::string> body) const;
  std::shared_ptr<const std::string> up_to_date_body() const;
  // The answer to a read of a snapshotting shape's first chunk: `stream`
  // (rfc/0005), at the first chunk's offset.
  ReadResult streaming(const Shape& shape, std::shared_ptr<BodyStream> stream) const;

  // The stream delivered a transaction committed at `commit_lsn`, or is idle
  // at `wal_end` (every earlier commit delivered).
  void note_commit(replication::Lsn commit_lsn);
  void note_progress(replication::Lsn wal_end);
  // A fallback refresh logged a group at LSNs below `lsn`.
  void note_logged(replication::Lsn lsn);
  replication::Lsn last_seen_lsn() const { return last_seen_lsn_; }
  // Called on the strand, while the registry lives, with the handle of a
  // shape one of whose stored chunks did not decode while being sent.
  void on_damaged_chunk(std::function<void(const std::string& handle)> hook) {
    damaged_chunk_ = std::move(hook);
  }

 private:
  std::string up_to_date_json() const;
  ReadResult result(const Shape& shape, LogOffset offset, std::shared_ptr<const std::string> body,
                    bool up_to_date) const;

  boost::asio::any_io_executor executor_;
  Lifetime lifetime_;
  std::function<void(const std::string& handle)> damaged_chunk_;
  std::function<bool()> fallback_active_;
  // Reads of operations older than a shape's in-memory tail (catch-up).
  boost::asio::thread_pool read_pool_{1};
  // global_last_seen_lsn: after every delivered operation, before any to come.
  replication::Lsn last_seen_lsn_ = 0;
};

}  // namespace shapeproxy::shapes

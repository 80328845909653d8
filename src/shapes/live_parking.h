// LiveParking: live reads with nothing new to send wait here, per shape,
// until the shape's log grows past their offset (wake()) or their deadline
// (the live timeout) passes; then they get up-to-date at their offset. One
// timer watches every deadline, armed for the earliest: parking and waking
// stay cheap with tens of thousands of parked reads.
//
// Live reads past everything the proxy has seen (ShapeReader::beyond_seen)
// wait here too, for half the live timeout (as Electric's out-of-bounds
// guard does): a client's offset from before a crash is past what the
// restarted stream has replayed so far. Once the stream passes the offset
// such a read is an ordinary parked read; still past it at its deadline,
// it is answered 400 (an offset no proxy handed out).
//
// Threading: on the registry's strand (every method asserts it), except
// parked_reads(), for /v1/status and /metrics from any thread.
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <list>
#include <map>
#include <memory>

#include "common/clock.h"
#include "shapes/lifetime.h"
#include "shapes/shape_reader.h"

namespace shapeproxy::shapes {

class LiveParking {
 public:
  LiveParking(boost::asio::any_io_executor executor, std::shared_ptr<Clock> clock,
              Lifetime lifetime, ShapeReader& reader, std::chrono::milliseconds live_timeout);

  // Parks a live read after `after` until the shape's log grows past it or
  // the live timeout passes. Cancelling the ticket (ticket->unpark) drops it.
  void park(const std::shared_ptr<Shape>& shape, LogOffset after,
            const std::shared_ptr<ReadTicket>& ticket);
  // Parks a live read whose offset is past everything seen (see above).
  void park_ahead(const std::shared_ptr<Shape>& shape, LogOffset after,
                  const std::shared_ptr<ReadTicket>& ticket);
  // The shape's log grew (or the shape is gone: its readers get must-refetch):
  // answers every parked read that now has something; the others stay.
  void wake(const std::shared_ptr<Shape>& shape);
  // Answers every parked read now (up-to-date at its offset); for shutdown.
  void release_all();
  bool has_parked(const std::shared_ptr<Shape>& shape) const;
  std::size_t parked_count(const std::shared_ptr<Shape>& shape) const;

  // From any thread.
  std::uint64_t parked_reads() const { return parked_reads_.load(std::memory_order_relaxed); }

 private:
  struct Waiter {
    LogOffset after;
    std::shared_ptr<ReadTicket> ticket;
    Clock::time_point deadline;
    bool ahead = false;  // parked by park_ahead() and not yet passed by the stream
  };

  void park_until(const std::shared_ptr<Shape>& shape, LogOffset after,
                  const std::shared_ptr<ReadTicket>& ticket, Clock::time_point deadline,
                  bool ahead = false);
  // Whether a waiter parked ahead is still past everything seen (clears
  // its flag once it is not).
  bool still_ahead(const Shape& shape, Waiter& waiter) const;
  void arm_deadline(Clock::time_point deadline);
  void expire();
  void update_gauge();

  boost::asio::any_io_executor executor_;
  std::shared_ptr<Clock> clock_;
  Lifetime lifetime_;
  ShapeReader& reader_;
  std::chrono::milliseconds live_timeout_;
  std::map<std::shared_ptr<Shape>, std::list<std::shared_ptr<Waiter>>> waiters_;
  // The one timer for parked reads' deadlines, armed for the earliest.
  std::unique_ptr<ClockTimer> deadline_timer_;
  bool deadline_armed_ = false;
  Clock::time_point deadline_at_;
  std::atomic<std::uint64_t> parked_reads_{0};
};

}  // namespace shapeproxy::shapes

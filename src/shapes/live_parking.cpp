#include "shapes/live_parking.h"

#include "common/on_strand.h"

namespace shapeproxy::shapes {

LiveParking::LiveParking(boost::asio::any_io_executor executor, std::shared_ptr<Clock> clock,
                         Lifetime lifetime, ShapeReader& reader,
                         std::chrono::milliseconds live_timeout)
    : executor_(std::move(executor)),
      clock_(std::move(clock)),
      lifetime_(std::move(lifetime)),
      reader_(reader),
      live_timeout_(live_timeout),
      deadline_timer_(clock_->timer(executor_)) {}

void LiveParking::park(const std::shared_ptr<Shape>& shape, LogOffset after,
                       const std::shared_ptr<ReadTicket>& ticket) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  park_until(shape, after, ticket, clock_->now() + live_timeout_);
}

void LiveParking::park_ahead(const std::shared_ptr<Shape>& shape, LogOffset after,
                             const std::shared_ptr<ReadTicket>& ticket) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  park_until(shape, after, ticket, clock_->now() + live_timeout_ / 2, true);
}

bool LiveParking::still_ahead(const Shape& shape, Waiter& waiter) const {
  if (!waiter.ahead) return false;
  ReadRequest request;
  request.start = ReadRequest::Start::kAt;
  request.offset = waiter.after;
  waiter.ahead = reader_.beyond_seen(shape, request);
  return waiter.ahead;
}

void LiveParking::park_until(const std::shared_ptr<Shape>& shape, LogOffset after,
                             const std::shared_ptr<ReadTicket>& ticket, Clock::time_point deadline,
                             bool ahead) {
  auto waiter = std::make_shared<Waiter>();
  waiter->after = after;
  waiter->ticket = ticket;
  waiter->deadline = deadline;
  waiter->ahead = ahead;
  auto& list = waiters_[shape];
  auto position = list.insert(list.end(), waiter);
  std::weak_ptr<Shape> key = shape;
  ticket->unpark = [this, weak = lifetime_(), key, position] {
    auto alive = weak.lock();
    if (!alive) return;
    auto shape = key.lock();
    if (!shape) return;
    if (auto it = waiters_.find(shape); it != waiters_.end()) {
      it->second.erase(position);
      if (it->second.empty()) waiters_.erase(it);
    }
    update_gauge();
  };
  update_gauge();
  arm_deadline(deadline);
}

bool LiveParking::has_parked(const std::shared_ptr<Shape>& shape) const {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  return waiters_.count(shape) != 0;
}

std::size_t LiveParking::parked_count(const std::shared_ptr<Shape>& shape) const {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  auto it = waiters_.find(shape);
  return it == waiters_.end() ? 0 : it->second.size();
}

void LiveParking::update_gauge() {
  std::uint64_t parked = 0;
  for (const auto& [shape, list] : waiters_) parked += list.size();
  parked_reads_.store(parked, std::memory_order_relaxed);
}

// One timer for every parked read: set to the earliest deadline (new parks
// come with later deadlines, so it is rarely moved).
void LiveParking::arm_deadline(Clock::time_point deadline) {
  if (deadline_armed_ && deadline >= deadline_at_) return;
  deadline_armed_ = true;
  deadline_at_ = deadline;
  // Replaces a pending wait.
  deadline_timer_->wait_until(deadline, [this, weak = lifetime_()] {
    if (auto alive = weak.lock()) expire();
  });
}

// Answers every parked read whose deadline passed (up-to-date at its
// offset; 400 when still past everything seen), then re-arms the timer for
// the earliest remaining deadline.
void LiveParking::expire() {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  deadline_armed_ = false;
  const auto now = clock_->now();
  std::optional<Clock::time_point> next;
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
      if (still_ahead(*shape, *waiter)) {
        waiter->ticket->finish(ShapeReader::out_of_bounds());
        continue;
      }
      if (!body) body = reader_.up_to_date_body();
      waiter->ticket->finish(reader_.up_to_date(*shape, waiter->after, body));
    }
    it = list.empty() ? waiters_.erase(it) : std::next(it);
  }
  update_gauge();
  if (next) arm_deadline(*next);
}

void LiveParking::wake(const std::shared_ptr<Shape>& shape) {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
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
    if (still_ahead(*shape, *waiter)) {  // the stream is not there yet
      park_until(shape, waiter->after, waiter->ticket, deadline, true);
      continue;
    }
    auto found = by_offset.find(waiter->after);
    if (found == by_offset.end()) {
      ReadRequest request;
      request.start = ReadRequest::Start::kAt;
      request.offset = waiter->after;
      std::shared_ptr<LogDiskRead> disk;
      auto outcome = reader_.read_now(*shape, request, &disk);
      if (disk) {  // appended past the tail since it parked
        reader_.read_from_disk(shape, std::move(disk), waiter->ticket);
        continue;
      }
      if (!outcome) {  // nothing new for this offset: stay parked
        park_until(shape, waiter->after, waiter->ticket, deadline);
        continue;
      }
      found = by_offset.emplace(waiter->after, std::move(*outcome)).first;
    }
    waiter->ticket->finish(found->second);
  }
  update_gauge();
}

void LiveParking::release_all() {
  SHAPEPROXY_ASSERT_ON_STRAND(executor_);
  auto parked = std::move(waiters_);
  waiters_.clear();
  auto body = reader_.up_to_date_body();
  for (auto& [shape, list] : parked) {
    for (auto& waiter : list) {
      waiter->ticket->unpark = nullptr;
      waiter->ticket->finish(reader_.up_to_date(*shape, waiter->after, body));
    }
  }
  update_gauge();
}

}  // namespace shapeproxy::shapes

#include "api/sse_session.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <mutex>
#include <nlohmann/json.hpp>

#include "api/shape_headers.h"

namespace shapeproxy::api {
namespace {

namespace net = boost::asio;
using SteadyClock = std::chrono::steady_clock;

std::shared_ptr<const std::string> render_frames(std::string_view body) {
  nlohmann::json messages = nlohmann::json::parse(body, nullptr, false);
  if (!messages.is_array()) return nullptr;
  auto out = std::make_shared<std::string>();
  out->reserve(body.size() + messages.size() * 8);
  for (const auto& message : messages) {
    // A compact dump has no raw newline (JSON escapes them), so one data line.
    *out += "data: ";
    *out += message.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    *out += "\n\n";
  }
  return out;
}

class SseSession : public std::enable_shared_from_this<SseSession> {
 public:
  SseSession(shapes::ShapeService& service, std::shared_ptr<const ShapeApiOptions> options,
             net::any_io_executor timers, std::shared_ptr<http::Exchange> exchange,
             ShapeParams params, SseFrames& frames)
      : service_(service),
        frames_(frames),
        options_(std::move(options)),
        timers_(timers),
        keepalive_timer_(timers),
        deadline_timer_(timers),
        exchange_(std::move(exchange)),
        params_(std::move(params)),
        offset_(params_.read.offset),
        handle_(params_.read.handle) {}

  void begin() {
    auto self = shared_from_this();
    exchange_->on_abort([self] { self->finish(/*end_stream=*/false); });
    exchange_->on_shutdown([self] { self->on_shutdown(); });
    issue_read(/*live=*/false);
  }

 private:
  // Starts a read at the current position; its cancel is kept while in flight.
  void issue_read(bool live) {
    shapes::ReadRequest request;
    std::uint64_t generation;
    {
      std::lock_guard lock(mu_);
      if (finished_) return;
      generation = ++generation_;
      in_flight_ = true;
      request.start = shapes::ReadRequest::Start::kAt;
      request.offset = offset_;
      request.handle = handle_;
      request.live = live;
    }
    auto self = shared_from_this();
    auto done = [self, generation](shapes::ReadOutcome outcome) {
      self->on_read(generation, std::move(outcome));
    };
    std::function<void()> cancel = service_.read(params_.definition, request, std::move(done));
    bool cancel_now = false;
    {
      std::lock_guard lock(mu_);
      if (generation_ == generation && in_flight_) {
        if (finished_)
          cancel_now = true;  // finished while read() ran
        else
          cancel_ = cancel;
      }
    }
    if (cancel_now && cancel) cancel();
  }

  void on_read(std::uint64_t generation, shapes::ReadOutcome outcome) {
    auto* stored = std::get_if<shapes::ReadResult>(&outcome);
    if (stored && !stored->body && stored->stored.file) {
      // A snapshot chunk on disk: events need its bytes. Read it on the timer
      // executor, not on the shapes strand this callback may run on.
      auto self = shared_from_this();
      net::post(timers_, [self, generation, outcome = std::move(outcome)]() mutable {
        auto& result = std::get<shapes::ReadResult>(outcome);
        auto bytes = shapes::read_body(result);
        if (!bytes) {
          spdlog::error("shape api: SSE: {}", bytes.error().to_string());
          self->on_read(generation, shapes::Unavailable{"cannot read the shape log from disk"});
          return;
        }
        result.body = std::move(bytes).value();
        result.stored = {};
        self->on_read(generation, std::move(outcome));
      });
      return;
    }
    bool first;
    {
      std::lock_guard lock(mu_);
      if (finished_ || generation != generation_) return;
      in_flight_ = false;
      cancel_ = nullptr;
      first = !stream_started_;
    }
    auto* result = std::get_if<shapes::ReadResult>(&outcome);
    if (first && !result) return fail_before_stream(outcome);
    if (!result) return end_with(outcome);
    if (first) open_stream(*result);
    if (!emit(*result)) return finish(/*end_stream=*/true);
    schedule_next_read(/*live=*/result->up_to_date);
  }

  void fail_before_stream(const shapes::ReadOutcome& outcome) {
    {
      std::lock_guard lock(mu_);
      finished_ = true;
    }
    if (relay_elsewhere(*options_, outcome, exchange_)) return;
    exchange_->respond(error_outcome_response(outcome));
  }

  void open_stream(const shapes::ReadResult& first) {
    {
      std::lock_guard lock(mu_);
      stream_started_ = true;
      last_frame_ = SteadyClock::now();
    }
    exchange_->start_event_stream(sse_headers(first, params_, *options_));
    auto self = shared_from_this();
    net::post(timers_, [self] { self->arm_timers(); });
  }

  // Sends the body's messages unless the read did not advance (a live read
  // that timed out: keep-alive comments cover idle time, as Electric does).
  bool emit(const shapes::ReadResult& result) {
    {
      std::lock_guard lock(mu_);
      bool advanced = result.offset != offset_;
      offset_ = result.offset;
      handle_ = result.handle;
      if (!advanced) return true;
      last_frame_ = SteadyClock::now();
    }
    if (!result.body) return true;
    auto frames = frames_.frames(result.body);
    if (!frames) {
      spdlog::error("shape api: SSE: read body is not a JSON array; ending the stream");
      return false;
    }
    exchange_->send_frames(std::move(frames));
    return true;
  }

  // Posted, not called: a service answering synchronously must not recurse.
  void schedule_next_read(bool live) {
    auto self = shared_from_this();
    net::post(timers_, [self, live] { self->issue_read(live); });
  }

  void end_with(const shapes::ReadOutcome& outcome) {
    if (std::holds_alternative<shapes::MustRefetch>(outcome))
      exchange_->send_event(must_refetch_message());
    finish(/*end_stream=*/true);
  }

  void on_shutdown() {
    bool started;
    {
      std::lock_guard lock(mu_);
      started = stream_started_;
    }
    if (started) return finish(/*end_stream=*/true);
    finish(/*end_stream=*/false);
    exchange_->respond(unavailable_response({"Server is shutting down", std::chrono::seconds(5)}));
  }

  // On the timer executor.
  void arm_timers() {
    if (is_finished()) return;
    auto self = shared_from_this();
    deadline_timer_.expires_after(options_->sse_max_duration);
    deadline_timer_.async_wait([self](boost::system::error_code ec) {
      if (!ec) self->finish(/*end_stream=*/true);
    });
    arm_keepalive(options_->sse_keepalive);
  }

  void arm_keepalive(SteadyClock::duration delay) {
    auto self = shared_from_this();
    keepalive_timer_.expires_after(delay);
    keepalive_timer_.async_wait([self](boost::system::error_code ec) {
      if (!ec) self->on_keepalive();
    });
  }

  void on_keepalive() {
    SteadyClock::duration wait;
    bool send = false;
    {
      std::lock_guard lock(mu_);
      if (finished_) return;
      auto idle = SteadyClock::now() - last_frame_;
      send = idle >= options_->sse_keepalive;
      if (send) last_frame_ = SteadyClock::now();
      wait = send ? SteadyClock::duration(options_->sse_keepalive)
                  : SteadyClock::duration(options_->sse_keepalive) - idle;
    }
    if (send) exchange_->send_comment("keep-alive");
    arm_keepalive(wait);
  }

  bool is_finished() {
    std::lock_guard lock(mu_);
    return finished_;
  }

  // Idempotent: drops the read in flight, stops the timers, maybe ends the stream.
  void finish(bool end_stream) {
    std::function<void()> cancel;
    {
      std::lock_guard lock(mu_);
      if (finished_) return;
      finished_ = true;
      cancel.swap(cancel_);
    }
    if (cancel) cancel();
    auto self = shared_from_this();
    net::post(timers_, [self] {
      self->keepalive_timer_.cancel();
      self->deadline_timer_.cancel();
    });
    if (end_stream) exchange_->end_event_stream();
  }

  shapes::ShapeService& service_;
  SseFrames& frames_;
  std::shared_ptr<const ShapeApiOptions> options_;
  net::any_io_executor timers_;
  net::steady_timer keepalive_timer_;  // touched only on timers_
  net::steady_timer deadline_timer_;   // touched only on timers_
  std::shared_ptr<http::Exchange> exchange_;
  const ShapeParams params_;

  std::mutex mu_;
  bool finished_ = false;
  bool stream_started_ = false;
  bool in_flight_ = false;
  std::uint64_t generation_ = 0;
  std::function<void()> cancel_;
  shapes::LogOffset offset_;
  std::optional<std::string> handle_;
  SteadyClock::time_point last_frame_;
};

}  // namespace

std::shared_ptr<const std::string> SseFrames::frames(
    const std::shared_ptr<const std::string>& body) {
  if (body->size() > kMaxRememberedBody) return render_frames(*body);
  {
    std::lock_guard lock(mu_);
    for (const Entry& e : entries_)
      if (e.body == body) return e.frames;
  }
  // Rendered outside the lock; two streams racing for a new body may both
  // render it (the same bytes), one of them is remembered.
  auto frames = render_frames(*body);
  if (!frames) return nullptr;
  std::lock_guard lock(mu_);
  entries_[next_] = Entry{body, frames};
  next_ = (next_ + 1) % entries_.size();
  return frames;
}

void start_sse_session(shapes::ShapeService& service,
                       std::shared_ptr<const ShapeApiOptions> options,
                       boost::asio::any_io_executor timers,
                       std::shared_ptr<http::Exchange> exchange, ShapeParams params,
                       SseFrames& frames) {
  auto session = std::make_shared<SseSession>(service, std::move(options), std::move(timers),
                                              std::move(exchange), std::move(params), frames);
  session->begin();
}

}  // namespace shapeproxy::api

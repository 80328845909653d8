#include "status/status_monitor.h"

#include "logging/log_format.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <utility>

#include "common/text.h"
#include "pg/lsn.h"

namespace shapeproxy::status {
namespace {

using std::chrono::duration;

double seconds_between(std::chrono::steady_clock::time_point from,
                       std::chrono::steady_clock::time_point to) {
  return std::max(0.0, duration<double>(to - from).count());
}

bool is_safe_code(const std::string& code) {
  if (code.empty() || code.size() > 40) return false;
  return std::all_of(code.begin(), code.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

}  // namespace

const char* to_string(ServingStatus status) {
  switch (status) {
    case ServingStatus::kStarting:
      return "starting";
    case ServingStatus::kLive:
      return "live";
    case ServingStatus::kFallback:
      return "fallback";
  }
  return "starting";
}

std::string public_error_message(const Error& error) {
  struct Phrase {
    const char* code;
    const char* text;
  };
  static constexpr std::array<Phrase, 15> kPhrases{{
      {"connection_lost", "replication connection lost"},
      {"connection_failed", "could not connect to PostgreSQL"},
      {"connect_timeout", "timed out connecting to PostgreSQL"},
      {"missing_replication_privilege", "the database role lacks the REPLICATION privilege"},
      {"replication_not_allowed", "replication connections are not allowed for this role"},
      {"insufficient_privilege", "the database role lacks a required privilege"},
      {"not_database_connection", "the connection is not a logical replication connection"},
      {"slot_invalidated", "the replication slot was invalidated"},
      {"slot_missing", "the replication slot is missing"},
      {"slot_in_use", "the replication slot is in use by another consumer"},
      {"slot_mismatch", "the replication slot is not a pgoutput slot of this database"},
      {"publication_missing", "the publication is missing"},
      {"wal_level_not_logical", "wal_level is not logical"},
      {"replication_protocol", "unexpected replication protocol message"},
      {"cancelled", "operation cancelled"},
  }};
  for (const auto& phrase : kPhrases) {
    if (error.code == phrase.code) return phrase.text;
  }
  if (is_safe_code(error.code)) return "replication error (" + error.code + ")";
  return "replication error";
}

ReplicationStatusMonitor::ReplicationStatusMonitor(StatusMonitorOptions options,
                                                   SteadyClock steady_clock, WallClock wall_clock)
    : options_(std::move(options)),
      steady_clock_(std::move(steady_clock)),
      wall_clock_(std::move(wall_clock)) {
  const TimePoint now = steady_clock_();
  last_transition_at_ = wall_clock_();
  stream_down_since_ = now;
  last_progress_at_ = now;
}

void ReplicationStatusMonitor::on_stream_state(StreamLinkState state, const Error* cause) {
  std::lock_guard lock(mutex_);
  const TimePoint now = steady_clock_();
  if (cause) last_error_ = public_error_message(*cause);
  const bool was_streaming = stream_state_ == StreamLinkState::kStreaming;
  stream_state_ = state;
  if (state == StreamLinkState::kStreaming) {
    if (!was_streaming) {
      // A new streaming episode: catch up with whatever the next probe reports.
      awaiting_catch_up_target_ = true;
      catch_up_target_.reset();
      last_progress_at_ = now;
      behind_since_.reset();
      // Streaming proves the slot exists and is usable: a "missing" or
      // "lost" from a probe taken before the stream (re)created or reached
      // it is outdated, and must not push a fresh start into fallback.
      if (slot_problem_since_) {
        spdlog::info(
            "status: replication is streaming from slot \"{}\"; earlier probe ({}) "
            "is outdated",
            options_.slot_name, slot_problem_cause_);
        slot_problem_since_.reset();
      }
    }
  } else {
    if (was_streaming) stream_down_since_ = now;
    if (state == StreamLinkState::kStopped) {
      stream_down_cause_ = "replication stream stopped";
    } else if (cause) {
      stream_down_cause_ = "replication unavailable: " + public_error_message(*cause);
    } else if (was_streaming) {
      stream_down_cause_ = "replication stream disconnected";
    }
    behind_since_.reset();
  }
  evaluate(now);
}

void ReplicationStatusMonitor::on_progress(std::uint64_t received_lsn) {
  std::lock_guard lock(mutex_);
  const TimePoint now = steady_clock_();
  if (received_lsn > received_lsn_) {
    received_lsn_ = received_lsn;
    last_progress_at_ = now;
    behind_since_.reset();
    while (!pending_heads_.empty() && pending_heads_.front().lsn <= received_lsn_) {
      pending_heads_.pop_front();
    }
  }
  evaluate(now);
}

void ReplicationStatusMonitor::on_health_probe(const ProbeResult& probe) {
  std::lock_guard lock(mutex_);
  const TimePoint now = steady_clock_();
  probed_ = true;
  const bool was_reachable = probe_reachable_;
  probe_reachable_ = probe.reachable;
  if (!probe.reachable) {
    if (was_reachable || !unreachable_logged_) {
      spdlog::warn("status: health probe could not reach the database: {}",
                   text::log_safe(probe.error.value_or("unknown error")));
      unreachable_logged_ = true;
    }
    last_error_ = "the health probe could not reach the database";
    evaluate(now);
    record_lag_sample(false);
    return;
  }
  unreachable_logged_ = false;

  slot_wal_status_ = probe.slot_wal_status;
  const bool slot_missing = probe.slot_wal_status.empty();
  const bool slot_lost = probe.slot_wal_status == "lost";
  if (slot_missing || slot_lost) {
    if (!slot_problem_since_) {
      slot_problem_since_ = now;
      slot_problem_cause_ =
          slot_missing
              ? "replication slot \"" + options_.slot_name + "\" is missing"
              : "replication slot \"" + options_.slot_name + "\" was invalidated (wal_status lost)";
      spdlog::warn("status: {}", slot_problem_cause_);
    }
  } else {
    slot_problem_since_.reset();
  }
  if (probe.slot_wal_status == "unreserved") {
    if (!unreserved_warned_) {
      spdlog::warn(
          "status: replication slot \"{}\" is past max_wal_size (wal_status unreserved); it "
          "will be invalidated at the next checkpoint unless the stream catches up",
          options_.slot_name);
      unreserved_warned_ = true;
    }
  } else {
    unreserved_warned_ = false;
  }

  if (probe.current_wal_lsn) {
    const std::uint64_t head = *probe.current_wal_lsn;
    current_wal_lsn_ = head;
    if (received_lsn_ >= head) {
      pending_heads_.clear();
    } else if (pending_heads_.size() >= kMaxPendingHeads) {
      pending_heads_.back() = {head, now};  // keep the oldest: it defines the lag
    } else {
      pending_heads_.push_back({head, now});
    }
    const bool streaming = stream_state_ == StreamLinkState::kStreaming;
    if (streaming && head > received_lsn_) {
      if (!behind_since_) behind_since_ = now;
    } else {
      behind_since_.reset();
    }
    // The position to catch up with is the head reported by the first probe
    // that sees replication healthy again.
    if (awaiting_catch_up_target_ && replication_available(now)) {
      awaiting_catch_up_target_ = false;
      catch_up_target_ = head;
      spdlog::info("status: replication is streaming; catching up to WAL {} (received {})",
                   pg::format_lsn(head), pg::format_lsn(received_lsn_));
    }
  }
  evaluate(now);
  record_lag_sample(true);
}

void ReplicationStatusMonitor::record_lag_sample(bool reachable) {
  // A lag sample per probe; older than the window (or beyond the bound) goes.
  StatusSnapshot current = snapshot_locked();
  const auto wall_now = wall_clock_();
  lag_history_.push_back({wall_now, reachable ? current.lag_bytes : std::nullopt,
                          reachable ? current.lag_seconds : std::nullopt, status_});
  while (!lag_history_.empty() &&
         (lag_history_.size() > StatusHistory::kMaxLagSamples ||
          lag_history_.front().at < wall_now - StatusHistory::kLagWindow)) {
    lag_history_.pop_front();
  }
}

StatusHistory ReplicationStatusMonitor::history() const {
  std::lock_guard lock(mutex_);
  return {{transition_history_.begin(), transition_history_.end()},
          {lag_history_.begin(), lag_history_.end()}};
}

void ReplicationStatusMonitor::tick() {
  std::lock_guard lock(mutex_);
  evaluate(steady_clock_());
}

ServingStatus ReplicationStatusMonitor::status() const {
  std::lock_guard lock(mutex_);
  return status_;
}

StatusSnapshot ReplicationStatusMonitor::snapshot() const {
  std::lock_guard lock(mutex_);
  return snapshot_locked();
}

StatusSnapshot ReplicationStatusMonitor::snapshot_locked() const {
  const TimePoint now = steady_clock_();
  StatusSnapshot s;
  s.status = status_;
  s.replication_available = replication_available(now);
  s.database_reachable = probed_ ? probe_reachable_ : stream_state_ == StreamLinkState::kStreaming;
  s.last_transition_at = last_transition_at_;
  s.cause = cause_;
  s.slot_name = options_.slot_name;
  if (probed_ && (probe_reachable_ || !slot_wal_status_.empty() || slot_problem_since_)) {
    s.slot_wal_status = slot_wal_status_.empty() ? "missing" : slot_wal_status_;
  }
  if (current_wal_lsn_) {
    s.lag_bytes = *current_wal_lsn_ > received_lsn_ ? *current_wal_lsn_ - received_lsn_ : 0;
    s.lag_seconds = *s.lag_bytes == 0 || pending_heads_.empty()
                        ? 0.0
                        : seconds_between(pending_heads_.front().probed_at, now);
  }
  s.last_error = last_error_;
  s.transitions = transitions_;
  s.received_lsn = received_lsn_;
  return s;
}

bool ReplicationStatusMonitor::stalled(TimePoint now) const {
  return stream_state_ == StreamLinkState::kStreaming && behind_since_ &&
         now - *behind_since_ >= options_.stall_timeout;
}

bool ReplicationStatusMonitor::replication_available(TimePoint now) const {
  return stream_state_ == StreamLinkState::kStreaming && !slot_problem_since_ && !stalled(now);
}

std::optional<ReplicationStatusMonitor::Problem> ReplicationStatusMonitor::current_problem(
    TimePoint now) const {
  std::optional<Problem> earliest;
  auto consider = [&](TimePoint switch_at, const std::string& cause) {
    if (!earliest || switch_at < earliest->switch_at) earliest = Problem{switch_at, cause};
  };
  if (stream_state_ != StreamLinkState::kStreaming) {
    consider(stream_down_since_ + options_.grace_period, stream_down_cause_);
  }
  if (slot_problem_since_) {
    consider(*slot_problem_since_ + options_.grace_period, slot_problem_cause_);
  }
  if (stream_state_ == StreamLinkState::kStreaming && behind_since_) {
    // Only a problem once detected: the stall timeout is its grace period.
    if (stalled(now)) {
      const double silent = seconds_between(last_progress_at_, now);
      consider(*behind_since_ + options_.stall_timeout,
               fmt::format("replication stream stalled: no progress for {:.1f} s while the "
                           "database WAL advanced",
                           silent));
    }
  }
  return earliest;
}

bool ReplicationStatusMonitor::caught_up() const {
  return stream_state_ == StreamLinkState::kStreaming && catch_up_target_ &&
         received_lsn_ >= *catch_up_target_;
}

void ReplicationStatusMonitor::evaluate(TimePoint now) {
  const auto problem = current_problem(now);
  const bool problem_due = problem && now >= problem->switch_at;
  if (status_ != ServingStatus::kLive && problem) {
    // Replication is not back yet: the catch-up target is taken once it is.
    awaiting_catch_up_target_ = true;
    catch_up_target_.reset();
  }
  switch (status_) {
    case ServingStatus::kStarting:
    case ServingStatus::kFallback:
      if (!problem && caught_up()) {
        transition(ServingStatus::kLive, "replication caught up with the database WAL at " +
                                             pg::format_lsn(*catch_up_target_));
      } else if (status_ == ServingStatus::kStarting && problem_due) {
        transition(ServingStatus::kFallback, problem->cause);
      }
      break;
    case ServingStatus::kLive:
      if (problem_due) transition(ServingStatus::kFallback, problem->cause);
      break;
  }
}

void ReplicationStatusMonitor::transition(ServingStatus to, std::string cause) {
  const ServingStatus from = status_;
  status_ = to;
  cause_ = std::move(cause);
  last_transition_at_ = wall_clock_();
  ++transitions_;
  transition_history_.push_back({last_transition_at_, from, to, cause_});
  if (transition_history_.size() > StatusHistory::kMaxTransitions) transition_history_.pop_front();
  if (to != ServingStatus::kLive) {
    awaiting_catch_up_target_ = true;
    catch_up_target_.reset();
  }
  logging::LogFields fields{{"from", to_string(from)}, {"to", to_string(to)}, {"cause", cause_}};
  if (to == ServingStatus::kLive) {
    spdlog::info("status: {} -> {}: {}", to_string(from), to_string(to), text::log_safe(cause_));
  } else {
    spdlog::warn("status: {} -> {}: {}", to_string(from), to_string(to), text::log_safe(cause_));
  }
}

}  // namespace shapeproxy::status

// What: ReplicationStatusMonitor, the state machine behind the proxy's serving
// status (starting / live / fallback). It is fed facts (stream state changes,
// stream progress, periodic SQL health probes, timer ticks) and decides when
// shapes are served from replication and when from direct queries.
// Why: the promise in degraded-mode.md ("a blip does not flap", "staleness is
// never silent", "back to live only once caught up") lives in one place, with
// no I/O and an injected clock, so every rule is unit-tested with fake time.
//
// Rules:
//  - starting -> live: the stream is streaming and has caught up with the WAL
//    position the first probe after streaming began reported.
//  - starting -> fallback: replication could not be reached (not streaming,
//    or slot missing/lost) for `grace_period` since the monitor started.
//  - live -> fallback: for `grace_period` the stream is down or the slot is
//    missing / lost; or the stream is stalled: it has not advanced for
//    `stall_timeout` while pg_current_wal_lsn() was ahead of it (the stall
//    timeout is that problem's own grace period).
//  - fallback -> live: streaming again, slot present, and received_lsn has
//    reached catch_up_target (current_wal_lsn at the first probe after the
//    stream came back).
//  - wal_status "unreserved" logs one warning per episode and is reported, but
//    does not leave live.
// Thread-safety: every method may be called from any thread (one mutex); the
// proxy calls the inputs from one strand and HTTP handlers read snapshot().
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace shapeproxy::status {

enum class ServingStatus { kStarting, kLive, kFallback };
// "starting", "live", "fallback".
const char* to_string(ServingStatus status);

// The replication stream's connection state, as the monitor needs it (mirrors
// replication::StreamState so this module does not depend on replication).
enum class StreamLinkState { kStopped, kConnecting, kStreaming, kDisconnected };

// One result of the periodic health query (see ReplicationProbe).
struct ProbeResult {
  bool reachable = false;  // the query ran; false: could not connect / query failed
  // pg_replication_slots.wal_status: "reserved", "extended", "unreserved",
  // "lost"; "" when the slot row is missing. Meaningless when !reachable.
  std::string slot_wal_status;
  std::optional<std::uint64_t> current_wal_lsn;     // pg_current_wal_lsn()
  std::optional<std::uint64_t> slot_confirmed_lsn;  // the slot's confirmed_flush_lsn
  std::optional<std::string> error;                 // why !reachable (logged, not published)
};

struct StatusMonitorOptions {
  std::string slot_name = "shapeproxy";
  // How long a problem (stream down, slot missing/lost) must last before
  // live/starting switches to fallback.
  std::chrono::milliseconds grace_period{2'000};
  // How long the stream may stay silent while the database's WAL is ahead of
  // it before it counts as stalled (and the status leaves live).
  std::chrono::milliseconds stall_timeout{5'000};
};

// What /v1/status and /metrics publish. Safe to expose: no hosts, SQL or
// credentials (errors are reduced to fixed phrases, see public_error_message).
struct StatusSnapshot {
  ServingStatus status = ServingStatus::kStarting;
  // The stream is streaming and the slot is usable.
  bool replication_available = false;
  // The last probe reached the database (before any probe: the stream's view).
  bool database_reachable = false;
  std::chrono::system_clock::time_point last_transition_at;  // start time until the first one
  std::string cause;                                         // why the last transition happened
  std::string slot_name;
  // Last probe's wal_status; "missing" when the slot row is absent; nullopt
  // before any successful probe.
  std::optional<std::string> slot_wal_status;
  std::optional<std::uint64_t> lag_bytes;  // current_wal_lsn - received_lsn (>= 0)
  // Age of the oldest probed WAL head the stream has not received yet (0 when
  // caught up): about the time since the stream was last at the head.
  std::optional<double> lag_seconds;
  std::string last_error;  // fixed phrase; "" when none yet
  std::uint64_t transitions = 0;
  std::uint64_t received_lsn = 0;
};

// One serving-status transition, for the status page's timeline.
struct TransitionRecord {
  std::chrono::system_clock::time_point at;
  ServingStatus from = ServingStatus::kStarting;
  ServingStatus to = ServingStatus::kStarting;
  std::string cause;
};

// Replication lag at one health probe, for the status page's chart.
struct LagSample {
  std::chrono::system_clock::time_point at;
  std::optional<std::uint64_t> lag_bytes;  // absent: the database was not reachable
  std::optional<double> lag_seconds;
  ServingStatus status = ServingStatus::kStarting;
};

// What the monitor remembers (in memory only): the last kMaxTransitions
// transitions and the lag samples of the last kLagWindow, oldest first.
struct StatusHistory {
  static constexpr std::size_t kMaxTransitions = 100;
  static constexpr std::chrono::minutes kLagWindow{15};
  static constexpr std::size_t kMaxLagSamples = 2'000;  // a bound whatever the probe rate
  std::vector<TransitionRecord> transitions;
  std::vector<LagSample> lag;
};

// A fixed, publishable phrase for an error code (never the raw message, which
// may name hosts, users or SQL).
std::string public_error_message(const Error& error);

class ReplicationStatusMonitor {
 public:
  using SteadyClock = std::function<std::chrono::steady_clock::time_point()>;
  using WallClock = std::function<std::chrono::system_clock::time_point()>;

  explicit ReplicationStatusMonitor(StatusMonitorOptions options,
                                    SteadyClock steady_clock = &std::chrono::steady_clock::now,
                                    WallClock wall_clock = &std::chrono::system_clock::now);

  // The stream's state changed; `cause` (may be null) says why it is down.
  void on_stream_state(StreamLinkState state, const Error* cause);
  // The stream has received data or keepalives up to `received_lsn`.
  void on_progress(std::uint64_t received_lsn);
  // A health probe finished.
  void on_health_probe(const ProbeResult& probe);
  // Timer: re-evaluates time-based rules (grace period, stall). Call about
  // every 100-250 ms; inputs re-evaluate too.
  void tick();

  ServingStatus status() const;
  StatusSnapshot snapshot() const;
  StatusHistory history() const;

 private:
  using TimePoint = std::chrono::steady_clock::time_point;

  // A problem that moves the status to fallback at `switch_at` if it lasts.
  struct Problem {
    TimePoint switch_at;
    std::string cause;
  };
  // A probed WAL head the stream had not reached yet, and when it was probed.
  struct ProbedHead {
    std::uint64_t lsn;
    TimePoint probed_at;
  };
  static constexpr std::size_t kMaxPendingHeads = 64;

  void evaluate(TimePoint now);
  std::optional<Problem> current_problem(TimePoint now) const;
  bool stalled(TimePoint now) const;
  bool replication_available(TimePoint now) const;
  bool caught_up() const;
  void transition(ServingStatus to, std::string cause);

  const StatusMonitorOptions options_;
  const SteadyClock steady_clock_;
  const WallClock wall_clock_;

  mutable std::mutex mutex_;
  ServingStatus status_ = ServingStatus::kStarting;
  std::chrono::system_clock::time_point last_transition_at_;
  std::string cause_ = "proxy started";
  std::uint64_t transitions_ = 0;
  std::string last_error_;

  // Stream.
  StreamLinkState stream_state_ = StreamLinkState::kConnecting;
  TimePoint stream_down_since_;  // when the stream last stopped streaming (or start)
  std::string stream_down_cause_ = "replication not connected yet";
  std::uint64_t received_lsn_ = 0;
  TimePoint last_progress_at_;
  // Catch-up: set by the first reachable probe after streaming (re)started.
  bool awaiting_catch_up_target_ = true;
  std::optional<std::uint64_t> catch_up_target_;

  // Probe.
  bool probed_ = false;
  bool probe_reachable_ = false;
  bool unreachable_logged_ = false;
  std::string slot_wal_status_;                  // last reachable probe's
  std::optional<TimePoint> slot_problem_since_;  // slot missing or lost
  std::string slot_problem_cause_;
  bool unreserved_warned_ = false;
  std::optional<std::uint64_t> current_wal_lsn_;
  std::optional<TimePoint> behind_since_;  // WAL first seen ahead of a silent stream

  // History (see StatusHistory), oldest first.
  std::deque<TransitionRecord> transition_history_;
  std::deque<LagSample> lag_history_;
  StatusSnapshot snapshot_locked() const;
  void record_lag_sample(bool reachable);  // under mutex_

  // Probed heads the stream has not reached yet, oldest first (bounded): the
  // oldest one's age is the lag in time.
  std::deque<ProbedHead> pending_heads_;
};

}  // namespace shapeproxy::status

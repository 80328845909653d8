#include "status/status_endpoint.h"

#include <cmath>
#include <cstdint>
#include <ctime>
#include <utility>

#include "shapeproxy/version.h"

namespace shapeproxy::status {
namespace {

// True when an If-None-Match value ("a", W/"a", list, or *) names `etag`.
bool etag_matches(std::string_view if_none_match, std::string_view etag) {
  std::size_t pos = 0;
  while (pos < if_none_match.size()) {
    std::size_t comma = if_none_match.find(',', pos);
    if (comma == std::string_view::npos) comma = if_none_match.size();
    std::string_view candidate = if_none_match.substr(pos, comma - pos);
    while (!candidate.empty() && (candidate.front() == ' ' || candidate.front() == '\t'))
      candidate.remove_prefix(1);
    while (!candidate.empty() && (candidate.back() == ' ' || candidate.back() == '\t'))
      candidate.remove_suffix(1);
    if (candidate.starts_with("W/")) candidate.remove_prefix(2);  // weak comparison
    if (candidate == "*" || candidate == etag) return true;
    pos = comma + 1;
  }
  return false;
}

nlohmann::json optional_number(const std::optional<std::uint64_t>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

}  // namespace

std::string format_iso8601_utc(std::chrono::system_clock::time_point time) {
  using namespace std::chrono;
  const auto millis = duration_cast<milliseconds>(time.time_since_epoch()).count();
  std::time_t seconds = static_cast<std::time_t>(millis / 1000);
  int fraction = static_cast<int>(millis % 1000);
  if (fraction < 0) {
    fraction += 1000;
    --seconds;
  }
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, fraction);
  return buffer;
}

StatusSnapshot with_storage(StatusSnapshot snapshot, const StorageHealth& storage,
                            std::chrono::system_clock::time_point now) {
  if (!storage.failing || !storage.holds_slot) return snapshot;
  if (snapshot.lag_bytes && storage.durable_lsn > 0) {
    const std::uint64_t head = snapshot.received_lsn + *snapshot.lag_bytes;
    if (head > storage.durable_lsn)
      snapshot.lag_bytes = std::max(*snapshot.lag_bytes, head - storage.durable_lsn);
  }
  const double failing_for =
      std::max(0.0, std::chrono::duration<double>(now - storage.since).count());
  snapshot.lag_seconds = std::max(snapshot.lag_seconds.value_or(0.0), failing_for);
  return snapshot;
}

nlohmann::json cluster_json(const ClusterInfo& cluster) {
  nlohmann::json leader = nullptr;
  if (cluster.leader_id) {
    leader = {{"instance_id", *cluster.leader_id}};
    leader["since"] = cluster.leader_since_ms
                          ? nlohmann::json(format_iso8601_utc(std::chrono::system_clock::time_point(
                                std::chrono::milliseconds(*cluster.leader_since_ms))))
                          : nlohmann::json(nullptr);
  }
  return {{"role", cluster.role}, {"instance_id", cluster.instance_id}, {"leader", leader}};
}

nlohmann::json status_body(const StatusSnapshot& reported, const ServingGauges& gauges) {
  const StorageHealth storage = gauges.storage_health();
  const StatusSnapshot snapshot = with_storage(reported, storage, std::chrono::system_clock::now());
  const FallbackActivity fallback = gauges.fallback_activity();
  nlohmann::json lag_seconds = nullptr;
  if (snapshot.lag_seconds) lag_seconds = std::round(*snapshot.lag_seconds * 10.0) / 10.0;
  nlohmann::json body = {
      {"status", to_string(snapshot.status)},
      {"replication_available", snapshot.replication_available},
      {"connection", snapshot.database_reachable ? "ok" : "unreachable"},
      {"shape", to_string(snapshot.status)},
      {"last_transition_at", format_iso8601_utc(snapshot.last_transition_at)},
      {"cause", snapshot.cause},
      {"transitions", snapshot.transitions},
      {"replication",
       {
           {"slot", snapshot.slot_name},
           {"wal_status", snapshot.slot_wal_status ? nlohmann::json(*snapshot.slot_wal_status)
                                                   : nlohmann::json(nullptr)},
           {"lag_bytes", optional_number(snapshot.lag_bytes)},
           {"lag_seconds", lag_seconds},
           {"last_error", snapshot.last_error.empty() ? nlohmann::json(nullptr)
                                                      : nlohmann::json(snapshot.last_error)},
       }},
      {"fallback",
       {
           {"queries_in_flight", fallback.queries_in_flight},
           {"queued", fallback.queued},
           {"refused", fallback.refused_total},
           {"source", fallback.source},
       }},
      {"shapes", gauges.shapes()},
      {"storage",
       {
           {"status", storage.failing ? "failing" : "ok"},
           {"error", storage.failing ? nlohmann::json(storage.error) : nlohmann::json(nullptr)},
           {"failing_since", storage.failing ? nlohmann::json(format_iso8601_utc(storage.since))
                                             : nlohmann::json(nullptr)},
       }},
      {"version", kVersion},
  };
  if (storage.failing) {
    // Not "live": clients are served from memory, but the slot holds WAL
    // and a restart would replay from the last durable position.
    body["status"] = "degraded";
    body["cause"] = storage.holds_slot
                        ? "shape logs cannot be written (" + storage.error +
                              "); transactions are not acknowledged to the replication slot"
                        : "the shapes' row store cannot be written (" + storage.error +
                              "); shape logs are durable and acknowledged, changed rows wait in "
                              "memory";
  }
  body["cluster"] = cluster_json(gauges.cluster_info());
  return body;
}

std::string status_etag(std::string_view body) {
  std::uint64_t hash = 14695981039346656037ull;  // FNV-1a 64
  for (unsigned char c : body) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  char buffer[24];
  std::snprintf(buffer, sizeof buffer, "\"%016llx\"", static_cast<unsigned long long>(hash));
  return buffer;
}

http::Response status_response(const http::Request& request, std::string body,
                               const StatusEndpointOptions& options) {
  std::string etag = status_etag(body);
  http::Response response;
  if (auto if_none_match = request.header("if-none-match");
      if_none_match && etag_matches(*if_none_match, etag)) {
    response.status = 304;
  } else {
    response = http::Response::json(200, std::move(body));
  }
  response.set_header("cache-control",
                      "public, max-age=" + std::to_string(std::max(0, options.max_age_seconds)));
  response.set_header("etag", std::move(etag));
  return response;
}

http::Handler status_handler(std::shared_ptr<const ReplicationStatusMonitor> monitor,
                             ServingGauges gauges, StatusEndpointOptions options) {
  return [monitor = std::move(monitor), gauges = std::move(gauges),
          options](std::shared_ptr<http::Exchange> exchange) {
    exchange->respond(status_response(exchange->request(),
                                      status_body(monitor->snapshot(), gauges).dump(), options));
  };
}

http::HealthState health_state(ServingStatus status) {
  return status == ServingStatus::kStarting ? http::HealthState::kStarting
                                            : http::HealthState::kActive;
}

http::Handler health_handler(std::shared_ptr<const ReplicationStatusMonitor> monitor) {
  return http::health_handler(
      [monitor = std::move(monitor)] { return health_state(monitor->status()); });
}

}  // namespace shapeproxy::status

#include "status/metrics_endpoint.h"

#include <spdlog/fmt/fmt.h>

#include <boost/beast/http/verb.hpp>
#include <chrono>

#include <cmath>
#include <iterator>
#include <span>
#include <utility>

#include "http/request_kind.h"
#include "shapeproxy/version.h"
#include "status/process_metrics.h"
#include "status/status_endpoint.h"

namespace shapeproxy::status {
namespace {

// Label values: backslash, double quote and newline are escaped.
std::string escape_label(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string format_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", value);
}

class ExpositionWriter {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help) {
    fmt::format_to(std::back_inserter(out_), "# HELP {} {}\n# TYPE {} {}\n", name, help, name,
                   type);
  }
  void sample(std::string_view name, std::string_view labels, double value) {
    if (labels.empty()) {
      fmt::format_to(std::back_inserter(out_), "{} {}\n", name, format_value(value));
    } else {
      fmt::format_to(std::back_inserter(out_), "{}{{{}}} {}\n", name, labels, format_value(value));
    }
  }
  void sample(std::string_view name, std::string_view labels, std::uint64_t value) {
    if (labels.empty()) {
      fmt::format_to(std::back_inserter(out_), "{} {}\n", name, value);
    } else {
      fmt::format_to(std::back_inserter(out_), "{}{{{}}} {}\n", name, labels, value);
    }
  }
  // The _bucket{le}, _sum and _count samples of histogram `name` (family
  // written before); `labels` without braces, may be empty.
  void histogram(std::string_view name, std::string_view labels, std::span<const double> bounds,
                 std::span<const std::uint64_t> cumulative, double sum, std::uint64_t count) {
    const std::string bucket = std::string(name) + "_bucket";
    const std::string sep = labels.empty() ? "" : ",";
    for (std::size_t i = 0; i < bounds.size() && i < cumulative.size(); ++i) {
      sample(bucket, fmt::format("{}{}le=\"{}\"", labels, sep, format_value(bounds[i])),
             cumulative[i]);
    }
    sample(bucket, fmt::format("{}{}le=\"+Inf\"", labels, sep), count);
    sample(std::string(name) + "_sum", labels, sum);
    sample(std::string(name) + "_count", labels, count);
  }
  void histogram(std::string_view name, std::string_view labels, const HistogramSnapshot& h) {
    histogram(name, labels, h.bounds, h.cumulative, h.sum, h.count);
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

void write_request_families(ExpositionWriter& out, const RequestMetrics& requests) {
  const auto series = requests.snapshot();
  out.family("shapeproxy_http_requests_total", "counter",
             "HTTP requests answered, by route, method and status code.");
  for (const auto& s : series) {
    const std::string labels =
        fmt::format("route=\"{}\",method=\"{}\"", escape_label(s.route), escape_label(s.method));
    for (const auto& [code, count] : s.responses_by_status) {
      out.sample("shapeproxy_http_requests_total", fmt::format("{},code=\"{}\"", labels, code),
                 count);
    }
  }
  out.family("shapeproxy_http_request_duration_seconds", "histogram",
             "Time from request read to response written, by route and method.");
  for (const auto& s : series) {
    const std::string labels =
        fmt::format("route=\"{}\",method=\"{}\"", escape_label(s.route), escape_label(s.method));
    out.histogram("shapeproxy_http_request_duration_seconds", labels, RequestMetrics::kBucketBounds,
                  s.cumulative_buckets, s.seconds_sum, s.count);
  }
  const auto kinds = requests.kinds_snapshot();
  out.family("shapeproxy_request_duration_seconds", "histogram",
             "Time from request read to response written, by kind: snapshot, catch-up, live "
             "(long-poll), sse (whole stream), status (status, health, metrics, dashboard), "
             "other.");
  for (const auto& k : kinds) {
    out.histogram("shapeproxy_request_duration_seconds", fmt::format("kind=\"{}\"", k.kind),
                  k.duration);
  }
  out.family("shapeproxy_response_body_bytes_total", "counter",
             "Response body bytes served, by request kind.");
  for (const auto& k : kinds) {
    out.sample("shapeproxy_response_body_bytes_total", fmt::format("kind=\"{}\"", k.kind),
               k.body_bytes);
  }
  out.family("shapeproxy_http_sendfile_responses_total", "counter",
             "Responses whose body was sent from disk with sendfile (not copied through "
             "user space).");
  out.sample("shapeproxy_http_sendfile_responses_total", "", requests.sendfile_responses());
  out.family("shapeproxy_http_sendfile_bytes_total", "counter",
             "Body bytes sent from disk with sendfile.");
  out.sample("shapeproxy_http_sendfile_bytes_total", "", requests.sendfile_bytes());
}

}  // namespace

std::string render_metrics(const StatusSnapshot& reported, const ServingGauges& gauges,
                           const RequestMetrics* requests) {
  const StorageHealth storage = gauges.storage_health();
  const StatusSnapshot snapshot = with_storage(reported, storage, std::chrono::system_clock::now());
  ExpositionWriter out;
  out.family("shapeproxy_status", "gauge",
             "Serving status: 1 for the current state (starting, live, fallback).");
  for (ServingStatus state :
       {ServingStatus::kStarting, ServingStatus::kLive, ServingStatus::kFallback}) {
    out.sample("shapeproxy_status", fmt::format("state=\"{}\"", to_string(state)),
               std::uint64_t{snapshot.status == state ? 1u : 0u});
  }
  out.family("shapeproxy_status_transitions_total", "counter",
             "Serving status transitions since the proxy started.");
  out.sample("shapeproxy_status_transitions_total", "", snapshot.transitions);
  out.family("shapeproxy_replication_available", "gauge",
             "1 when the replication stream is streaming from a usable slot.");
  out.sample("shapeproxy_replication_available", "",
             std::uint64_t{snapshot.replication_available ? 1u : 0u});
  out.family("shapeproxy_replication_lag_bytes", "gauge",
             "Bytes of WAL the replication stream is behind the database.");
  if (snapshot.lag_bytes) out.sample("shapeproxy_replication_lag_bytes", "", *snapshot.lag_bytes);
  out.family("shapeproxy_replication_lag_seconds", "gauge",
             "Seconds since the replication stream was last at the database's WAL head.");
  if (snapshot.lag_seconds) {
    out.sample("shapeproxy_replication_lag_seconds", "", *snapshot.lag_seconds);
  }

  const FallbackActivity fallback = gauges.fallback_activity();
  out.family("shapeproxy_fallback_queries_running", "gauge",
             "Fallback-mode direct queries running now.");
  out.sample("shapeproxy_fallback_queries_running", "", fallback.queries_in_flight);
  out.family("shapeproxy_fallback_queries_queued", "gauge",
             "Requests waiting for a fallback query slot.");
  out.sample("shapeproxy_fallback_queries_queued", "", fallback.queued);
  out.family("shapeproxy_fallback_queries_refused_total", "counter",
             "Requests refused (503) because the fallback query cap was reached.");
  out.sample("shapeproxy_fallback_queries_refused_total", "", fallback.refused_total);
  out.family("shapeproxy_fallback_queries_total", "counter",
             "Fallback-mode database queries run, by outcome (ok, query_timeout, "
             "database_unavailable).");
  for (const auto& [outcome, h] : fallback.query_durations) {
    out.sample("shapeproxy_fallback_queries_total",
               fmt::format("outcome=\"{}\"", escape_label(outcome)), h.count);
  }
  out.family("shapeproxy_fallback_query_duration_seconds", "histogram",
             "Duration of fallback-mode database queries, by outcome.");
  for (const auto& [outcome, h] : fallback.query_durations) {
    out.histogram("shapeproxy_fallback_query_duration_seconds",
                  fmt::format("outcome=\"{}\"", escape_label(outcome)), h);
  }
  const ClusterInfo cluster = gauges.cluster_info();
  out.family("shapeproxy_cluster_leader", "gauge",
             "1 when this instance leads the instances sharing its data directory, else 0.");
  out.sample("shapeproxy_cluster_leader", "", std::uint64_t{cluster.role == "leader" ? 1u : 0u});
  out.family("shapeproxy_cluster_info", "gauge",
             "This instance's id and role, and the leader's id (\"\" when none is known).");
  out.sample("shapeproxy_cluster_info",
             fmt::format("instance_id=\"{}\",role=\"{}\",leader_id=\"{}\"",
                         escape_label(cluster.instance_id), escape_label(cluster.role),
                         escape_label(cluster.leader_id.value_or(""))),
             std::uint64_t{1});
  out.family("shapeproxy_cluster_follower_serving", "gauge",
             "1 while this follower answers reads from the shared files itself, else 0.");
  out.sample("shapeproxy_cluster_follower_serving", "",
             std::uint64_t{cluster.follower_serving ? 1u : 0u});
  out.family("shapeproxy_cluster_follower_reads_total", "counter",
             "Shape reads this follower answered from the shared files (not relayed).");
  out.sample("shapeproxy_cluster_follower_reads_total", "", cluster.follower_reads);
  out.family("shapeproxy_cluster_follower_parked", "gauge",
             "Live reads (long-poll, SSE) parked on this follower's own shapes.");
  out.sample("shapeproxy_cluster_follower_parked", "", cluster.follower_parked);
  out.family("shapeproxy_replication_reconnects_total", "counter",
             "Times the replication stream was lost (or could not start) and was tried again.");
  out.sample("shapeproxy_replication_reconnects_total", "", gauges.reconnects());
  out.family("shapeproxy_parked_requests", "gauge",
             "Live requests (long-poll, SSE) waiting for changes.");
  out.sample("shapeproxy_parked_requests", "", gauges.parked());
  out.family("shapeproxy_storage_failing", "gauge",
             "1 while shape logs cannot be written or synced (e.g. disk full; transactions "
             "are then not acknowledged to the replication slot) or the row store cannot be "
             "written (changed rows wait in memory).");
  out.sample("shapeproxy_storage_failing", "", std::uint64_t{storage.failing ? 1u : 0u});
  out.family("shapeproxy_shapes", "gauge", "Shapes held by the proxy.");
  out.sample("shapeproxy_shapes", "", gauges.shapes());
  const ShapesByState states = gauges.shape_states();
  out.family("shapeproxy_shapes_by_state", "gauge",
             "Shapes held, by state: snapshotting (first snapshot under way) or ready.");
  out.sample("shapeproxy_shapes_by_state", "state=\"snapshotting\"", states.snapshotting);
  out.sample("shapeproxy_shapes_by_state", "state=\"ready\"", states.ready);
  out.family("shapeproxy_build_info", "gauge", "Always 1; the labels say which build runs.");
  out.sample("shapeproxy_build_info",
             fmt::format("version=\"{}\",compiler=\"{}\"", escape_label(kVersion),
                         escape_label(__VERSION__)),
             std::uint64_t{1});
  if (auto process = read_process_stats()) {
    out.family("process_cpu_seconds_total", "counter",
               "User and system CPU time spent in seconds.");
    out.sample("process_cpu_seconds_total", "", process->cpu_seconds);
    out.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    out.sample("process_resident_memory_bytes", "", process->resident_bytes);
    out.family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    out.sample("process_virtual_memory_bytes", "", process->virtual_bytes);
    out.family("process_open_fds", "gauge", "Number of open file descriptors.");
    out.sample("process_open_fds", "", process->open_fds);
    out.family("process_max_fds", "gauge", "Maximum number of open file descriptors.");
    out.sample("process_max_fds", "", process->max_fds);
    out.family("process_start_time_seconds", "gauge",
               "Start time of the process since unix epoch in seconds.");
    out.sample("process_start_time_seconds", "", process->start_time_seconds);
  }

  if (requests) write_request_families(out, *requests);
  return out.take();
}

http::Handler metrics_handler(std::shared_ptr<const ReplicationStatusMonitor> monitor,
                              ServingGauges gauges,
                              std::shared_ptr<const RequestMetrics> requests) {
  return [monitor = std::move(monitor), gauges = std::move(gauges),
          requests = std::move(requests)](std::shared_ptr<http::Exchange> exchange) {
    http::Response response;
    response.status = 200;
    response.body = std::make_shared<const std::string>(
        render_metrics(monitor->snapshot(), gauges, requests.get()));
    response.set_header("content-type", "text/plain; version=0.0.4; charset=utf-8");
    response.set_header("cache-control", "no-store");
    exchange->respond(std::move(response));
  };
}

http::RequestObserver request_metrics_observer(std::shared_ptr<RequestMetrics> requests) {
  return [requests = std::move(requests)](const http::RequestRecord& record) {
    const std::string_view method = record.method == http::Verb::unknown
                                        ? "other"
                                        : boost::beast::http::to_string(record.method);
    const double seconds = std::chrono::duration<double>(record.duration).count();
    requests->record(record.route.empty() ? RequestMetrics::kOtherRoute : record.route, method,
                     record.status, seconds);
    requests->record_kind(http::request_kind(record.route, record.target), seconds,
                          record.body_bytes);
    if (record.sendfile_bytes > 0) requests->record_sendfile(record.sendfile_bytes);
  };
}

}  // namespace shapeproxy::status

// /v1/status, /v1/health and /metrics through a real http::HttpServer on an
// ephemeral port, driven by the synchronous test client: body fields,
// Cache-Control, ETag and 304, agreement with /v1/health, nothing secret in
// the body, and a /metrics exposition that parses line by line.
#include <gtest/gtest.h>

#include <boost/beast/http.hpp>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "http/server.h"
#include "shapeproxy/version.h"
#include "status/metrics_endpoint.h"
#include "status/request_metrics.h"
#include "status/status_endpoint.h"
#include "status/status_monitor.h"
#include "support/http_test_server.h"

namespace shapeproxy::status {
namespace {

namespace bhttp = boost::beast::http;
using json = nlohmann::json;
using namespace std::chrono_literals;
using namespace shapeproxy::testing;  // the HTTP test client

class StatusEndpointsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StatusMonitorOptions options;
    options.slot_name = "shapeproxy_slot";
    monitor_ = std::make_shared<ReplicationStatusMonitor>(options, [this] { return now(); });
    gauges_.fallback = [] {
      return FallbackActivity{.queries_in_flight = 3,
                              .queued = 2,
                              .refused_total = 7,
                              .source = "standby",
                              .query_durations = {}};
    };
    gauges_.shape_count = [] { return std::uint64_t{12}; };
    gauges_.parked_requests = [] { return std::uint64_t{40}; };
    requests_ = std::make_shared<RequestMetrics>(
        std::vector<std::string>{"/v1/shape", "/v1/status", "/v1/health", "/metrics"});
  }

  void TearDown() override { server_.stop(); }

  std::chrono::steady_clock::time_point now() {
    std::lock_guard lock(clock_mutex_);
    return now_;
  }
  void advance(std::chrono::milliseconds by) {
    {
      std::lock_guard lock(clock_mutex_);
      now_ += by;
    }
    monitor_->tick();
  }

  void start(StatusEndpointOptions options = {}) {
    http::Router router;
    router.add(http::Verb::get, "/v1/status", status_handler(monitor_, gauges_, options));
    router.add(http::Verb::get, "/v1/health", health_handler(monitor_));
    router.add(http::Verb::get, "/metrics", metrics_handler(monitor_, gauges_, requests_));
    http::ServerOptions server_options;
    server_options.on_request_done = request_metrics_observer(requests_);
    auto started = server_.start(std::move(router), std::move(server_options));
    ASSERT_TRUE(started.ok()) << started.error().to_string();
  }

  HttpResponse get(const std::string& target, const std::string& if_none_match = {}) {
    HttpHeaders headers;
    if (!if_none_match.empty()) headers.set(bhttp::field::if_none_match, if_none_match);
    return server_.client().get(target, headers);
  }

  void go_live() {
    monitor_->on_stream_state(StreamLinkState::kStreaming, nullptr);
    ProbeResult probe;
    probe.reachable = true;
    probe.slot_wal_status = "reserved";
    probe.current_wal_lsn = 5000;
    monitor_->on_health_probe(probe);
    monitor_->on_progress(5000);
    ASSERT_EQ(monitor_->status(), ServingStatus::kLive);
  }

  void go_fallback() {
    Error error{"connection_failed",
                "connection to server at \"db.internal\" (10.0.0.5), port 5432 failed: password "
                "authentication failed for user \"alice\"",
                "host=db.internal user=alice password=hunter2"};
    monitor_->on_stream_state(StreamLinkState::kDisconnected, &error);
    advance(3s);
    ASSERT_EQ(monitor_->status(), ServingStatus::kFallback);
  }

  std::mutex clock_mutex_;
  std::chrono::steady_clock::time_point now_ = std::chrono::steady_clock::time_point{} + 1h;
  std::shared_ptr<ReplicationStatusMonitor> monitor_;
  ServingGauges gauges_;
  std::shared_ptr<RequestMetrics> requests_;

  HttpTestServer server_;
};

TEST_F(StatusEndpointsTest, StatusBodyHasTheContractFields) {
  start();
  go_live();
  auto response = get("/v1/status");
  ASSERT_EQ(response.result_int(), 200);
  EXPECT_EQ(response[bhttp::field::content_type], "application/json");
  EXPECT_EQ(response[bhttp::field::cache_control], "public, max-age=5");
  auto body = json::parse(response.body());
  EXPECT_EQ(body["status"], "live");
  EXPECT_EQ(body["shape"], "live");
  EXPECT_EQ(body["replication_available"], true);
  EXPECT_EQ(body["connection"], "ok");
  EXPECT_TRUE(std::regex_match(body["last_transition_at"].get<std::string>(),
                               std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")))
      << body["last_transition_at"];
  EXPECT_EQ(body["transitions"], 1);
  EXPECT_EQ(body["replication"]["slot"], "shapeproxy_slot");
  EXPECT_EQ(body["replication"]["wal_status"], "reserved");
  EXPECT_EQ(body["replication"]["lag_bytes"], 0);
  EXPECT_EQ(body["replication"]["lag_seconds"], 0.0);
  EXPECT_TRUE(body["replication"]["last_error"].is_null());
  EXPECT_EQ(body["fallback"]["queries_in_flight"], 3);
  EXPECT_EQ(body["fallback"]["queued"], 2);
  EXPECT_EQ(body["fallback"]["refused"], 7);
  EXPECT_EQ(body["fallback"]["source"], "standby");
  EXPECT_EQ(body["shapes"], 12);
  EXPECT_EQ(body["version"], kVersion);
}

TEST_F(StatusEndpointsTest, FallbackBodyNamesNoHostsUsersOrSecrets) {
  start();
  go_live();
  go_fallback();
  auto response = get("/v1/status");
  ASSERT_EQ(response.result_int(), 200);
  auto body = json::parse(response.body());
  EXPECT_EQ(body["status"], "fallback");
  EXPECT_EQ(body["shape"], "fallback");
  EXPECT_EQ(body["replication_available"], false);
  EXPECT_EQ(body["replication"]["last_error"], "could not connect to PostgreSQL");
  for (const char* secret : {"db.internal", "10.0.0.5", "alice", "hunter2", "password", "host="}) {
    EXPECT_EQ(response.body().find(secret), std::string::npos)
        << secret << " in " << response.body();
  }
}

TEST_F(StatusEndpointsTest, ETagAndIfNoneMatchGive304) {
  start();
  go_live();
  auto first = get("/v1/status");
  const std::string etag(first[bhttp::field::etag]);
  ASSERT_TRUE(std::regex_match(etag, std::regex(R"("[0-9a-f]{16}")"))) << etag;
  EXPECT_EQ(get("/v1/status")[bhttp::field::etag], etag) << "stable while nothing changes";

  for (const std::string& header : {etag, "W/" + etag, "\"other\", " + etag, std::string("*")}) {
    auto cached = get("/v1/status", header);
    EXPECT_EQ(cached.result_int(), 304) << header;
    EXPECT_EQ(cached[bhttp::field::etag], etag);
    EXPECT_EQ(cached[bhttp::field::cache_control], "public, max-age=5");
    EXPECT_TRUE(cached.body().empty());
  }
  EXPECT_EQ(get("/v1/status", "\"0000000000000000\"").result_int(), 200);

  go_fallback();
  auto changed = get("/v1/status", etag);
  EXPECT_EQ(changed.result_int(), 200);
  EXPECT_NE(changed[bhttp::field::etag], etag);
}

TEST_F(StatusEndpointsTest, MaxAgeIsConfigurable) {
  start(StatusEndpointOptions{.max_age_seconds = 30});
  EXPECT_EQ(get("/v1/status")[bhttp::field::cache_control], "public, max-age=30");
}

TEST_F(StatusEndpointsTest, HealthAgreesWithStatus) {
  start();
  auto health = get("/v1/health");
  EXPECT_EQ(health.result_int(), 202);
  EXPECT_EQ(json::parse(health.body())["status"], "starting");
  EXPECT_EQ(json::parse(get("/v1/status").body())["status"], "starting");

  go_live();
  health = get("/v1/health");
  EXPECT_EQ(health.result_int(), 200);
  EXPECT_EQ(json::parse(health.body())["status"], "active");

  go_fallback();  // still serving
  health = get("/v1/health");
  EXPECT_EQ(health.result_int(), 200);
  EXPECT_EQ(json::parse(health.body())["status"], "active");
  EXPECT_EQ(health_state(ServingStatus::kStarting), http::HealthState::kStarting);
}

// One parsed exposition line.
struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Parses the exposition text; fails the test on any line that is not a HELP,
// TYPE or sample line, or on a sample whose family has no TYPE before it.
std::vector<Sample> parse_exposition(const std::string& text) {
  static const std::regex kHelp(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+)");
  static const std::regex kType(
      R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped))");
  static const std::regex kSample(
      R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ([-+]?(?:[0-9.eE+-]+|Inf|NaN)))");
  static const std::regex kLabel(R"re(([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)")re");
  std::vector<Sample> samples;
  std::map<std::string, std::string> types;
  std::istringstream lines(text);
  std::string line;
  EXPECT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  while (std::getline(lines, line)) {
    std::smatch m;
    if (std::regex_match(line, m, kHelp)) continue;
    if (std::regex_match(line, m, kType)) {
      EXPECT_FALSE(types.contains(m[1])) << "TYPE twice: " << line;
      types[m[1]] = m[2];
      continue;
    }
    if (!std::regex_match(line, m, kSample)) {
      ADD_FAILURE() << "unparseable line: " << line;
      continue;
    }
    Sample sample;
    sample.name = m[1];
    std::string labels = m[3];
    for (auto it = std::sregex_iterator(labels.begin(), labels.end(), kLabel);
         it != std::sregex_iterator(); ++it) {
      sample.labels[(*it)[1]] = (*it)[2];
    }
    sample.value = std::stod(m[4]);
    std::string family = sample.name;
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      if (!types.contains(family) && family.ends_with(suffix)) {
        family.resize(family.size() - std::string_view(suffix).size());
      }
    }
    EXPECT_TRUE(types.contains(family)) << "no TYPE for " << line;
    samples.push_back(std::move(sample));
  }
  return samples;
}

std::optional<double> value_of(const std::vector<Sample>& samples, const std::string& name,
                               const std::map<std::string, std::string>& labels = {}) {
  for (const auto& s : samples) {
    if (s.name == name && s.labels == labels) return s.value;
  }
  return std::nullopt;
}

// Scrapes (GET /metrics) until `ready` holds for the samples (at most ~2 s);
// the last samples.
template <class Scrape, class Ready>
std::vector<Sample> poll_metrics(Scrape scrape, Ready ready) {
  std::vector<Sample> samples;
  for (int attempt = 0; attempt < 200; ++attempt) {
    samples = parse_exposition(scrape().body());
    if (ready(samples)) break;
    std::this_thread::sleep_for(10ms);
  }
  return samples;
}

TEST_F(StatusEndpointsTest, MetricsAreParseableWithAOneHotState) {
  requests_->record("/v1/shape", "GET", 200, 0.003);
  requests_->record("/v1/shape", "GET", 200, 0.2);
  requests_->record("/v1/shape", "GET", 503, 12.0);
  requests_->record("/v1/status", "GET", 304, 0.0001);
  start();
  go_live();
  go_fallback();

  auto response = get("/metrics");
  ASSERT_EQ(response.result_int(), 200);
  EXPECT_EQ(response[bhttp::field::content_type], "text/plain; version=0.0.4; charset=utf-8");
  auto samples = parse_exposition(response.body());

  int hot = 0;
  for (const char* state : {"starting", "live", "fallback"}) {
    auto v = value_of(samples, "shapeproxy_status", {{"state", state}});
    ASSERT_TRUE(v) << state;
    hot += static_cast<int>(*v);
    EXPECT_EQ(*v, std::string(state) == "fallback" ? 1 : 0) << state;
  }
  EXPECT_EQ(hot, 1);
  EXPECT_EQ(value_of(samples, "shapeproxy_status_transitions_total"), 2);
  EXPECT_EQ(value_of(samples, "shapeproxy_replication_available"), 0);
  EXPECT_TRUE(value_of(samples, "shapeproxy_replication_lag_bytes"));
  EXPECT_TRUE(value_of(samples, "shapeproxy_replication_lag_seconds"));
  EXPECT_EQ(value_of(samples, "shapeproxy_fallback_queries_running"), 3);
  EXPECT_EQ(value_of(samples, "shapeproxy_fallback_queries_queued"), 2);
  EXPECT_EQ(value_of(samples, "shapeproxy_fallback_queries_refused_total"), 7);
  EXPECT_EQ(value_of(samples, "shapeproxy_parked_requests"), 40);
  EXPECT_EQ(value_of(samples, "shapeproxy_shapes"), 12);

  EXPECT_EQ(value_of(samples, "shapeproxy_http_requests_total",
                     {{"route", "/v1/shape"}, {"method", "GET"}, {"code", "200"}}),
            2);
  EXPECT_EQ(value_of(samples, "shapeproxy_http_requests_total",
                     {{"route", "/v1/shape"}, {"method", "GET"}, {"code", "503"}}),
            1);
  EXPECT_EQ(value_of(samples, "shapeproxy_http_request_duration_seconds_bucket",
                     {{"route", "/v1/shape"}, {"method", "GET"}, {"le", "0.005"}}),
            1);
  EXPECT_EQ(value_of(samples, "shapeproxy_http_request_duration_seconds_bucket",
                     {{"route", "/v1/shape"}, {"method", "GET"}, {"le", "0.25"}}),
            2);
  EXPECT_EQ(value_of(samples, "shapeproxy_http_request_duration_seconds_bucket",
                     {{"route", "/v1/shape"}, {"method", "GET"}, {"le", "+Inf"}}),
            3);
  EXPECT_EQ(value_of(samples, "shapeproxy_http_request_duration_seconds_count",
                     {{"route", "/v1/shape"}, {"method", "GET"}}),
            3);
  EXPECT_NEAR(*value_of(samples, "shapeproxy_http_request_duration_seconds_sum",
                        {{"route", "/v1/shape"}, {"method", "GET"}}),
              12.203, 1e-9);
  // Buckets are cumulative.
  double previous = 0;
  for (const auto& s : samples) {
    if (s.name != "shapeproxy_http_request_duration_seconds_bucket") continue;
    if (s.labels.at("route") != "/v1/status") continue;
    EXPECT_GE(s.value, previous);
    previous = s.value;
  }
  EXPECT_EQ(previous, 1);
}

TEST_F(StatusEndpointsTest, MetricsBeforeAnyProbeOmitLag) {
  start();
  auto samples = parse_exposition(get("/metrics").body());
  EXPECT_EQ(value_of(samples, "shapeproxy_status", {{"state", "starting"}}), 1);
  EXPECT_FALSE(value_of(samples, "shapeproxy_replication_lag_bytes"));
}

TEST_F(StatusEndpointsTest, AnsweredRequestsMoveCountsAndHistogramBuckets) {
  start();
  auto counter = [](const std::vector<Sample>& samples, const std::string& route,
                    const std::string& method, const std::string& code) {
    return value_of(samples, "shapeproxy_http_requests_total",
                    {{"route", route}, {"method", method}, {"code", code}})
        .value_or(0);
  };
  auto bucket = [](const std::vector<Sample>& samples, const std::string& route,
                   const std::string& le) {
    return value_of(samples, "shapeproxy_http_request_duration_seconds_bucket",
                    {{"route", route}, {"method", "GET"}, {"le", le}})
        .value_or(0);
  };
  auto before = parse_exposition(get("/metrics").body());
  EXPECT_EQ(counter(before, "/v1/status", "GET", "200"), 0);

  auto first = get("/v1/status");
  ASSERT_EQ(first.result_int(), 200);
  ASSERT_EQ(get("/v1/status").result_int(), 200);
  ASSERT_EQ(get("/v1/status", std::string(first[bhttp::field::etag])).result_int(), 304);
  ASSERT_EQ(get("/v1/health").result_int(), 202);  // starting
  ASSERT_EQ(get("/no/such/path?secret=x").result_int(), 404);

  // A request is recorded once its write completed on the server, which may
  // be just after the client read the response (and, with two I/O threads,
  // after a later request was recorded): poll until each has been counted.
  auto after = poll_metrics([this] { return get("/metrics"); },
                            [&](const std::vector<Sample>& samples) {
                              return counter(samples, "/v1/status", "GET", "200") >= 2 &&
                                     counter(samples, "/v1/status", "GET", "304") >= 1 &&
                                     counter(samples, "/v1/health", "GET", "202") >= 1 &&
                                     counter(samples, "other", "GET", "404") >= 1;
                            });
  EXPECT_EQ(counter(after, "/v1/status", "GET", "200"), 2);
  EXPECT_EQ(counter(after, "/v1/status", "GET", "304"), 1);
  EXPECT_EQ(counter(after, "/v1/health", "GET", "202"), 1);
  // Unrouted paths share one label: the raw target never becomes a label.
  EXPECT_EQ(counter(after, "other", "GET", "404"), 1);
  for (const auto& sample : after) {
    auto route = sample.labels.find("route");
    if (route != sample.labels.end()) {
      EXPECT_EQ(route->second.find('?'), std::string::npos);
    }
  }
  // The /metrics request that rendered `before` was written before `after`.
  EXPECT_GE(counter(after, "/metrics", "GET", "200"), 1);
  EXPECT_EQ(bucket(after, "/v1/status", "+Inf"), 3);
  EXPECT_EQ(value_of(after, "shapeproxy_http_request_duration_seconds_count",
                     {{"route", "/v1/status"}, {"method", "GET"}}),
            3);
  // Loopback requests answered at once land in the small buckets.
  EXPECT_EQ(bucket(after, "/v1/status", "1"), 3);
  EXPECT_GT(*value_of(after, "shapeproxy_http_request_duration_seconds_sum",
                      {{"route", "/v1/status"}, {"method", "GET"}}),
            0);
}

TEST_F(StatusEndpointsTest, RefusedRequestsAreCountedUnderOther) {
  start();
  auto response = get("/v1/status?x=" + std::string(9000, 'a'));
  ASSERT_EQ(response.result_int(), 414);

  auto samples =
      poll_metrics([this] { return get("/metrics"); },
                   [](const std::vector<Sample>& samples) {
                     return value_of(samples, "shapeproxy_http_requests_total",
                                     {{"route", "other"}, {"method", "GET"}, {"code", "414"}})
                         .has_value();
                   });
  EXPECT_EQ(value_of(samples, "shapeproxy_http_requests_total",
                     {{"route", "other"}, {"method", "GET"}, {"code", "414"}}),
            1);
}

TEST(RequestMetricsTest, LabelsAreBoundedAndEscaped) {
  RequestMetrics metrics({"/a", "/b"});
  metrics.record("/a", "GET", 200, 0.1);
  metrics.record("/b", "GET", 200, 0.1);
  metrics.record("/c", "GET", 200, 0.1);    // not a known route: "other"
  metrics.record("/d", "BREW", 404, 0.1);   // unknown method: "other"
  metrics.record("/a", "GET", 200, -1);     // clamped to 0
  metrics.record("/a", "GET", 42, 0.0005);  // impossible status: counted as 500
  auto series = metrics.snapshot();
  ASSERT_EQ(series.size(), 4u);
  EXPECT_EQ(series[0].route, "/a");
  EXPECT_EQ(series[0].method, "GET");
  EXPECT_EQ(series[0].count, 3u);
  EXPECT_EQ(series[0].cumulative_buckets[0], 2u);
  EXPECT_EQ(series[0].responses_by_status,
            (std::vector<std::pair<unsigned, std::uint64_t>>{{200, 2}, {500, 1}}));
  EXPECT_EQ(series[2].route, "other");
  EXPECT_EQ(series[2].method, "GET");
  EXPECT_EQ(series[3].route, "other");
  EXPECT_EQ(series[3].method, "other");

  RequestMetrics quoted({"/x\"y\\z\n"});
  quoted.record("/x\"y\\z\n", "GET", 200, 0.1);
  auto text = render_metrics(StatusSnapshot{}, ServingGauges{}, &quoted);
  EXPECT_NE(text.find(R"(route="/x\"y\\z\n")"), std::string::npos) << text;
  parse_exposition(text);
}

TEST(RequestMetricsTest, ConcurrentRecordsAreAllCounted) {
  RequestMetrics metrics({"/v1/shape", "/v1/status"});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&metrics, t] {
      for (int i = 0; i < 10'000; ++i)
        metrics.record(t % 2 ? "/v1/shape" : "/v1/status", "GET", 200, 0.01);
    });
  }
  for (auto& thread : threads) thread.join();
  std::uint64_t total = 0;
  for (const auto& series : metrics.snapshot()) {
    total += series.count;
    EXPECT_EQ(series.responses_by_status.at(0).second, 20'000u);
    EXPECT_NEAR(series.seconds_sum, 200.0, 1e-6);
  }
  EXPECT_EQ(total, 40'000u);
}

TEST(StatusEtagTest, DependsOnTheBody) {
  EXPECT_EQ(status_etag("{}"), status_etag("{}"));
  EXPECT_NE(status_etag("{\"a\":1}"), status_etag("{\"a\":2}"));
  EXPECT_EQ(format_iso8601_utc(std::chrono::system_clock::time_point{} +
                               std::chrono::milliseconds(1'700'000'000'123)),
            "2023-11-14T22:13:20.123Z");
}

// Issue 16 item 15: a storage failure (disk full) is not "live, lag 0":
// status and metrics name it, and the lag counts from what is durable.
TEST(StorageHealthTest, StatusAndMetricsShowAStorageFailure) {
  StatusSnapshot snapshot;
  snapshot.status = ServingStatus::kLive;
  snapshot.replication_available = true;
  snapshot.received_lsn = 1'000;
  snapshot.lag_bytes = 0;
  snapshot.lag_seconds = 0.0;
  ServingGauges gauges;
  auto healthy = status_body(snapshot, gauges);
  EXPECT_EQ(healthy["status"], "live");
  EXPECT_EQ(healthy["storage"]["status"], "ok");
  gauges.storage = [] {
    return StorageHealth{true, "No space left on device", std::chrono::system_clock::now() - 30s,
                         400};
  };
  auto failing = status_body(snapshot, gauges);
  EXPECT_EQ(failing["status"], "degraded");
  EXPECT_EQ(failing["storage"]["status"], "failing");
  EXPECT_EQ(failing["storage"]["error"], "No space left on device");
  EXPECT_NE(failing["cause"].get<std::string>().find("No space left"), std::string::npos);
  EXPECT_EQ(failing["replication"]["lag_bytes"], 600);
  EXPECT_GE(failing["replication"]["lag_seconds"].get<double>(), 29.9);
  auto metrics = render_metrics(snapshot, gauges, nullptr);
  EXPECT_NE(metrics.find("\nshapeproxy_storage_failing 1\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("\nshapeproxy_replication_lag_bytes 600\n"), std::string::npos) << metrics;

  // Only the row store fails: the logs are durable and acknowledged, so
  // the lag is replication's own; the cause says which part fails.
  gauges.storage = [] {
    StorageHealth health{true, "shape state store: cannot write: No space left on device",
                         std::chrono::system_clock::now() - 30s, 400};
    health.holds_slot = false;
    return health;
  };
  auto rows_failing = status_body(snapshot, gauges);
  EXPECT_EQ(rows_failing["status"], "degraded");
  EXPECT_EQ(rows_failing["storage"]["status"], "failing");
  EXPECT_NE(rows_failing["cause"].get<std::string>().find("row store cannot be written"),
            std::string::npos)
      << rows_failing["cause"];
  EXPECT_EQ(rows_failing["cause"].get<std::string>().find("not acknowledged"), std::string::npos);
  EXPECT_EQ(rows_failing["replication"]["lag_bytes"], 0);
  EXPECT_EQ(rows_failing["replication"]["lag_seconds"], 0.0);
  metrics = render_metrics(snapshot, gauges, nullptr);
  EXPECT_NE(metrics.find("\nshapeproxy_storage_failing 1\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("\nshapeproxy_replication_lag_bytes 0\n"), std::string::npos) << metrics;
}

}  // namespace
}  // namespace shapeproxy::status

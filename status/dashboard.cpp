#include "status/dashboard.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "shapeproxy/version.h"
#include "status/process_metrics.h"
#include "status/status_endpoint.h"

// const char* const kDashboardHtml: status/dashboard.html, embedded at build
// time (cmake/embed_text.cmake).
#include "status/dashboard_html.inc"

namespace shapeproxy::status {
namespace {

constexpr std::size_t kMaxShapesListed = 1'000;

http::Response no_store_json(const nlohmann::json& body) {
  auto response = http::Response::json(200, body.dump());
  response.set_header("cache-control", "no-store");
  return response;
}

}  // namespace

std::string_view dashboard_html() { return kDashboardHtml; }

http::Handler dashboard_handler() {
  auto body = std::make_shared<const std::string>(kDashboardHtml);
  return [body](std::shared_ptr<http::Exchange> exchange) {
    http::Response response;
    response.status = 200;
    response.body = body;
    response.set_header("content-type", "text/html; charset=utf-8");
    response.set_header("cache-control", "public, max-age=60");
    // Everything is inline: no other origin, no frames.
    response.set_header("content-security-policy",
                        "default-src 'none'; script-src 'unsafe-inline'; style-src "
                        "'unsafe-inline'; connect-src 'self'; img-src 'self' data:; "
                        "frame-ancestors 'none'");
    exchange->respond(std::move(response));
  };
}

http::Handler history_handler(std::shared_ptr<const ReplicationStatusMonitor> monitor) {
  return [monitor = std::move(monitor)](std::shared_ptr<http::Exchange> exchange) {
    const StatusHistory history = monitor->history();
    nlohmann::json transitions = nlohmann::json::array();
    for (const auto& t : history.transitions) {
      transitions.push_back({{"at", format_iso8601_utc(t.at)},
                             {"from", to_string(t.from)},
                             {"to", to_string(t.to)},
                             {"cause", t.cause}});
    }
    nlohmann::json lag = nlohmann::json::array();
    for (const auto& s : history.lag) {
      lag.push_back({{"at", format_iso8601_utc(s.at)},
                     {"bytes", s.lag_bytes ? nlohmann::json(*s.lag_bytes) : nlohmann::json()},
                     {"seconds", s.lag_seconds ? nlohmann::json(*s.lag_seconds) : nlohmann::json()},
                     {"status", to_string(s.status)}});
    }
    nlohmann::json body = {{"version", kVersion},
                           {"started_at", nullptr},
                           {"transitions", std::move(transitions)},
                           {"lag", std::move(lag)}};
    if (auto process = read_process_stats()) {
      body["started_at"] =
          format_iso8601_utc(std::chrono::system_clock::time_point(std::chrono::milliseconds(
              static_cast<std::int64_t>(process->start_time_seconds * 1000))));
    }
    exchange->respond(no_store_json(body));
  };
}

http::Handler shapes_handler(ShapeLister lister) {
  return [lister = std::move(lister)](std::shared_ptr<http::Exchange> exchange) {
    if (!lister) {
      exchange->respond(no_store_json({{"shapes", nlohmann::json::array()}}));
      return;
    }
    lister([exchange](std::vector<ShapeRow> rows) {
      std::sort(rows.begin(), rows.end(), [](const ShapeRow& a, const ShapeRow& b) {
        return a.readers != b.readers ? a.readers > b.readers : a.rows > b.rows;
      });
      nlohmann::json shapes = nlohmann::json::array();
      for (std::size_t i = 0; i < rows.size() && i < kMaxShapesListed; ++i) {
        const ShapeRow& r = rows[i];
        shapes.push_back({{"handle", r.handle},
                          {"table", r.table},
                          {"where", r.where},
                          {"state", r.state},
                          {"rows", r.rows},
                          {"snapshot_bytes", r.snapshot_bytes},
                          {"readers", r.readers}});
      }
      exchange->respond(no_store_json({{"shapes", std::move(shapes)}, {"total", rows.size()}}));
    });
  };
}

}  // namespace shapeproxy::status

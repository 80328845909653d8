#include "logging/access_log.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <optional>

#include "http/request_kind.h"
#include "logging/log_format.h"

namespace shapeproxy::logging {

http::RequestObserver access_log_observer() {
  auto logger = spdlog::default_logger()->clone("access");
  return [logger](const http::RequestRecord& record) {
    auto verb = boost::beast::http::to_string(record.method);
    std::string_view method = record.method == http::Verb::unknown
                                  ? std::string_view("-")
                                  : std::string_view(verb.data(), verb.size());
    std::string path = record.target.empty() ? "-" : http::redact_target(record.target);
    std::string_view kind = http::request_kind(record.route, record.target);
    double ms = std::chrono::duration<double, std::milli>(record.duration).count();
    LogFields fields{{"method", method},
                     {"path", path},
                     {"status", record.status},
                     {"bytes", record.body_bytes},
                     {"duration_ms", std::round(ms * 1000) / 1000},
                     {"kind", kind}};
    std::optional<LogFields> handle;
    if (!record.handle.empty())
      handle.emplace(std::initializer_list<Field>{{"handle", record.handle}});
    logger->info("{} {} {} {} B {:.1f} ms {}{}{}", method, path, record.status, record.body_bytes,
                 ms, kind, record.handle.empty() ? "" : " handle=", record.handle);
  };
}

http::RequestObserver combine_observers(http::RequestObserver first, http::RequestObserver second) {
  if (!first) return second;
  if (!second) return first;
  return [first = std::move(first), second = std::move(second)](const http::RequestRecord& r) {
    first(r);
    second(r);
  };
}

}  // namespace shapeproxy::logging

#include "logging/log_format.h"

#include <spdlog/formatter.h>
#include <spdlog/spdlog.h>

#include <array>
#include <ctime>

namespace shapeproxy::logging {
namespace {

thread_local std::vector<Field> current_fields;

// Message prefixes that name the module ("http: listening on ...").
constexpr std::array<std::string_view, 11> kModules = {
    "http",     "shapes",  "replication", "status",  "shape api",           "fallback",
    "database", "storage", "api",         "metrics", "embedded PostgreSQL",
};

std::string rfc3339_utc_ms(spdlog::log_clock::time_point time) {
  using namespace std::chrono;
  auto since_epoch = time.time_since_epoch();
  auto secs = duration_cast<seconds>(since_epoch);
  auto ms = duration_cast<milliseconds>(since_epoch - secs).count();
  std::time_t t = static_cast<std::time_t>(secs.count());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buffer;
}

// Control characters escaped as in JSON (\n, \t, \r, \u00XX): one line.
std::string one_line(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u != 0x7f) {
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", u);
      out += escaped;
    }
  }
  return out;
}

// The names --log-level takes.
std::string_view level_name(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace:
      return "trace";
    case spdlog::level::debug:
      return "debug";
    case spdlog::level::info:
      return "info";
    case spdlog::level::warn:
      return "warn";
    case spdlog::level::err:
      return "error";
    case spdlog::level::critical:
      return "critical";
    default:
      return "off";
  }
}

class Formatter final : public spdlog::formatter {
 public:
  explicit Formatter(LogFormat format) : format_(format) {}
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    std::string line = format_entry(format_, msg);
    line += '\n';
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<Formatter>(format_);
  }

 private:
  LogFormat format_;
};

}  // namespace

void install_log_format(LogFormat format) {
  spdlog::set_formatter(std::make_unique<Formatter>(format));
}

std::string format_entry(LogFormat format, const spdlog::details::log_msg& msg) {
  std::string_view text(msg.payload.data(), msg.payload.size());
  std::string ts = rfc3339_utc_ms(msg.time);
  if (format == LogFormat::kText) {
    std::string out = "[" + ts + "] [";
    out += level_name(msg.level);
    out += "] ";
    if (msg.logger_name.size() > 0) {
      out.append(msg.logger_name.data(), msg.logger_name.size());
      out += ": ";
    }
    out += one_line(text);
    return out;
  }
  std::string module = "shapeproxy";
  if (msg.logger_name.size() > 0) {
    module.assign(msg.logger_name.data(), msg.logger_name.size());
  } else {
    for (std::string_view known : kModules) {
      if (text.size() > known.size() + 2 && text.substr(0, known.size()) == known &&
          text.substr(known.size(), 2) == ": ") {
        module = std::string(known);
        text.remove_prefix(known.size() + 2);
        break;
      }
    }
  }
  nlohmann::ordered_json entry;
  entry["ts"] = ts;
  entry["level"] = level_name(msg.level);
  entry["module"] = module;
  entry["msg"] = std::string(text);
  for (const auto& [key, value] : current_fields) {
    if (key != "ts" && key != "level" && key != "module" && key != "msg") entry[key] = value;
  }
  // Invalid UTF-8 (bytes from the database) becomes U+FFFD instead of throwing.
  return entry.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

LogFields::LogFields(std::initializer_list<Field> fields) : added_(fields.size()) {
  current_fields.insert(current_fields.end(), fields.begin(), fields.end());
}

LogFields::LogFields(std::vector<Field> fields) : added_(fields.size()) {
  for (auto& field : fields) current_fields.push_back(std::move(field));
}

LogFields::~LogFields() { current_fields.resize(current_fields.size() - added_); }

}  // namespace shapeproxy::logging

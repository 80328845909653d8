// What: how log entries are written. Two formats, both one line per entry:
//   text: "[2026-12-04T20:30:00.123Z] [warn] status: live -> fallback: ..."
//   json: {"ts":"2026-12-04T20:30:00.123Z","level":"warn","module":"status",
//          "msg":"live -> fallback: ...","from":"live","to":"fallback",...}
// ts is UTC (RFC 3339, milliseconds); module is the logger's name (the access
// log's "access") or the message's known "module: " prefix, else "shapeproxy".
// Control characters in a message (libpq's "\n\t") are escaped in both formats,
// so an entry never spans lines.
// Structured fields: a LogFields object adds key/value pairs to every entry made
// on its thread while it lives (JSON only; the text message already says it).
// Why: log shippers (Loki, ELK, Cloud Logging) take one JSON object per line.
// Invariant: spdlog's loggers here are synchronous, so an entry is formatted on
// the thread that made it, while that thread's LogFields are alive.
#pragma once

#include <spdlog/common.h>
#include <spdlog/details/log_msg.h>

#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace shapeproxy::logging {

enum class LogFormat { kText, kJson };

// Sets the format of every sink of the default logger (call once, at start-up,
// before other threads log).
void install_log_format(LogFormat format);

// One entry as `format` writes it, without the trailing newline.
std::string format_entry(LogFormat format, const spdlog::details::log_msg& msg);

using Field = std::pair<std::string, nlohmann::json>;

// Fields of the entries logged on this thread while the object lives; nests
// (inner fields come after outer ones). Not copyable; destroy in reverse order.
// In a coroutine, scope it to the log call ({ LogFields f{...}; spdlog::info(...); }):
// alive across a co_await, it would tag other code's entries and could be
// destroyed on another thread.
class LogFields {
 public:
  LogFields(std::initializer_list<Field> fields);
  explicit LogFields(std::vector<Field> fields);
  ~LogFields();
  LogFields(const LogFields&) = delete;
  LogFields& operator=(const LogFields&) = delete;

 private:
  std::size_t added_;
};

}  // namespace shapeproxy::logging

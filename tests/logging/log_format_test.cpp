// Log formats: one line per entry in both formats, JSON entries with ts (UTC,
// ms), level, module, msg and the thread's LogFields; how requests are
// classified and how secrets leave the access log's path.
#include "logging/log_format.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <regex>

#include "http/request_kind.h"

namespace shapeproxy::logging {
namespace {

spdlog::details::log_msg make_msg(std::string_view text,
                                  spdlog::level::level_enum level = spdlog::level::warn,
                                  std::string_view logger = "") {
  spdlog::details::log_msg msg(spdlog::source_loc{},
                               spdlog::string_view_t(logger.data(), logger.size()), level,
                               spdlog::string_view_t(text.data(), text.size()));
  // 2026-12-04T20:30:00.123Z
  msg.time = spdlog::log_clock::time_point(std::chrono::milliseconds(1'796'416'200'123LL));
  return msg;
}

TEST(LogFormatTest, JsonEntryHasTimestampLevelModuleMessage) {
  auto line = format_entry(LogFormat::kJson, make_msg("status: live -> fallback: slot gone"));
  auto entry = nlohmann::json::parse(line);
  EXPECT_EQ(entry["ts"], "2026-12-04T20:30:00.123Z");
  EXPECT_EQ(entry["level"], "warn");
  EXPECT_EQ(entry["module"], "status");
  EXPECT_EQ(entry["msg"], "live -> fallback: slot gone");
  EXPECT_EQ(line.find('\n'), std::string::npos);
  // The keys come in this order, for people reading the raw lines.
  EXPECT_EQ(line.rfind("{\"ts\":", 0), 0u) << line;
}

TEST(LogFormatTest, MessagesWithoutAKnownModuleKeepTheirText) {
  auto entry = nlohmann::json::parse(
      format_entry(LogFormat::kJson, make_msg("cannot start: no database", spdlog::level::err)));
  EXPECT_EQ(entry["module"], "shapeproxy");
  EXPECT_EQ(entry["msg"], "cannot start: no database");
  EXPECT_EQ(entry["level"], "error");
  auto access = nlohmann::json::parse(
      format_entry(LogFormat::kJson, make_msg("GET / 200", spdlog::level::info, "access")));
  EXPECT_EQ(access["module"], "access");
}

TEST(LogFormatTest, FieldsOfTheThreadAreAddedWhileAlive) {
  {
    LogFields outer{{"handle", "123-456"}, {"duration_ms", 12.5}};
    LogFields inner{{"lsn", "0/16B3748"}, {"level", "ignored: reserved key"}};
    auto entry = nlohmann::json::parse(format_entry(LogFormat::kJson, make_msg("shapes: x")));
    EXPECT_EQ(entry["handle"], "123-456");
    EXPECT_EQ(entry["duration_ms"], 12.5);
    EXPECT_EQ(entry["lsn"], "0/16B3748");
    EXPECT_EQ(entry["level"], "warn");
    // Text carries the message only.
    auto text = format_entry(LogFormat::kText, make_msg("shapes: x"));
    EXPECT_EQ(text, "[2026-12-04T20:30:00.123Z] [warn] shapes: x");
  }
  auto entry = nlohmann::json::parse(format_entry(LogFormat::kJson, make_msg("shapes: x")));
  EXPECT_FALSE(entry.contains("handle"));
  EXPECT_FALSE(entry.contains("lsn"));
}

TEST(LogFormatTest, NoEntrySpansLinesAndBadUtf8DoesNotThrow) {
  std::string libpq =
      "database: connection failed: FATAL:  role \"x\" does not exist\n\tDETAIL: y\r\x01";
  auto text = format_entry(LogFormat::kText, make_msg(libpq));
  EXPECT_EQ(text.find('\n'), std::string::npos);
  EXPECT_EQ(text.find('\t'), std::string::npos);
  EXPECT_NE(text.find("exist\\n\\tDETAIL: y\\r\\u0001"), std::string::npos) << text;
  auto json = format_entry(LogFormat::kJson, make_msg(libpq));
  EXPECT_EQ(json.find('\n'), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(json)["msg"], libpq.substr(10));
  std::string bad = "shapes: row \xff\xfe";
  auto replaced = format_entry(LogFormat::kJson, make_msg(bad));
  EXPECT_TRUE(nlohmann::json::parse(replaced).is_object());
}

TEST(RequestKindTest, ShapeRequestsByParameters) {
  using http::request_kind;
  EXPECT_EQ(request_kind("/v1/shape", "/v1/shape?table=items&offset=-1"), "snapshot");
  EXPECT_EQ(request_kind("/v1/shape", "/v1/shape?table=items"), "snapshot");
  EXPECT_EQ(request_kind("/v1/shape", "/v1/shape?table=items&offset=0_0&handle=h"), "catch-up");
  EXPECT_EQ(request_kind("/v1/shape", "/v1/shape?table=t&offset=0_0&handle=h&live=true"), "live");
  EXPECT_EQ(request_kind("/v1/shape", "/v1/shape?table=t&offset=0_0&live=true&live_sse=true"),
            "sse");
  EXPECT_EQ(request_kind("/v1/shape",
                         "/v1/shape?table=t&offset=0_0&live=true&experimental_live_sse=true"),
            "sse");
  EXPECT_EQ(request_kind("/v1/status", "/v1/status"), "status");
  EXPECT_EQ(request_kind("/v1/health", "/v1/health"), "status");
  EXPECT_EQ(request_kind("/metrics", "/metrics"), "status");
  EXPECT_EQ(request_kind("", "/nope"), "other");
}

TEST(RequestKindTest, RedactRemovesSecretParameters) {
  using http::redact_target;
  EXPECT_EQ(redact_target("/v1/shape?table=items&secret=s3cret&offset=-1"),
            "/v1/shape?table=items&offset=-1");
  EXPECT_EQ(redact_target("/v1/shape?api_secret=x&table=items"), "/v1/shape?table=items");
  EXPECT_EQ(redact_target("/v1/shape?secret=x"), "/v1/shape");
  EXPECT_EQ(redact_target("/v1/status"), "/v1/status");
  EXPECT_EQ(redact_target("/v1/shape?secretive=1"), "/v1/shape?secretive=1");
}

}  // namespace
}  // namespace shapeproxy::logging

// Flags, environment variables and their validation.
#include "config/config.h"

#include <gtest/gtest.h>

#include <map>

namespace shapeproxy::config {
namespace {

Environment fake_environment(std::map<std::string, std::string> values) {
  return [values](const std::string& name) -> std::optional<std::string> {
    auto it = values.find(name);
    if (it == values.end()) return std::nullopt;
    return it->second;
  };
}

Result<Invocation> parse(std::vector<std::string> args,
                         std::map<std::string, std::string> env = {}) {
  return parse_invocation(args, fake_environment(std::move(env)));
}

TEST(ConfigTest, DefaultsWithoutFlagsOrEnvironment) {
  auto parsed = parse({});
  ASSERT_TRUE(parsed) << parsed.error().to_string();
  const Config& config = parsed->config;
  EXPECT_EQ(parsed->action, Invocation::Action::kRun);
  EXPECT_FALSE(config.database_url.has_value());
  EXPECT_EQ(config.port, 3000);
  EXPECT_EQ(config.data_dir, "./shapeproxy-data");
  EXPECT_EQ(config.slot_name, "shapeproxy");
  EXPECT_EQ(config.publication_name, "shapeproxy");
  EXPECT_EQ(config.log_level, "info");
  EXPECT_EQ(config.log_format, "text");
  EXPECT_FALSE(config.access_log);
  EXPECT_EQ(config.listen_address, "::");
}

TEST(ConfigTest, LogFormatAndAccessLogFromFlagsOrEnvironment) {
  auto flags = parse({"--log-format", "json", "--access-log"});
  ASSERT_TRUE(flags) << flags.error().to_string();
  EXPECT_EQ(flags->config.log_format, "json");
  EXPECT_TRUE(flags->config.access_log);
  auto env = parse({}, {{"SHAPEPROXY_LOG_FORMAT", "json"}, {"SHAPEPROXY_ACCESS_LOG", "true"}});
  ASSERT_TRUE(env) << env.error().to_string();
  EXPECT_EQ(env->config.log_format, "json");
  EXPECT_TRUE(env->config.access_log);
  auto bad = parse({"--log-format", "xml"});
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("--log-format"), std::string::npos);
}

TEST(ConfigTest, EnvironmentSetsValuesAndFlagsWin) {
  auto parsed = parse({"--port", "4100", "--slot=flag_slot"},
                      {{"SHAPEPROXY_PORT", "4000"},
                       {"SHAPEPROXY_SLOT", "env_slot"},
                       {"DATABASE_URL", "postgresql://u@localhost:5432/app"},
                       {"SHAPEPROXY_DATA_DIR", "/var/lib/shapeproxy"}});
  ASSERT_TRUE(parsed) << parsed.error().to_string();
  EXPECT_EQ(parsed->config.port, 4100);
  EXPECT_EQ(parsed->config.slot_name, "flag_slot");
  EXPECT_EQ(parsed->config.database_url, "postgresql://u@localhost:5432/app");
  EXPECT_EQ(parsed->config.data_dir, "/var/lib/shapeproxy");
}

// A compose file written for Electric: its variables set the settings that
// map; shapeproxy's own names (and flags) win over them.
TEST(ConfigTest, ElectricVariablesAreAliases) {
  auto parsed = parse({}, {{"ELECTRIC_PORT", "4200"},
                           {"ELECTRIC_SECRET", "s3cret"},
                           {"ELECTRIC_LOG_LEVEL", "warning"},
                           {"ELECTRIC_SHAPE_CHUNK_BYTES_THRESHOLD", "2048"},
                           {"ELECTRIC_CACHE_MAX_AGE", "7"},
                           {"ELECTRIC_CACHE_STALE_AGE", "70"},
                           {"ELECTRIC_LONG_POLL_TIMEOUT", "15000"},
                           {"ELECTRIC_STORAGE_DIR", "/data/electric"},
                           {"ELECTRIC_ENABLE_INTEGRATION_TESTING", "true"}});
  ASSERT_TRUE(parsed) << parsed.error().to_string();
  const Config& c = parsed->config;
  EXPECT_EQ(c.port, 4200);
  EXPECT_EQ(c.secret, "s3cret");
  EXPECT_EQ(c.log_level, "warn");
  EXPECT_EQ(c.chunk_bytes, 2048u);
  EXPECT_EQ(c.cache_max_age_seconds, 7);
  EXPECT_EQ(c.cache_stale_age_seconds, 70);
  EXPECT_EQ(c.long_poll_timeout, std::chrono::milliseconds(15000));
  EXPECT_EQ(c.data_dir, "/data/electric");
  EXPECT_TRUE(c.allow_delete);

  parsed = parse({"--cache-max-age-s", "9"}, {{"ELECTRIC_PORT", "4200"},
                                              {"SHAPEPROXY_PORT", "4300"},
                                              {"ELECTRIC_CACHE_MAX_AGE", "7"},
                                              {"SHAPEPROXY_CACHE_STALE_AGE_S", "30"},
                                              {"ELECTRIC_CACHE_STALE_AGE", "70"}});
  ASSERT_TRUE(parsed) << parsed.error().to_string();
  EXPECT_EQ(parsed->config.port, 4300);
  EXPECT_EQ(parsed->config.cache_max_age_seconds, 9);
  EXPECT_EQ(parsed->config.cache_stale_age_seconds, 30);

  parsed = parse({}, {{"ELECTRIC_PORT", "nope"}});
  ASSERT_FALSE(parsed);
  EXPECT_NE(parsed.error().message.find("ELECTRIC_PORT"), std::string::npos)
      << parsed.error().message;
  EXPECT_NE(usage().find("[SHAPEPROXY_CACHE_MAX_AGE_S, ELECTRIC_CACHE_MAX_AGE]"),
            std::string::npos);
}

TEST(ConfigTest, MaxShapes) {
  auto defaults = parse({});
  ASSERT_TRUE(defaults) << defaults.error().to_string();
  EXPECT_EQ(defaults->config.max_shapes, 10'000u);
  auto from_env = parse({}, {{"SHAPEPROXY_MAX_SHAPES", "250"}});
  ASSERT_TRUE(from_env) << from_env.error().to_string();
  EXPECT_EQ(from_env->config.max_shapes, 250u);
  auto flag = parse({"--max-shapes=3"}, {{"SHAPEPROXY_MAX_SHAPES", "250"}});
  ASSERT_TRUE(flag) << flag.error().to_string();
  EXPECT_EQ(flag->config.max_shapes, 3u);
  EXPECT_FALSE(parse({"--max-shapes=0"}));
}

TEST(ConfigTest, DegradedModeSettings) {
  auto defaults = parse({});
  ASSERT_TRUE(defaults) << defaults.error().to_string();
  EXPECT_EQ(defaults->config.fallback_grace, std::chrono::milliseconds(2'000));
  EXPECT_EQ(defaults->config.fallback_poll_interval, std::chrono::milliseconds(1'000));
  EXPECT_EQ(defaults->config.fallback_max_queries, 4u);
  EXPECT_EQ(defaults->config.status_max_age_seconds, 5);
  EXPECT_EQ(defaults->config.fallback_statement_timeout, std::chrono::milliseconds(30'000));

  auto set = parse(
      {"--fallback-grace-ms", "500", "--status-max-age-s=1"},
      {{"SHAPEPROXY_FALLBACK_POLL_INTERVAL_MS", "250"}, {"SHAPEPROXY_FALLBACK_MAX_QUERIES", "2"}});
  ASSERT_TRUE(set) << set.error().to_string();
  EXPECT_EQ(set->config.fallback_grace, std::chrono::milliseconds(500));
  EXPECT_EQ(set->config.fallback_poll_interval, std::chrono::milliseconds(250));
  EXPECT_EQ(set->config.fallback_max_queries, 2u);
  EXPECT_EQ(set->config.status_max_age_seconds, 1);
  auto timeout = parse({"--fallback-statement-timeout-ms=250"});
  ASSERT_TRUE(timeout) << timeout.error().to_string();
  EXPECT_EQ(timeout->config.fallback_statement_timeout, std::chrono::milliseconds(250));
  auto no_timeout = parse({}, {{"SHAPEPROXY_FALLBACK_STATEMENT_TIMEOUT_MS", "0"}});
  ASSERT_TRUE(no_timeout) << no_timeout.error().to_string();
  EXPECT_EQ(no_timeout->config.fallback_statement_timeout, std::chrono::milliseconds(0));
  EXPECT_FALSE(parse({"--fallback-statement-timeout-ms", "-5"}));

  EXPECT_FALSE(parse({"--fallback-poll-interval-ms", "0"}));
  EXPECT_FALSE(parse({"--fallback-max-queries", "0"}));
}

TEST(ConfigTest, MaxConnections) {
  auto defaults = parse({});
  ASSERT_TRUE(defaults) << defaults.error().to_string();
  EXPECT_EQ(defaults->config.max_connections, 10'000u);
  auto flag = parse({"--max-connections", "20000"});
  ASSERT_TRUE(flag) << flag.error().to_string();
  EXPECT_EQ(flag->config.max_connections, 20'000u);
  auto env = parse({}, {{"SHAPEPROXY_MAX_CONNECTIONS", "64"}});
  ASSERT_TRUE(env) << env.error().to_string();
  EXPECT_EQ(env->config.max_connections, 64u);
  auto zero = parse({"--max-connections", "0"});
  ASSERT_FALSE(zero);
  EXPECT_NE(zero.error().message.find("--max-connections"), std::string::npos)
      << zero.error().message;
  EXPECT_FALSE(parse({"--status-max-age-s", "-1"}));
}

TEST(ConfigTest, KeyValueConninfoIsAccepted) {
  auto parsed = parse({"--database-url", "host=/tmp port=5432 dbname=app user=u"});
  ASSERT_TRUE(parsed) << parsed.error().to_string();
  EXPECT_EQ(parsed->config.database_url, "host=/tmp port=5432 dbname=app user=u");
}

TEST(ConfigTest, InvalidValuesNameTheSetting) {
  struct Case {
    std::vector<std::string> args;
    std::map<std::string, std::string> env;
    std::string must_mention;
  };
  std::vector<Case> cases = {
      {{"--port", "0"}, {}, "--port"},
      {{"--port", "70000"}, {}, "SHAPEPROXY_PORT"},
      {{}, {{"SHAPEPROXY_PORT", "abc"}}, "SHAPEPROXY_PORT"},
      {{"--slot", "Bad-Name"}, {}, "--slot"},
      {{"--log-level", "loud"}, {}, "--log-level"},
      {{"--database-url", "postgresql://host:notaport/db"}, {}, "DATABASE_URL"},
      {{"--database-url", "host=a bogus_key=1"}, {}, "--database-url"},
      {{"--data-dir="}, {}, "--data-dir"},
  };
  for (const auto& c : cases) {
    auto parsed = parse(c.args, c.env);
    ASSERT_FALSE(parsed) << "accepted: " << (c.args.empty() ? "" : c.args[0]);
    EXPECT_NE(parsed.error().message.find(c.must_mention), std::string::npos)
        << parsed.error().message;
  }
}

TEST(ConfigTest, UnknownOptionAndMissingValueAreRefused) {
  auto unknown = parse({"--prot", "3000"});
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().message.find("--prot"), std::string::npos);
  auto missing = parse({"--port"});
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("needs a value"), std::string::npos);
}

TEST(ConfigTest, SwitchesTakeNoValueButAcceptOne) {
  auto on = parse({"--allow-delete", "--port", "4000"});
  ASSERT_TRUE(on) << on.error().to_string();
  EXPECT_TRUE(on->config.allow_delete);
  EXPECT_EQ(on->config.port, 4000);
  auto off = parse({"--allow-delete=false"}, {{"SHAPEPROXY_ALLOW_DELETE", "true"}});
  ASSERT_TRUE(off);
  EXPECT_FALSE(off->config.allow_delete);
  auto from_env = parse({}, {{"SHAPEPROXY_ALLOW_DELETE", "1"}});
  ASSERT_TRUE(from_env);
  EXPECT_TRUE(from_env->config.allow_delete);
  auto bad = parse({}, {{"SHAPEPROXY_ALLOW_DELETE", "maybe"}});
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("SHAPEPROXY_ALLOW_DELETE"), std::string::npos);
}

TEST(ConfigTest, HelpListsEveryFlagWithItsVariable) {
  auto parsed = parse({"--help"});
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->action, Invocation::Action::kHelp);
  std::string text = usage();
  for (const char* expected :
       {"--database-url", "DATABASE_URL", "--port", "SHAPEPROXY_PORT", "--data-dir",
        "SHAPEPROXY_DATA_DIR", "--slot", "--publication", "--log-level"}) {
    EXPECT_NE(text.find(expected), std::string::npos) << expected;
  }
}

}  // namespace
}  // namespace shapeproxy::config

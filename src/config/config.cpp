#include "config/config.h"

#include <cctype>
#include <charconv>
#include <cstdlib>
#include <map>

#include "pg/conninfo.h"

namespace shapeproxy::config {
namespace {

// One setting: its flag, its environment variable, and how to apply a value.
struct Setting {
  const char* flag;
  const char* env;
  const char* value_name;  // empty: a switch, `--flag` alone means true
  const char* help;
  std::function<Result<void>(Config&, const std::string&)> apply;
  // Electric's variable for the same setting, read when `env` is unset (so
  // a compose file written for Electric works; shapeproxy's own name wins).
  const char* electric_alias = nullptr;
};

Result<bool> parse_bool(const std::string& text) {
  if (text == "true" || text == "1" || text == "yes" || text == "on") return true;
  if (text == "false" || text == "0" || text == "no" || text == "off") return false;
  return Error{"", "expected true or false, got '" + text + "'", ""};
}

Error invalid(const Setting& setting, const std::string& why) {
  std::string names = setting.env;
  if (setting.electric_alias) names += std::string(" or ") + setting.electric_alias;
  return Error{"invalid_config",
               std::string("invalid value for ") + setting.flag + " (" + names + "): " + why,
               std::string("see shapeproxy --help")};
}

Result<std::int64_t> parse_integer(const std::string& text, std::int64_t min, std::int64_t max) {
  std::int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < min || value > max) {
    return Error{"",
                 "expected a whole number from " + std::to_string(min) + " to " +
                     std::to_string(max) + ", got '" + text + "'",
                 ""};
  }
  return value;
}

bool is_slot_name(const std::string& name) {
  if (name.empty() || name.size() > 63) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
  }
  return true;
}

const std::vector<Setting>& settings() {
  static const std::vector<Setting> all = {
      {"--database-url", "DATABASE_URL", "URL",
       "PostgreSQL to serve (libpq URI or key=value). Unset: start an embedded cluster with demo "
       "data under the data directory.",
       [](Config& c, const std::string& v) -> Result<void> {
         if (auto ok = pg::validate_conninfo(v); !ok) return Error{"", ok.error().message, ""};
         c.database_url = v;
         return {};
       }},
      {"--fallback-database-url", "SHAPEPROXY_FALLBACK_DATABASE_URL", "URL",
       "Where fallback queries go while replication is down, e.g. a hot standby (default: "
       "DATABASE_URL).",
       [](Config& c, const std::string& v) -> Result<void> {
         if (auto ok = pg::validate_conninfo(v); !ok) return Error{"", ok.error().message, ""};
         c.fallback_database_url = v;
         return {};
       }},
      {"--listen", "SHAPEPROXY_LISTEN", "ADDRESS",
       "Address to listen on (default ::, every IPv6 and IPv4 address; 0.0.0.0: IPv4 only).",
       [](Config& c, const std::string& v) -> Result<void> {
         if (v.empty()) return Error{"", "must not be empty", ""};
         c.listen_address = v;
         return {};
       }},
      {"--port", "SHAPEPROXY_PORT", "PORT", "HTTP port (default 3000).",
       [](Config& c, const std::string& v) -> Result<void> {
         auto port = parse_integer(v, 1, 65535);
         if (!port) return port.error();
         c.port = static_cast<std::uint16_t>(port.value());
         return {};
       },
       "ELECTRIC_PORT"},
      {"--data-dir", "SHAPEPROXY_DATA_DIR", "DIR",
       "Where shape logs and the embedded cluster live (default ./shapeproxy-data).",
       [](Config& c, const std::string& v) -> Result<void> {
         if (v.empty()) return Error{"", "must not be empty", ""};
         c.data_dir = v;
         return {};
       },
       "ELECTRIC_STORAGE_DIR"},
      {"--slot", "SHAPEPROXY_SLOT", "NAME", "Logical replication slot name (default shapeproxy).",
       [](Config& c, const std::string& v) -> Result<void> {
         if (!is_slot_name(v)) {
           return Error{"", "a slot name is 1-63 characters of a-z, 0-9 and _, got '" + v + "'",
                        ""};
         }
         c.slot_name = v;
         return {};
       }},
      {"--publication", "SHAPEPROXY_PUBLICATION", "NAME", "Publication name (default shapeproxy).",
       [](Config& c, const std::string& v) -> Result<void> {
         if (v.empty() || v.size() > 63) return Error{"", "must be 1-63 characters", ""};
         c.publication_name = v;
         return {};
       }},
      {"--instance-id", "SHAPEPROXY_INSTANCE_ID", "NAME",
       "This instance's name when several share a data directory (default: random).",
       [](Config& c, const std::string& v) -> Result<void> {
         if (v.empty() || v.size() > 63) return Error{"", "must be 1-63 characters", ""};
         for (char ch : v) {
           if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_' &&
               ch != '.' && ch != ':') {
             return Error{"", "letters, digits, '-', '_', '.' and ':' only, got '" + v + "'", ""};
           }
         }
         c.instance_id = v;
         return {};
       }},
      {"--advertise-url", "SHAPEPROXY_ADVERTISE_URL", "URL",
       "Where the other instances reach this one while it leads, http://HOST:PORT (default: "
       "the address this host reaches PostgreSQL from, and --port).",
       [](Config& c, const std::string& v) -> Result<void> {
         if (v.rfind("http://", 0) != 0 || v.size() <= 7) {
           return Error{"", "must be http://HOST:PORT, got '" + v + "'", ""};
         }
         c.advertise_url = v;
         return {};
       }},
      {"--log-level", "SHAPEPROXY_LOG_LEVEL", "LEVEL",
       "trace, debug, info, warn, error or off (default info).",
       [](Config& c, const std::string& v) -> Result<void> {
         static const char* levels[] = {"trace", "debug", "info", "warn", "error", "off"};
         for (const char* level : levels) {
           if (v == level) {
             c.log_level = v;
             return {};
           }
         }
         // Electric's (Elixir Logger) level names, for ELECTRIC_LOG_LEVEL.
         static const std::map<std::string, std::string> elixir = {
             {"warning", "warn"}, {"notice", "info"},     {"critical", "error"},
             {"alert", "error"},  {"emergency", "error"}, {"none", "off"}};
         if (auto it = elixir.find(v); it != elixir.end()) {
           c.log_level = it->second;
           return {};
         }
         return Error{"", "expected trace, debug, info, warn, error or off, got '" + v + "'", ""};
       },
       "ELECTRIC_LOG_LEVEL"},
      {"--log-format", "SHAPEPROXY_LOG_FORMAT", "FORMAT",
       "text, or json: one JSON object per line with ts, level, module, msg and fields "
       "(default text).",
       [](Config& c, const std::string& v) -> Result<void> {
         if (v != "text" && v != "json")
           return Error{"", "expected text or json, got '" + v + "'", ""};
         c.log_format = v;
         return {};
       }},
      {"--access-log", "SHAPEPROXY_ACCESS_LOG", "",
       "Log every answered request: method, path (secrets removed), status, bytes, duration, "
       "kind, handle (default off).",
       [](Config& c, const std::string& v) -> Result<void> {
         auto on = parse_bool(v);
         if (!on) return on.error();
         c.access_log = on.value();
         return {};
       }},
      {"--secret", "SHAPEPROXY_SECRET", "SECRET", "When set, /v1/shape requires ?secret=SECRET.",
       [](Config& c, const std::string& v) -> Result<void> {
         if (v.empty()) return Error{"", "must not be empty", ""};
         c.secret = v;
         return {};
       },
       "ELECTRIC_SECRET"},
      {"--metrics-token", "SHAPEPROXY_METRICS_TOKEN", "TOKEN",
       "When set, /metrics requires Authorization: Bearer TOKEN (or ?secret=TOKEN).",
       [](Config& c, const std::string& v) -> Result<void> {
         if (v.empty()) return Error{"", "must not be empty", ""};
         c.metrics_token = v;
         return {};
       }},
      {"--replication-status-interval-ms", "SHAPEPROXY_REPLICATION_STATUS_INTERVAL_MS", "MS",
       "How often to report the confirmed position to PostgreSQL (default 10000).",
       [](Config& c, const std::string& v) -> Result<void> {
         auto ms = parse_integer(v, 100, 3'600'000);
         if (!ms) return ms.error();
         c.replication_status_interval = std::chrono::milliseconds(ms.value());
         return {};
       }},
      {"--allow-delete", "SHAPEPROXY_ALLOW_DELETE", "",
       "Allow DELETE /v1/shape to drop a shape (default off: 405).",
       [](Config& c, const std::string& v) -> Result<void> {
         auto on = parse_bool(v);
         if (!on) return on.error();
         c.allow_delete = on.value();
         return {};
       },
       "ELECTRIC_ENABLE_INTEGRATION_TESTING"},
      {"--max-connections", "SHAPEPROXY_MAX_CONNECTIONS", "N",
       "Open client connections at once, parked long-polls and SSE streams included; beyond: "
       "503 + retry-after (default 10000; each needs a file descriptor).",
       [](Config& c, const std::string& v) -> Result<void> {
         auto n = parse_integer(v, 1, 1'000'000);
         if (!n) return n.error();
         c.max_connections = static_cast<std::size_t>(n.value());
         return {};
       }},
      {"--long-poll-timeout-ms", "SHAPEPROXY_LONG_POLL_TIMEOUT_MS", "MS",
       "How long a live request waits for new data (default 20000).",
       [](Config& c, const std::string& v) -> Result<void> {
         auto ms = parse_integer(v, 100, 40'000);
         if (!ms) return ms.error();
         c.long_poll_timeout = std::chrono::milliseconds(ms.value());
         return {};
       },
       "ELECTRIC_LONG_POLL_TIMEOUT"},
      {"--chunk-bytes", "SHAPEPROXY_CHUNK_BYTES", "BYTES",
       "Largest response body of a shape log (default 10485760).",
       [](Config& c, const std::string& v) -> Result<void> {
         auto bytes = parse_integer(v, 1024, 1LL << 30);
         if (!bytes) return bytes.error();
         c.chunk_bytes = static_cast<std::size_t>(bytes.value());
         return {};
       },
       "ELECTRIC_SHAPE_CHUNK_BYTES_THRESHOLD"},
      {"--compact-bytes", "SHAPEPROXY_COMPACT_BYTES", "BYTES",
       "Compact a shape's log once its operations on disk pass this (default 67108864).",
       [](Config& c, const std::string& v) -> Result<void> {
         auto bytes = parse_integer(v, 4096, 1LL << 40);
         if (!bytes) return bytes.error();
         c.compact_bytes = static_cast<std::uint64_t>(bytes.value());
         return {};
       }},
      {"--state-cache-mb", "SHAPEPROXY_STATE_CACHE_MB", "MB",
       "Block cache of the store of the shapes' rows, in MB (default 32).",
       [](Config& c, const std::string& v) -> Result<void> {
         auto mb = parse_integer(v, 1, 1LL << 20);
         if (!mb) return mb.error();
         c.state_cache_bytes = static_cast<std::size_t>(mb.value()) * 1024 * 1024;
         return {};
       }},
      {"--shape-idle-timeout-s", "SHAPEPROXY_SHAPE_IDLE_TIMEOUT_S", "SECONDS",
       "Remove shapes nobody read for this long; 0 keeps them (default 604800, a week).",
       [](Config& c, const std::string& v) -> Result<void> {
         auto seconds = parse_integer(v, 0, 10LL * 365 * 24 * 3600);
         if (!seconds) return seconds.error();
         c.shape_idle_timeout = std::chrono::seconds(seconds.value());
         return {};
       }},
      {"--max-shapes", "SHAPEPROXY_MAX_SHAPES", "COUNT",
       "Most shapes held at once; past it the least recently read idle shape is evicted "
       "(default 10000).",
       [](Config& c, const std::string& v) -> Result<void> {
         auto count = parse_integer(v, 1, 10'000'000);
         if (!count) return count.error();
         c.max_shapes = static_cast<std::size_t>(count.value());
         return {};
       }},
      {"--fallback-grace-ms", "SHAPEPROXY_FALLBACK_GRACE_MS", "MS",
       "How long replication must be unavailable before serving in fallback mode (default 2000).",
       [](Config& c, const std::string& v) -> Result<void> {
         auto ms = parse_integer(v, 0, 3'600'000);
         if (!ms) return ms.error();
         c.fallback_grace = std::chrono::milliseconds(ms.value());
         return {};
       }},
      {"--fallback-poll-interval-ms", "SHAPEPROXY_FALLBACK_POLL_INTERVAL_MS", "MS",
       "In fallback mode, re-query a shape being read at most this often (default 1000).",
       [](Config& c, const std::string& v) -> Result<void> {
         auto ms = parse_integer(v, 50, 600'000);
         if (!ms) return ms.error();
         c.fallback_poll_interval = std::chrono::milliseconds(ms.value());
         return {};
       }},
      {"--fallback-max-queries", "SHAPEPROXY_FALLBACK_MAX_QUERIES", "N",
       "Fallback queries running at once (the fallback pool size); 64 more may wait, beyond "
       "that requests get 503 + retry-after (default 4).",
       [](Config& c, const std::string& v) -> Result<void> {
         auto n = parse_integer(v, 1, 1'000);
         if (!n) return n.error();
         c.fallback_max_queries = static_cast<std::size_t>(n.value());
         return {};
       }},
      {"--fallback-statement-timeout-ms", "SHAPEPROXY_FALLBACK_STATEMENT_TIMEOUT_MS", "MS",
       "A fallback query running longer is cancelled (statement_timeout); 0: no limit (default "
       "30000).",
       [](Config& c, const std::string& v) -> Result<void> {
         auto ms = parse_integer(v, 0, 3'600'000);
         if (!ms) return ms.error();
         c.fallback_statement_timeout = std::chrono::milliseconds(ms.value());
         return {};
       }},
      {"--cache-max-age-s", "SHAPEPROXY_CACHE_MAX_AGE_S", "SECONDS",
       "Cache-Control max-age of shape responses at offsets other than -1, not live (default "
       "60).",
       [](Config& c, const std::string& v) -> Result<void> {
         auto seconds = parse_integer(v, 0, 365LL * 24 * 3600);
         if (!seconds) return seconds.error();
         c.cache_max_age_seconds = static_cast<int>(seconds.value());
         return {};
       },
       "ELECTRIC_CACHE_MAX_AGE"},
      {"--cache-stale-age-s", "SHAPEPROXY_CACHE_STALE_AGE_S", "SECONDS",
       "Their stale-while-revalidate (default 300).",
       [](Config& c, const std::string& v) -> Result<void> {
         auto seconds = parse_integer(v, 0, 365LL * 24 * 3600);
         if (!seconds) return seconds.error();
         c.cache_stale_age_seconds = static_cast<int>(seconds.value());
         return {};
       },
       "ELECTRIC_CACHE_STALE_AGE"},
      {"--snapshot-timeout-ms", "SHAPEPROXY_SNAPSHOT_TIMEOUT_MS", "MS",
       "A shape's initial query running longer is cancelled and its client answered 400 "
       "(statement_timeout); 0: no limit (default 120000).",
       [](Config& c, const std::string& v) -> Result<void> {
         auto ms = parse_integer(v, 0, 3'600'000);
         if (!ms) return ms.error();
         c.snapshot_timeout = std::chrono::milliseconds(ms.value());
         return {};
       }},
      {"--status-max-age-s", "SHAPEPROXY_STATUS_MAX_AGE_S", "SECONDS",
       "Cache-Control max-age of GET /v1/status (default 5).",
       [](Config& c, const std::string& v) -> Result<void> {
         auto seconds = parse_integer(v, 0, 3'600);
         if (!seconds) return seconds.error();
         c.status_max_age_seconds = static_cast<int>(seconds.value());
         return {};
       }},
  };
  return all;
}

const Setting* find_flag(const std::string& flag) {
  for (const auto& setting : settings()) {
    if (flag == setting.flag) return &setting;
  }
  return nullptr;
}

}  // namespace

Environment process_environment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

Result<Invocation> parse_invocation(const std::vector<std::string>& args,
                                    const Environment& environment) {
  Invocation invocation;
  std::map<const Setting*, std::string> from_flags;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") {
      invocation.action = Invocation::Action::kHelp;
      return invocation;
    }
    if (arg == "--version") {
      invocation.action = Invocation::Action::kVersion;
      return invocation;
    }
    auto equals = arg.find('=');
    std::string flag = arg.substr(0, equals);
    const Setting* setting = find_flag(flag);
    if (setting == nullptr) {
      return Error{"invalid_config", "unknown option '" + flag + "'", "see shapeproxy --help"};
    }
    bool is_switch = setting->value_name[0] == '\0';
    if (equals != std::string::npos) {
      from_flags[setting] = arg.substr(equals + 1);
    } else if (is_switch) {
      from_flags[setting] = "true";
    } else if (i + 1 < args.size()) {
      from_flags[setting] = args[++i];
    } else {
      return Error{"invalid_config", std::string("option ") + flag + " needs a value",
                   "see shapeproxy --help"};
    }
  }
  for (const auto& setting : settings()) {
    std::optional<std::string> value;
    if (auto it = from_flags.find(&setting); it != from_flags.end()) {
      value = it->second;
    } else {
      value = environment(setting.env);
      if (!value && setting.electric_alias) value = environment(setting.electric_alias);
    }
    if (!value) continue;
    if (auto applied = setting.apply(invocation.config, *value); !applied) {
      return invalid(setting, applied.error().message);
    }
  }
  return invocation;
}

std::string usage() {
  std::string text =
      "Usage: shapeproxy [options]\n\n"
      "Serves live shapes of a PostgreSQL database over the Electric HTTP shape protocol,\n"
      "and keeps serving when logical replication is down.\n\nOptions (environment variable in "
      "brackets; the flag wins):\n";
  for (const auto& setting : settings()) {
    std::string left = std::string("  ") + setting.flag;
    if (setting.value_name[0] != '\0') left += std::string(" ") + setting.value_name;
    std::string env = setting.env;
    if (setting.electric_alias) env += std::string(", ") + setting.electric_alias;
    text += left + "  [" + env + "]\n      " + setting.help + "\n";
  }
  text += "  --help, --version\n";
  return text;
}

}  // namespace shapeproxy::config

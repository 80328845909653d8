// Demo data for the embedded default: a `demo` database with an `items` table
// and a few rows, so a newcomer has something to curl at once; and the role
// the proxy connects as, `shapeproxy`, set up the way the README asks of a
// production database: LOGIN REPLICATION, not superuser. So a newcomer can
// watch fallback mode by taking its replication privilege away
// (ALTER ROLE shapeproxy NOREPLICATION), which a superuser would ignore.
#pragma once

#include <string>

#include "common/result.h"
#include "embedded/embedded_postgres.h"

namespace shapeproxy::app {

inline constexpr const char* kDemoDatabase = "demo";
inline constexpr const char* kDemoTable = "items";
inline constexpr const char* kProxyRole = "shapeproxy";

// Creates the demo database and table when missing (keeps existing rows),
// and the proxy's role: LOGIN REPLICATION, member of pg_read_all_data (so it
// can read tables created later by the superuser), with `publication` created
// FOR ALL TABLES by the superuser when it does not exist yet (so such tables
// need no ALTER PUBLICATION by their owner).
Result<void> ensure_demo_data(const embedded::EmbeddedPostgres& cluster,
                              const std::string& publication);

}  // namespace shapeproxy::app

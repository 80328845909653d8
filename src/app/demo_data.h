// Demo data for the embedded default: a `demo` database with an `items` table
// and a few rows, so a newcomer has something to curl at once.
#pragma once

#include <string>

#include "common/result.h"
#include "embedded/embedded_postgres.h"

namespace shapeproxy::app {

inline constexpr const char* kDemoDatabase = "demo";
inline constexpr const char* kDemoTable = "items";

// Creates the demo database and table when missing (keeps existing rows).
Result<void> ensure_demo_data(const embedded::EmbeddedPostgres& cluster);

}  // namespace shapeproxy::app

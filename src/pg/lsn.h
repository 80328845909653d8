// Log sequence numbers: PostgreSQL's 64-bit WAL positions, and their
// "XXXXXXXX/XXXXXXXX" text form used by replication commands and catalogs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace shapeproxy::pg {

using Lsn = std::uint64_t;

std::string format_lsn(Lsn lsn);
std::optional<Lsn> parse_lsn(std::string_view text);

}  // namespace shapeproxy::pg

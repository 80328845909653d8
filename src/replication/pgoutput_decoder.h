// Decodes the bytes of one CopyData message (envelope) and of one pgoutput
// message (payload) into typed values. Pure functions over bytes: no I/O, no
// state, safe on any input (malformed bytes give an Error, never UB), which
// makes them easy to fuzz and to test on bytes recorded from a real server.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"
#include "replication/pgoutput_messages.h"

namespace shapeproxy::replication {

// 'w' XLogData or 'k' primary keepalive. The XLogData payload views `bytes`.
Result<CopyDataMessage> decode_copy_data(std::string_view bytes);

// One pgoutput protocol-version-1 message (the payload of an XLogData).
Result<PgOutputMessage> decode_pgoutput(std::string_view bytes);

// 'r' standby status update, client to server (34 bytes).
std::string encode_standby_status_update(Lsn written, Lsn flushed, Lsn applied,
                                         PgTimestamp client_time, bool reply_requested);

}  // namespace shapeproxy::replication

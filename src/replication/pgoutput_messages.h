// Typed pgoutput (protocol version 1) messages, as sent by PostgreSQL's
// logical replication walsender inside XLogData, and the CopyData envelope
// messages of the streaming replication protocol (XLogData, keepalive).
// See PostgreSQL docs, "Logical Replication Message Formats".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "pg/lsn.h"

namespace shapeproxy::replication {

using pg::Lsn;
using Oid = std::uint32_t;
using Xid = std::uint32_t;

// Microseconds since 2000-01-01 00:00:00 UTC (PostgreSQL's epoch).
using PgTimestamp = std::int64_t;

// One column of a TupleData. NULL and "unchanged TOAST value" are kept
// distinct: an unchanged TOAST column means "same as before", not NULL.
struct ColumnValue {
  enum class Kind : std::uint8_t { kNull, kUnchangedToast, kText, kBinary };
  Kind kind = Kind::kNull;
  std::string data;  // the PostgreSQL text (or binary) output; empty otherwise

  bool operator==(const ColumnValue&) const = default;
};

using TupleData = std::vector<ColumnValue>;

struct RelationColumn {
  bool is_key = false;  // part of the replica identity
  std::string name;
  Oid type_oid = 0;
  std::int32_t type_modifier = -1;

  bool operator==(const RelationColumn&) const = default;
};

// 'B'
struct BeginMessage {
  Lsn final_lsn = 0;  // LSN of the commit record
  PgTimestamp commit_time = 0;
  Xid xid = 0;
};

// 'C'
struct CommitMessage {
  std::uint8_t flags = 0;
  Lsn commit_lsn = 0;
  Lsn end_lsn = 0;  // end of the transaction's WAL: what a consumer confirms
  PgTimestamp commit_time = 0;
};

// 'O'
struct OriginMessage {
  Lsn commit_lsn = 0;
  std::string name;
};

// 'R'
struct RelationMessage {
  Oid relation_oid = 0;
  std::string schema;  // "" means pg_catalog
  std::string name;
  char replica_identity = 'd';  // pg_class.relreplident: d, n, f, i
  std::vector<RelationColumn> columns;
};

// 'Y'
struct TypeMessage {
  Oid type_oid = 0;
  std::string schema;
  std::string name;
};

// 'I'
struct InsertMessage {
  Oid relation_oid = 0;
  TupleData new_tuple;
};

// 'U': key_tuple ('K') when the replica identity key changed, old_tuple ('O')
// with REPLICA IDENTITY FULL; never both.
struct UpdateMessage {
  Oid relation_oid = 0;
  std::optional<TupleData> key_tuple;
  std::optional<TupleData> old_tuple;
  TupleData new_tuple;
};

// 'D': key_tuple ('K') or old_tuple ('O', REPLICA IDENTITY FULL).
struct DeleteMessage {
  Oid relation_oid = 0;
  std::optional<TupleData> key_tuple;
  std::optional<TupleData> old_tuple;
};

// 'T'
struct TruncateMessage {
  static constexpr std::uint8_t kCascade = 1;
  static constexpr std::uint8_t kRestartIdentity = 2;
  std::uint8_t options = 0;
  std::vector<Oid> relation_oids;
};

// 'M' (only with the `messages` option)
struct LogicalDecodingMessage {
  bool transactional = false;
  Lsn lsn = 0;
  std::string prefix;
  std::string content;
};

using PgOutputMessage =
    std::variant<BeginMessage, CommitMessage, OriginMessage, RelationMessage, TypeMessage,
                 InsertMessage, UpdateMessage, DeleteMessage, TruncateMessage,
                 LogicalDecodingMessage>;

// CopyData envelope, server to client.
struct XLogData {
  Lsn wal_start = 0;
  Lsn wal_end = 0;
  PgTimestamp server_time = 0;
  std::string_view payload;  // one pgoutput message; points into the CopyData buffer
};

struct PrimaryKeepalive {
  Lsn wal_end = 0;
  PgTimestamp server_time = 0;
  bool reply_requested = false;
};

using CopyDataMessage = std::variant<XLogData, PrimaryKeepalive>;

}  // namespace shapeproxy::replication

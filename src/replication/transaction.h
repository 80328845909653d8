// What replication ingest hands downstream: committed transactions, in commit
// order, each a list of row changes against relations whose column layout is
// known. Values stay in PostgreSQL's text output form.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "replication/pgoutput_messages.h"

namespace shapeproxy::replication {

// A table's layout as the stream announced it (a pgoutput Relation message).
struct Relation {
  Oid oid = 0;
  std::string schema;
  std::string name;
  char replica_identity = 'd';  // d(efault), n(othing), f(ull), i(ndex)
  std::vector<RelationColumn> columns;

  bool operator==(const Relation&) const = default;
};

// One row change. Tuples follow `relation->columns` order.
struct Change {
  enum class Kind : std::uint8_t { kInsert, kUpdate, kDelete, kTruncate };

  Kind kind = Kind::kInsert;
  std::shared_ptr<const Relation> relation;
  // Insert and update: the new row. Unchanged TOAST columns stay kUnchangedToast
  // unless the old row (REPLICA IDENTITY FULL) supplied their value.
  TupleData new_tuple;
  // Update and delete: the old row, when the server sent one: all columns with
  // REPLICA IDENTITY FULL, else only the key columns (the rest kNull), see
  // old_is_key_only.
  std::optional<TupleData> old_tuple;
  bool old_is_key_only = false;
  // Truncate: every relation truncated by the one statement, and its options.
  std::vector<std::shared_ptr<const Relation>> truncated;
  std::uint8_t truncate_options = 0;
};

struct Transaction {
  Xid xid = 0;
  Lsn commit_lsn = 0;  // LSN of the commit record
  Lsn end_lsn = 0;     // end of the transaction's WAL: the position to acknowledge
  PgTimestamp commit_time = 0;
  std::string origin;  // replication origin name, if the transaction carried one
  std::vector<Change> changes;
  // Relations (re)announced in this transaction: a schema change shows up here
  // as a Relation whose columns differ from the previous one of that OID.
  std::vector<std::shared_ptr<const Relation>> relations;
};

}  // namespace shapeproxy::replication

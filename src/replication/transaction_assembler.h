// Turns the pgoutput message sequence of one replication connection into
// whole transactions: keeps the OID -> Relation cache (reset per connection),
// groups changes between Begin and Commit, resolves relation OIDs, and fills
// unchanged TOAST values from a FULL old tuple when the server sent one.
#pragma once

#include <memory>
#include <optional>
#include <unordered_map>

#include "common/result.h"
#include "replication/transaction.h"

namespace shapeproxy::replication {

class TransactionAssembler {
 public:
  // Feeds one decoded message. Returns a transaction when `message` is its
  // Commit; an Error on a protocol violation (DML outside a transaction, an
  // unknown relation OID, a Commit that does not match its Begin, ...).
  Result<std::optional<Transaction>> apply(PgOutputMessage message);

  bool in_transaction() const { return current_.has_value(); }
  std::shared_ptr<const Relation> relation(Oid oid) const;

 private:
  Result<std::optional<Transaction>> on(BeginMessage& begin);
  Result<std::optional<Transaction>> on(CommitMessage& commit);
  Result<std::optional<Transaction>> on(OriginMessage& origin);
  Result<std::optional<Transaction>> on(RelationMessage& relation);
  Result<std::optional<Transaction>> on(TypeMessage& type);
  Result<std::optional<Transaction>> on(InsertMessage& insert);
  Result<std::optional<Transaction>> on(UpdateMessage& update);
  Result<std::optional<Transaction>> on(DeleteMessage& remove);
  Result<std::optional<Transaction>> on(TruncateMessage& truncate);
  Result<std::optional<Transaction>> on(LogicalDecodingMessage& message);

  Result<std::shared_ptr<const Relation>> resolve(Oid oid, std::size_t tuple_width) const;
  Result<void> require_transaction(const char* what) const;

  std::unordered_map<Oid, std::shared_ptr<const Relation>> relations_;
  std::optional<Transaction> current_;
  Lsn begin_final_lsn_ = 0;
};

}  // namespace shapeproxy::replication

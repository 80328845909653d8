#include "replication/transaction_assembler.h"

#include <string>

namespace shapeproxy::replication {
namespace {

Error protocol_error(std::string message) {
  return Error{"replication_protocol", std::move(message),
               "this is a bug or an unsupported server; please report it with the server version"};
}

// With REPLICA IDENTITY FULL the old tuple carries every column, TOAST
// included, so a new tuple's unchanged TOAST columns can take their values.
void fill_unchanged_toast(TupleData& new_tuple, const TupleData& full_old_tuple) {
  for (std::size_t i = 0; i < new_tuple.size() && i < full_old_tuple.size(); ++i) {
    if (new_tuple[i].kind == ColumnValue::Kind::kUnchangedToast &&
        full_old_tuple[i].kind != ColumnValue::Kind::kUnchangedToast) {
      new_tuple[i] = full_old_tuple[i];
    }
  }
}

}  // namespace

Result<std::optional<Transaction>> TransactionAssembler::apply(PgOutputMessage message) {
  return std::visit([this](auto& m) { return on(m); }, message);
}

std::shared_ptr<const Relation> TransactionAssembler::relation(Oid oid) const {
  auto it = relations_.find(oid);
  return it == relations_.end() ? nullptr : it->second;
}

Result<void> TransactionAssembler::require_transaction(const char* what) const {
  if (!current_) return protocol_error(std::string(what) + " message outside a transaction");
  return {};
}

Result<std::shared_ptr<const Relation>> TransactionAssembler::resolve(
    Oid oid, std::size_t tuple_width) const {
  auto found = relation(oid);
  if (!found)
    return protocol_error("change for relation OID " + std::to_string(oid) +
                          " before its Relation message");
  if (tuple_width != found->columns.size()) {
    return protocol_error("tuple for " + found->schema + "." + found->name + " has " +
                          std::to_string(tuple_width) + " columns, relation has " +
                          std::to_string(found->columns.size()));
  }
  return found;
}

Result<std::optional<Transaction>> TransactionAssembler::on(BeginMessage& begin) {
  if (current_) return protocol_error("Begin inside a transaction");
  current_.emplace();
  current_->xid = begin.xid;
  current_->commit_time = begin.commit_time;
  begin_final_lsn_ = begin.final_lsn;
  return std::optional<Transaction>{};
}

Result<std::optional<Transaction>> TransactionAssembler::on(CommitMessage& commit) {
  if (auto ok = require_transaction("Commit"); !ok) return ok.error();
  if (commit.commit_lsn != begin_final_lsn_) {
    return protocol_error("Commit LSN does not match its Begin");
  }
  current_->commit_lsn = commit.commit_lsn;
  current_->end_lsn = commit.end_lsn;
  current_->commit_time = commit.commit_time;
  std::optional<Transaction> done = std::move(current_);
  current_.reset();
  return done;
}

Result<std::optional<Transaction>> TransactionAssembler::on(OriginMessage& origin) {
  if (auto ok = require_transaction("Origin"); !ok) return ok.error();
  current_->origin = std::move(origin.name);
  return std::optional<Transaction>{};
}

Result<std::optional<Transaction>> TransactionAssembler::on(RelationMessage& message) {
  auto relation = std::make_shared<const Relation>(
      Relation{message.relation_oid, std::move(message.schema), std::move(message.name),
               message.replica_identity, std::move(message.columns)});
  relations_[relation->oid] = relation;
  if (current_) current_->relations.push_back(relation);
  return std::optional<Transaction>{};
}

Result<std::optional<Transaction>> TransactionAssembler::on(TypeMessage&) {
  // Type messages name non-built-in types (enums, domains...). Values arrive
  // as text either way, and consumers read type names from the catalog.
  return std::optional<Transaction>{};
}

Result<std::optional<Transaction>> TransactionAssembler::on(InsertMessage& insert) {
  if (auto ok = require_transaction("Insert"); !ok) return ok.error();
  auto relation = resolve(insert.relation_oid, insert.new_tuple.size());
  if (!relation) return relation.error();
  Change change;
  change.kind = Change::Kind::kInsert;
  change.relation = std::move(relation).value();
  change.new_tuple = std::move(insert.new_tuple);
  current_->changes.push_back(std::move(change));
  return std::optional<Transaction>{};
}

Result<std::optional<Transaction>> TransactionAssembler::on(UpdateMessage& update) {
  if (auto ok = require_transaction("Update"); !ok) return ok.error();
  auto relation = resolve(update.relation_oid, update.new_tuple.size());
  if (!relation) return relation.error();
  Change change;
  change.kind = Change::Kind::kUpdate;
  change.relation = std::move(relation).value();
  change.new_tuple = std::move(update.new_tuple);
  if (update.old_tuple) {
    fill_unchanged_toast(change.new_tuple, *update.old_tuple);
    change.old_tuple = std::move(update.old_tuple);
  } else if (update.key_tuple) {
    change.old_tuple = std::move(update.key_tuple);
    change.old_is_key_only = true;
  }
  current_->changes.push_back(std::move(change));
  return std::optional<Transaction>{};
}

Result<std::optional<Transaction>> TransactionAssembler::on(DeleteMessage& remove) {
  if (auto ok = require_transaction("Delete"); !ok) return ok.error();
  bool key_only = !remove.old_tuple.has_value();
  auto& old_tuple = key_only ? remove.key_tuple : remove.old_tuple;
  if (!old_tuple) return protocol_error("Delete without a key or old tuple");
  auto relation = resolve(remove.relation_oid, old_tuple->size());
  if (!relation) return relation.error();
  Change change;
  change.kind = Change::Kind::kDelete;
  change.relation = std::move(relation).value();
  change.old_tuple = std::move(old_tuple);
  change.old_is_key_only = key_only;
  current_->changes.push_back(std::move(change));
  return std::optional<Transaction>{};
}

Result<std::optional<Transaction>> TransactionAssembler::on(TruncateMessage& truncate) {
  if (auto ok = require_transaction("Truncate"); !ok) return ok.error();
  Change change;
  change.kind = Change::Kind::kTruncate;
  change.truncate_options = truncate.options;
  for (Oid oid : truncate.relation_oids) {
    auto found = relation(oid);
    if (!found) return protocol_error("Truncate of unknown relation OID " + std::to_string(oid));
    change.truncated.push_back(std::move(found));
  }
  if (!change.truncated.empty()) change.relation = change.truncated.front();
  current_->changes.push_back(std::move(change));
  return std::optional<Transaction>{};
}

Result<std::optional<Transaction>> TransactionAssembler::on(LogicalDecodingMessage&) {
  // Only sent with the `messages` option, which ingest does not request.
  return std::optional<Transaction>{};
}

}  // namespace shapeproxy::replication

// ShapeIndex routing against brute force: two identical sets of shapes are
// fed the same transactions, one set every change (as before the index),
// the other only the changes ShapeIndex routes to each shape; their logs
// must stay byte-identical. The rows and changes are real: random inserts,
// updates (moving rows between shapes, changing keys, setting NULLs) and
// deletes run in a real PostgreSQL table, and the changes are built from
// the rows it returns in its text output form, with default (key-only old
// rows) and full replica identity and unchanged TOAST values.
#include "shapes/shape_index.h"

#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <random>

#include "shapes/shape_definition.h"
#include "support/postgres_test_environment.h"

namespace shapeproxy::shapes {
namespace {

using replication::Change;
using replication::ColumnValue;
using replication::TupleData;

class Database {
 public:
  explicit Database(const std::string& name)
      : connection_(PQconnectdb(testing::conninfo(name).c_str())) {
    EXPECT_EQ(PQstatus(connection_), CONNECTION_OK) << PQerrorMessage(connection_);
  }
  ~Database() { PQfinish(connection_); }
  // Rows of a query, every value as text (nullopt = NULL).
  std::vector<Row> rows(const std::string& sql) {
    PGresult* result = PQexec(connection_, sql.c_str());
    auto status = PQresultStatus(result);
    EXPECT_TRUE(status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK)
        << sql << ": " << PQerrorMessage(connection_);
    std::vector<Row> out;
    for (int r = 0; r < PQntuples(result); ++r) {
      Row row;
      for (int c = 0; c < PQnfields(result); ++c) {
        if (PQgetisnull(result, r, c)) {
          row.emplace_back(std::nullopt);
        } else {
          row.emplace_back(PQgetvalue(result, r, c));
        }
      }
      out.push_back(std::move(row));
    }
    PQclear(result);
    return out;
  }

 private:
  PGconn* connection_;
};

constexpr const char* kColumns = "id, grp, amount, label, flag, ts";

TableSchema items_schema(const std::string& database) {
  TableSchema table;
  table.oid = static_cast<std::uint32_t>(
      std::stoul(testing::query_value(database, "SELECT 'items'::regclass::oid")));
  table.schema = "public";
  table.name = "items";
  const char* types[] = {"int8", "int4", "numeric", "text", "bool", "timestamptz"};
  const char* names[] = {"id", "grp", "amount", "label", "flag", "ts"};
  for (int i = 0; i < 6; ++i) {
    TableColumn column;
    column.name = names[i];
    column.type_name = types[i];
    if (i == 0) column.pk_index = 0;
    table.columns.push_back(column);
  }
  table.key_columns = {0};
  return table;
}

TupleData tuple_of(const Row& row) {
  TupleData tuple;
  for (const auto& value : row) {
    if (value) {
      tuple.push_back({ColumnValue::Kind::kText, *value});
    } else {
      tuple.push_back({ColumnValue::Kind::kNull, {}});
    }
  }
  return tuple;
}

std::string literal(const std::optional<std::string>& value) {
  return value ? "'" + *value + "'" : std::string("NULL");
}

struct ShapePair {
  std::shared_ptr<Shape> brute;
  std::shared_ptr<Shape> routed;
  std::optional<int> install_at;  // a late shape: its snapshot goes in then
  SnapshotRows snapshot;
};

std::string log_text(const Shape& shape) {
  std::string out;
  LogOffset after = LogOffset::at(0, 0);
  for (int guard = 0; guard < 100000; ++guard) {
    auto slice = shape.log().read_after(after);
    if (slice.chunk) out += *slice.chunk;
    for (auto entry : slice.entries) {
      out += entry;
      out += '\n';
    }
    if (slice.reached_end || slice.last == after) break;
    after = slice.last;
  }
  return out;
}

TEST(ShapeIndex, RoutesExactlyLikeEvaluatingEveryShapeOnRealRows) {
  auto database = testing::create_database("shape_index");
  testing::execute_sql(database,
                       "CREATE TABLE items (id int8 PRIMARY KEY, grp int4, amount numeric, "
                       "label text, flag bool, ts timestamptz)");
  Database db(database);
  auto table = std::make_shared<const TableSchema>(items_schema(database));
  auto relation = std::make_shared<replication::Relation>();
  relation->oid = table->oid;
  relation->schema = "public";
  relation->name = "items";

  std::mt19937 random(20261122);
  auto pick = [&](const auto& options) { return options[random() % std::size(options)]; };
  const std::optional<std::string> grps[] = {std::nullopt, "0", "1", "2", "3", "4"};
  const std::optional<std::string> amounts[] = {std::nullopt, "1",   "1.0", "1.00", "2.5",
                                                "2.50",       "0.0", "-0",  "NaN",  "10"};
  const std::optional<std::string> labels[] = {std::nullopt, "a", "b", "B", "a "};
  const std::optional<std::string> flags[] = {std::nullopt, "true", "false"};
  const std::optional<std::string> stamps[] = {std::nullopt, "2024-01-01 00:00:00+00",
                                               "2024-01-01 01:00:00+01", "2024-06-01 12:00:00+00"};
  auto random_row_values = [&] {
    return literal(pick(grps)) + ", " + literal(pick(amounts)) + ", " + literal(pick(labels)) +
           ", " + literal(pick(flags)) + ", " + literal(pick(stamps));
  };
  for (int id = 1; id <= 30; ++id) {
    db.rows("INSERT INTO items VALUES (" + std::to_string(id) + ", " + random_row_values() + ")");
  }

  // (where, params) of the shapes: indexable ones on every column type,
  // IN lists, conjunctions, and non-indexable ones as contrast.
  std::vector<std::pair<std::string, std::map<int, std::string>>> wheres;
  for (int id = 1; id <= 12; ++id) wheres.push_back({"id = $1", {{1, std::to_string(id)}}});
  for (int grp = 0; grp <= 4; ++grp) wheres.push_back({"grp = $1", {{1, std::to_string(grp)}}});
  for (const char* amount : {"1", "2.50", "NaN", "0", "10.000"})
    wheres.push_back({"amount = $1", {{1, amount}}});
  wheres.push_back({"amount = 1.0", {}});
  wheres.push_back({"2.5 = amount", {}});
  for (const char* label : {"a", "B", "a "}) wheres.push_back({"label = $1", {{1, label}}});
  wheres.push_back({"flag = $1", {{1, "true"}}});
  wheres.push_back({"flag = false", {}});
  wheres.push_back({"ts = '2024-01-01 01:00:00+01'", {}});
  wheres.push_back({"ts = $1", {{1, "2024-06-01 12:00:00+00"}}});
  wheres.push_back({"grp IN (1, 2)", {}});
  wheres.push_back({"grp IN (3, NULL)", {}});
  wheres.push_back({"id IN (5, 6, 35)", {}});
  wheres.push_back({"grp = 2 AND label = 'a'", {}});
  wheres.push_back({"label = 'b' AND id = 7", {}});
  wheres.push_back({"grp = $1 AND amount = $2", {{1, "1"}, {2, "1"}}});
  wheres.push_back({"grp = NULL", {}});
  wheres.push_back({"amount > 1", {}});
  wheres.push_back({"label IS NULL", {}});
  wheres.push_back({"id = 3 OR grp = 1", {}});
  wheres.push_back({"grp + 0 = 2", {}});

  constexpr int kTransactions = 400;
  replication::Xid next_xid = 1000;
  std::vector<ShapePair> pairs;
  int handle_number = 0;
  auto add_shape = [&](const std::string& where, const std::map<int, std::string>& params,
                       std::optional<int> install_at) {
    ShapeDefinitionRequest request;
    request.table = "items";
    request.where = where;
    request.params = params;
    if (random() % 4 == 0) request.replica = ReplicaMode::kFull;
    auto made = ShapeDefinition::make(request, table);
    ASSERT_TRUE(std::holds_alternative<ShapeDefinition>(made)) << where;
    auto definition = std::get<ShapeDefinition>(made);
    ShapePair pair;
    std::string handle = "h" + std::to_string(++handle_number);
    pair.brute = std::make_shared<Shape>(definition, handle, 1 << 20);
    pair.routed = std::make_shared<Shape>(definition, handle, 1 << 20);
    // The snapshot as of now: every transaction from now on is after it.
    pair.snapshot.snapshot = PgSnapshot{next_xid, next_xid, {}};
    for (auto& row : db.rows(std::string("SELECT ") + kColumns + " FROM items")) {
      if (definition.where->matches(row)) pair.snapshot.rows.push_back(row);
    }
    pair.install_at = install_at;
    if (!install_at) {
      ASSERT_TRUE(pair.brute->apply_snapshot(pair.snapshot));
      ASSERT_TRUE(pair.routed->apply_snapshot(pair.snapshot));
    }
    pairs.push_back(std::move(pair));
  };
  for (const auto& [where, params] : wheres) add_shape(where, params, std::nullopt);

  ShapeIndex index;
  std::size_t routed_changes = 0, brute_changes = 0, moves = 0;
  for (int t = 0; t < kTransactions; ++t) {
    // Now and then: shapes come (taking their snapshot a while) and go.
    if (t % 50 == 25) {
      for (int i = 0; i < 6; ++i) {
        const auto& [where, params] = wheres[random() % wheres.size()];
        add_shape(where, params, t + 1 + static_cast<int>(random() % 20));
      }
    }
    if (t % 80 == 79) pairs.erase(pairs.begin() + static_cast<long>(random() % pairs.size()));
    for (auto& pair : pairs) {
      if (pair.install_at && *pair.install_at == t) {
        ASSERT_TRUE(pair.brute->apply_snapshot(pair.snapshot));
        ASSERT_TRUE(pair.routed->apply_snapshot(pair.snapshot));
        pair.install_at.reset();
      }
    }

    const bool full_identity = random() % 3 == 0;
    replication::Transaction transaction;
    transaction.xid = next_xid++;
    transaction.commit_lsn = 1000 + static_cast<replication::Lsn>(t) * 100;
    transaction.end_lsn = transaction.commit_lsn + 10;
    db.rows("BEGIN");
    const int operations = 1 + static_cast<int>(random() % 4);
    for (int o = 0; o < operations; ++o) {
      Change change;
      change.relation = relation;
      auto all = db.rows("SELECT " + std::string(kColumns) + " FROM items ORDER BY id");
      std::vector<Row> existing;
      if (!all.empty()) existing.push_back(all[random() % all.size()]);
      int kind = static_cast<int>(random() % 10);
      if (existing.empty() || kind < 3) {
        auto id = std::to_string(1 + random() % 40);
        auto inserted = db.rows("INSERT INTO items VALUES (" + id + ", " + random_row_values() +
                                ") ON CONFLICT DO NOTHING RETURNING " + kColumns);
        if (inserted.empty()) continue;
        change.kind = Change::Kind::kInsert;
        change.new_tuple = tuple_of(inserted[0]);
      } else if (kind < 9) {
        const Row& old_row = existing[0];
        std::string sets;
        const char* columns[] = {"grp", "amount", "label", "flag", "ts"};
        for (int c = 0; c < 5; ++c) {
          if (random() % 3 != 0) continue;
          std::optional<std::string> value;
          switch (c) {
            case 0:
              value = pick(grps);
              break;
            case 1:
              value = pick(amounts);
              break;
            case 2:
              value = pick(labels);
              break;
            case 3:
              value = pick(flags);
              break;
            default:
              value = pick(stamps);
              break;
          }
          sets += std::string(sets.empty() ? "" : ", ") + columns[c] + " = " + literal(value);
        }
        bool key_change = random() % 6 == 0;
        if (key_change) {
          sets += std::string(sets.empty() ? "" : ", ") +
                  "id = " + std::to_string(1000 * (t + 1) + o);  // a fresh id
        }
        if (sets.empty()) sets = "grp = grp";
        auto updated = db.rows("UPDATE items SET " + sets + " WHERE id = " + *old_row[0] +
                               " RETURNING " + kColumns);
        if (updated.empty()) continue;
        change.kind = Change::Kind::kUpdate;
        change.new_tuple = tuple_of(updated[0]);
        // An unchanged label may come as an unchanged TOAST value.
        if (updated[0][3] == old_row[3] && old_row[3] && random() % 2 == 0) {
          change.new_tuple[3] = {ColumnValue::Kind::kUnchangedToast, {}};
        }
        bool key_changed = updated[0][0] != old_row[0];
        if (full_identity) {
          change.old_tuple = tuple_of(old_row);
        } else if (key_changed) {
          TupleData key_only(6);
          key_only[0] = {ColumnValue::Kind::kText, *old_row[0]};
          change.old_tuple = key_only;
          change.old_is_key_only = true;
        }
        ++moves;
      } else {
        const Row& old_row = existing[0];
        db.rows("DELETE FROM items WHERE id = " + *old_row[0]);
        change.kind = Change::Kind::kDelete;
        if (full_identity) {
          change.old_tuple = tuple_of(old_row);
        } else {
          TupleData key_only(6);
          key_only[0] = {ColumnValue::Kind::kText, *old_row[0]};
          change.old_tuple = key_only;
          change.old_is_key_only = true;
        }
      }
      transaction.changes.push_back(std::move(change));
    }
    db.rows("COMMIT");
    std::vector<const Change*> changes;
    for (const auto& change : transaction.changes) changes.push_back(&change);

    std::vector<std::shared_ptr<Shape>> routed_shapes;
    for (const auto& pair : pairs) {
      pair.brute->apply_transaction(transaction, changes);
      brute_changes += changes.size();
      routed_shapes.push_back(pair.routed);
    }
    for (const auto& route : index.route("\"public\".\"items\"", routed_shapes, changes)) {
      routed_shapes[route.shape]->apply_transaction(transaction,
                                                    route.all ? changes : route.changes);
      routed_changes += route.all ? changes.size() : route.changes.size();
    }
    for (const auto& pair : pairs) {
      ASSERT_EQ(pair.brute->row_count(), pair.routed->row_count())
          << "transaction " << t << " shape "
          << pair.brute->definition().request.where.value_or("");
      ASSERT_EQ(log_text(*pair.brute), log_text(*pair.routed))
          << "transaction " << t << " shape "
          << pair.brute->definition().request.where.value_or("");
    }
  }
  // The index did skip most of the work, and the run did move rows around.
  EXPECT_LT(routed_changes * 2, brute_changes);
  EXPECT_GT(moves, 100u);
  std::size_t operations = 0;
  for (const auto& pair : pairs) operations += log_text(*pair.routed).size();
  EXPECT_GT(operations, 10000u);
}

}  // namespace
}  // namespace shapeproxy::shapes

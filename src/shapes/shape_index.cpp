#include "shapes/shape_index.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

#include "where/datum_compare.h"
#include "where/where_clause.h"
#include "where/where_expr.h"

namespace shapeproxy::shapes {
using replication::Change;
using replication::ColumnValue;
using replication::TupleData;
using where::canonical_datum_key;
using where::CompareOp;
using where::Expr;
using where::ExprKind;
using where::is_null;
using where::parse_datum;
using where::SqlType;
using where::WhereClause;

namespace {

bool indexable_type(SqlType type) {
  switch (type) {
    case SqlType::kBool:
    case SqlType::kInt2:
    case SqlType::kInt4:
    case SqlType::kInt8:
    case SqlType::kNumeric:
    case SqlType::kFloat4:
    case SqlType::kFloat8:
    case SqlType::kText:
    case SqlType::kVarchar:
    case SqlType::kDate:
    case SqlType::kTimestamp:
    case SqlType::kTimestamptz:
    case SqlType::kUuid:
      return true;
    case SqlType::kUnknown:
    case SqlType::kOther:
      return false;
  }
  return false;
}

// A constant compared with the column in the column's own type (text and
// varchar compare alike), so its canonical key matches the row values'.
bool same_comparison_type(const Expr& column, const Expr& constant) {
  return column.type == constant.type || (is_text_type(column.type) && is_text_type(constant.type));
}

void collect_conjuncts(const Expr& e, std::vector<const Expr*>& out) {
  if (e.kind == ExprKind::kAnd) {
    for (const auto& arg : e.args) collect_conjuncts(*arg, out);
    return;
  }
  out.push_back(&e);
}

// `column = constant` / `constant = column` / `column IN (constants)`.
std::optional<EqualityCondition> condition_of(const Expr& e) {
  const Expr* column = nullptr;
  std::vector<const Expr*> constants;
  if (e.kind == ExprKind::kCompare && e.compare_op == CompareOp::kEq && e.args.size() == 2) {
    const Expr* a = e.args[0].get();
    const Expr* b = e.args[1].get();
    if (a->kind == ExprKind::kConst) std::swap(a, b);
    if (a->kind != ExprKind::kColumn || b->kind != ExprKind::kConst) return std::nullopt;
    column = a;
    constants.push_back(b);
  } else if (e.kind == ExprKind::kIn && !e.negated && e.args.size() >= 2) {
    if (e.args[0]->kind != ExprKind::kColumn) return std::nullopt;
    column = e.args[0].get();
    for (std::size_t i = 1; i < e.args.size(); ++i) {
      if (e.args[i]->kind != ExprKind::kConst) return std::nullopt;
      constants.push_back(e.args[i].get());
    }
  } else {
    return std::nullopt;
  }
  if (column->column_index < 0 || !indexable_type(column->type)) return std::nullopt;
  EqualityCondition condition;
  condition.column = static_cast<std::size_t>(column->column_index);
  condition.type = column->type;
  for (const Expr* constant : constants) {
    if (!same_comparison_type(*column, *constant)) return std::nullopt;
    if (is_null(constant->value)) continue;  // `= NULL` is never true
    condition.values.push_back(canonical_datum_key(column->type, constant->value));
  }
  return condition;
}

// What a tuple says about one column's value.
enum class ValueState { kKnown, kNull, kUnknown };

ValueState state_of(const ColumnValue& value) {
  switch (value.kind) {
    case ColumnValue::Kind::kText:
    case ColumnValue::Kind::kBinary:
      return ValueState::kKnown;
    case ColumnValue::Kind::kNull:
      return ValueState::kNull;
    case ColumnValue::Kind::kUnchangedToast:
      return ValueState::kUnknown;
  }
  return ValueState::kUnknown;
}

// The row as Shape::apply_* first sees it (no previous row: unchanged TOAST
// values are NULL), for computing keys.
Row key_row(const TupleData& tuple) {
  Row row(tuple.size());
  for (std::size_t i = 0; i < tuple.size(); ++i) {
    if (state_of(tuple[i]) == ValueState::kKnown) row[i] = tuple[i].data;
  }
  return row;
}

}  // namespace

std::optional<EqualityCondition> equality_condition(const WhereClause& where,
                                                    const std::vector<std::size_t>& key_columns) {
  std::vector<const Expr*> conjuncts;
  collect_conjuncts(where.expression(), conjuncts);
  std::optional<EqualityCondition> best;
  int best_rank = -1;
  for (const Expr* conjunct : conjuncts) {
    auto condition = condition_of(*conjunct);
    if (!condition) continue;
    bool on_key =
        std::find(key_columns.begin(), key_columns.end(), condition->column) != key_columns.end();
    int rank = (on_key ? 2 : 0) + (conjunct->kind == ExprKind::kCompare ? 1 : 0);
    if (rank > best_rank) {
      best_rank = rank;
      best = std::move(condition);
    }
  }
  return best;
}

bool ShapeIndex::same_shapes(const TableIndex& index,
                             const std::vector<std::shared_ptr<Shape>>& shapes) {
  if (index.built_from.size() != shapes.size()) return false;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    const auto& built = index.built_from[i];
    if (built.owner_before(shapes[i]) || shapes[i].owner_before(built)) return false;
  }
  return true;
}

ShapeIndex::TableIndex ShapeIndex::build(const std::vector<std::shared_ptr<Shape>>& shapes) {
  TableIndex index;
  index.built_from.assign(shapes.begin(), shapes.end());
  // Keys are computed once per change with the first indexed shape's layout;
  // a shape keyed differently (schema changed under it) is not indexed.
  const Shape* reference = nullptr;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    const Shape& shape = *shapes[i];
    std::optional<EqualityCondition> condition;
    if (shape.definition().where) {
      condition = equality_condition(*shape.definition().where, shape.table().key_columns);
    }
    if (condition && reference != nullptr &&
        (reference->table().key_columns != shape.table().key_columns ||
         reference->table().schema != shape.table().schema ||
         reference->table().name != shape.table().name)) {
      condition.reset();
    }
    if (!condition) {
      index.unindexed.push_back(i);
      continue;
    }
    if (reference == nullptr) reference = &shape;
    auto column = std::find_if(index.columns.begin(), index.columns.end(), [&](const auto& c) {
      return c.column == condition->column && c.type == condition->type;
    });
    if (column == index.columns.end()) {
      ColumnIndex added;
      added.column = condition->column;
      added.type = condition->type;
      const auto& keys = shape.table().key_columns;
      added.key_column = std::find(keys.begin(), keys.end(), condition->column) != keys.end();
      index.columns.push_back(std::move(added));
      column = std::prev(index.columns.end());
    }
    column->shapes.push_back(i);
    for (const auto& value : condition->values) {
      auto& listed = column->by_value[value];
      if (listed.empty() || listed.back() != i) listed.push_back(i);
    }
  }
  return index;
}

std::vector<ShapeIndex::Route> ShapeIndex::route(const std::string& table,
                                                 const std::vector<std::shared_ptr<Shape>>& shapes,
                                                 const std::vector<const Change*>& changes) {
  auto& index = tables_[table];
  if (!same_shapes(index, shapes)) index = build(shapes);

  std::vector<Route> routes;
  if (index.columns.empty()) {
    routes.reserve(shapes.size());
    for (std::size_t i = 0; i < shapes.size(); ++i) routes.push_back({i, true, {}});
    return routes;
  }
  // slot[i]: -2 every change, -1 none yet, else the route of shape i.
  std::vector<int> slot(shapes.size(), -1);
  for (std::size_t i : index.unindexed) slot[i] = -2;
  // Per change: which shapes it was already routed to (dedupe).
  std::vector<std::size_t> stamp(shapes.size(), 0);
  // Keys touched earlier in this transaction, and the shapes they were
  // routed to: those shapes may hold the row although their state does not
  // show it yet (they apply the whole transaction afterwards).
  std::unordered_map<std::string, std::vector<std::size_t>> touched;
  const Shape* keyer = shapes[index.columns.front().shapes.front()].get();

  std::size_t change_number = 0;
  std::vector<std::size_t> candidates;
  for (const Change* change : changes) {
    ++change_number;
    candidates.clear();
    auto add = [&](std::size_t i) {
      if (slot[i] == -2 || stamp[i] == change_number) return;
      stamp[i] = change_number;
      candidates.push_back(i);
    };
    const bool has_new =
        change->kind == Change::Kind::kInsert || change->kind == Change::Kind::kUpdate;
    const bool has_old = change->kind == Change::Kind::kUpdate ||
                         (change->kind == Change::Kind::kDelete && change->old_tuple.has_value());
    if (!has_new && !has_old) continue;  // a delete without its key changes no shape

    std::optional<std::string> new_key;
    std::optional<std::string> old_key;
    auto old_key_of = [&]() -> const std::string& {
      if (!old_key) {
        // As Shape::apply_update/apply_delete find the previous row.
        old_key =
            keyer->row_key(key_row(change->old_tuple ? *change->old_tuple : change->new_tuple));
      }
      return *old_key;
    };

    for (const auto& column : index.columns) {
      auto lookup = [&](const ColumnValue& value) {
        auto datum = parse_datum(column.type, value.data);
        if (!datum) {
          // The evaluator treats it as an error (no match); stay safe anyway.
          for (std::size_t i : column.shapes) add(i);
          return;
        }
        auto found = column.by_value.find(canonical_datum_key(column.type, *datum));
        if (found == column.by_value.end()) return;
        for (std::size_t i : found->second) add(i);
      };
      bool need_holders = false;
      if (has_new && column.column < change->new_tuple.size()) {
        const auto& value = change->new_tuple[column.column];
        switch (state_of(value)) {
          case ValueState::kKnown:
            lookup(value);
            break;
          case ValueState::kNull:
            break;
          case ValueState::kUnknown:
            need_holders = true;  // only a shape holding the row knows it
            break;
        }
      }
      if (has_old) {
        ValueState state = ValueState::kUnknown;
        const ColumnValue* value = nullptr;
        if (change->old_tuple) {
          if (column.column < change->old_tuple->size()) {
            value = &(*change->old_tuple)[column.column];
            state = state_of(*value);
            // A key-only old tuple sends NULL for the columns it lacks.
            if (change->old_is_key_only && state == ValueState::kNull) {
              state = ValueState::kUnknown;
            }
          }
        } else if (column.key_column && column.column < change->new_tuple.size()) {
          // No old tuple: the key did not change (and Shape looks the row
          // up by the new key anyway).
          value = &change->new_tuple[column.column];
          state = state_of(*value);
        }
        if (state == ValueState::kKnown) lookup(*value);
        if (state == ValueState::kUnknown) need_holders = true;
      }
      if (need_holders) {
        const std::string& key = old_key_of();
        auto earlier = touched.find(key);
        if (earlier != touched.end()) {
          for (std::size_t i : earlier->second) add(i);
        }
        for (std::size_t i : column.shapes) {
          const Shape& shape = *shapes[i];
          if (shape.phase() == Shape::Phase::kSnapshotting || shape.holds(key)) add(i);
        }
      }
    }
    if (candidates.empty()) continue;
    for (std::size_t i : candidates) {
      if (slot[i] == -1) {
        slot[i] = static_cast<int>(routes.size());
        routes.push_back({i, false, {}});
      }
      routes[static_cast<std::size_t>(slot[i])].changes.push_back(change);
    }
    if (changes.size() > 1) {
      if (has_new) new_key = keyer->row_key(key_row(change->new_tuple));
      auto note = [&](const std::string& key) {
        auto& listed = touched[key];
        listed.insert(listed.end(), candidates.begin(), candidates.end());
      };
      if (new_key) note(*new_key);
      if (!new_key || *new_key != old_key_of()) note(old_key_of());
    }
  }
  for (std::size_t i : index.unindexed) routes.push_back({i, true, {}});
  std::sort(routes.begin(), routes.end(),
            [](const Route& a, const Route& b) { return a.shape < b.shape; });
  return routes;
}

}  // namespace shapeproxy::shapes

// diff_rows: inserts, updates and deletes from the rows a shape served to a
// fresh snapshot, changes counted only in served columns, NULL vs value, and
// a deterministic (by key) order.
#include "shapes/row_diff.h"

#include <gtest/gtest.h>

namespace shapeproxy::shapes {
namespace {

// Columns: 0 id (key), 1 name, 2 qty, 3 internal (not served).
const std::vector<std::size_t> kSelected = {0, 1, 2};

std::string key_of(const Row& row) { return "\"public\".\"items\"/\"" + row.at(0).value() + "\""; }

Row row(std::string id, std::optional<std::string> name, std::optional<std::string> qty,
        std::optional<std::string> internal = "x") {
  return Row{std::move(id), std::move(name), std::move(qty), std::move(internal)};
}

std::unordered_map<std::string, Row> served(const std::vector<Row>& rows) {
  std::unordered_map<std::string, Row> out;
  for (const auto& r : rows) out.emplace(key_of(r), r);
  return out;
}

SnapshotRows fresh(std::vector<Row> rows) { return SnapshotRows{{}, std::move(rows)}; }

TEST(RowDiffTest, IdenticalRowsGiveNothing) {
  auto old_rows = served({row("1", "a", "1"), row("2", std::nullopt, std::nullopt)});
  auto diff = diff_rows(old_rows, fresh({row("2", std::nullopt, std::nullopt), row("1", "a", "1")}),
                        kSelected, key_of);
  EXPECT_TRUE(diff.empty());
}

TEST(RowDiffTest, InsertsUpdatesAndDeletesSortedByKey) {
  auto old_rows =
      served({row("1", "a", "1"), row("2", "b", "2"), row("3", "c", "3"), row("5", "e", "5")});
  auto diff = diff_rows(old_rows,
                        fresh({row("9", "i", "9"), row("3", "c", "30"), row("4", "d", "4"),
                               row("1", "A", "1"), row("2", "b", "2")}),
                        kSelected, key_of);
  ASSERT_EQ(diff.inserts.size(), 2u);
  EXPECT_EQ(diff.inserts[0].key, key_of(row("4", "", "")));
  EXPECT_EQ(diff.inserts[0].row, row("4", "d", "4"));
  EXPECT_EQ(diff.inserts[1].key, key_of(row("9", "", "")));

  ASSERT_EQ(diff.updates.size(), 2u);
  EXPECT_EQ(diff.updates[0].key, key_of(row("1", "", "")));
  EXPECT_EQ(diff.updates[0].old_row, row("1", "a", "1"));
  EXPECT_EQ(diff.updates[0].new_row, row("1", "A", "1"));
  EXPECT_EQ(diff.updates[0].changed_columns, std::vector<std::size_t>{1});
  EXPECT_EQ(diff.updates[1].key, key_of(row("3", "", "")));
  EXPECT_EQ(diff.updates[1].changed_columns, std::vector<std::size_t>{2});

  ASSERT_EQ(diff.deletes.size(), 1u);
  EXPECT_EQ(diff.deletes[0].key, key_of(row("5", "", "")));
  EXPECT_EQ(diff.deletes[0].row, row("5", "e", "5"));  // the old values
}

TEST(RowDiffTest, OnlySelectedColumnsCount) {
  auto old_rows = served({row("1", "a", "1", "old"), row("2", "b", "2", "old")});
  auto diff = diff_rows(old_rows, fresh({row("1", "a", "1", "new"), row("2", "B", "2", "new")}),
                        kSelected, key_of);
  EXPECT_TRUE(diff.inserts.empty());
  EXPECT_TRUE(diff.deletes.empty());
  ASSERT_EQ(diff.updates.size(), 1u);  // row 1 changed only a column not served
  EXPECT_EQ(diff.updates[0].key, key_of(row("2", "", "")));
  EXPECT_EQ(diff.updates[0].changed_columns, std::vector<std::size_t>{1});

  // With every column served, both rows are updates.
  auto all = diff_rows(old_rows, fresh({row("1", "a", "1", "new"), row("2", "B", "2", "new")}),
                       {0, 1, 2, 3}, key_of);
  ASSERT_EQ(all.updates.size(), 2u);
  EXPECT_EQ(all.updates[0].changed_columns, std::vector<std::size_t>{3});
  EXPECT_EQ(all.updates[1].changed_columns, (std::vector<std::size_t>{1, 3}));
}

TEST(RowDiffTest, NullAndValueDifferButNullEqualsNull) {
  auto old_rows = served({row("1", std::nullopt, "1"), row("2", "b", std::nullopt),
                          row("3", std::nullopt, std::nullopt), row("4", "", "4")});
  auto diff = diff_rows(old_rows,
                        fresh({row("1", "a", "1"), row("2", "b", "2"),
                               row("3", std::nullopt, std::nullopt), row("4", std::nullopt, "4")}),
                        kSelected, key_of);
  ASSERT_EQ(diff.updates.size(), 3u);
  EXPECT_EQ(diff.updates[0].changed_columns, std::vector<std::size_t>{1});  // NULL -> 'a'
  EXPECT_EQ(diff.updates[1].changed_columns, std::vector<std::size_t>{2});  // NULL -> '2'
  EXPECT_EQ(diff.updates[2].key, key_of(row("4", "", "")));
  EXPECT_EQ(diff.updates[2].changed_columns, std::vector<std::size_t>{1});  // '' -> NULL
  EXPECT_FALSE(diff.updates[2].new_row[1].has_value());
}

TEST(RowDiffTest, EmptySidesAreAllInsertsOrAllDeletes) {
  auto inserted = diff_rows({}, fresh({row("2", "b", "2"), row("1", "a", "1")}), kSelected, key_of);
  ASSERT_EQ(inserted.inserts.size(), 2u);
  EXPECT_EQ(inserted.inserts[0].row, row("1", "a", "1"));
  EXPECT_TRUE(inserted.updates.empty());
  EXPECT_TRUE(inserted.deletes.empty());

  auto deleted =
      diff_rows(served({row("2", "b", "2"), row("1", "a", "1")}), fresh({}), kSelected, key_of);
  ASSERT_EQ(deleted.deletes.size(), 2u);
  EXPECT_EQ(deleted.deletes[0].row, row("1", "a", "1"));
  EXPECT_EQ(deleted.deletes[1].row, row("2", "b", "2"));
}

TEST(RowDiffTest, RepeatedFreshKeyCountsOnceLastWins) {
  auto diff = diff_rows(served({row("1", "a", "1")}),
                        fresh({row("1", "old", "1"), row("1", "a", "1")}), kSelected, key_of);
  EXPECT_TRUE(diff.empty());
}

}  // namespace
}  // namespace shapeproxy::shapes

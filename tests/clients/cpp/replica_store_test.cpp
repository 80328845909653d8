#include "replica_store.h"

#include <gtest/gtest.h>

#include <thread>

namespace shapeproxy::client::detail {
namespace {

ChangeMessage change(ChangeKind kind, std::string key, nlohmann::json value) {
  return ChangeMessage{kind, std::move(key), std::move(value), nullptr};
}

TEST(ReplicaStore, InsertUpdateDeleteReportOldAndNewRows) {
  ReplicaStore store;
  auto inserted = store.apply(change(ChangeKind::kInsert, "k1", {{"id", "1"}, {"title", "a"}}));
  ASSERT_TRUE(inserted);
  EXPECT_EQ(inserted->operation, Operation::kInsert);
  EXPECT_FALSE(inserted->old_row);
  EXPECT_EQ(inserted->new_row->value["title"], "a");

  // default replica mode: an update carries only the changed columns
  auto updated = store.apply(change(ChangeKind::kUpdate, "k1", {{"title", "b"}}));
  ASSERT_TRUE(updated);
  EXPECT_EQ(updated->operation, Operation::kUpdate);
  EXPECT_EQ(updated->old_row->value["title"], "a");
  EXPECT_EQ(updated->new_row->value, nlohmann::json({{"id", "1"}, {"title", "b"}}));
  EXPECT_EQ(store.get("k1")->value["id"], "1");

  auto deleted = store.apply(change(ChangeKind::kDelete, "k1", {{"id", "1"}}));
  ASSERT_TRUE(deleted);
  EXPECT_EQ(deleted->operation, Operation::kDelete);
  EXPECT_EQ(deleted->old_row->value["title"], "b");
  EXPECT_FALSE(store.get("k1"));
  EXPECT_FALSE(store.apply(change(ChangeKind::kDelete, "k1", {{"id", "1"}})));
  EXPECT_EQ(store.count(), 0u);
}

TEST(ReplicaStore, UpdateOfUnknownRowInsertsIt) {
  ReplicaStore store;
  auto moved_in = store.apply(change(ChangeKind::kUpdate, "k9", {{"id", "9"}}));
  ASSERT_TRUE(moved_in);
  EXPECT_EQ(moved_in->operation, Operation::kInsert);
  EXPECT_EQ(store.count(), 1u);
}

TEST(ReplicaStore, LookupWithAndWithoutIndexAgree) {
  ReplicaStore indexed({"color"});
  ReplicaStore plain;
  for (auto* store : {&indexed, &plain}) {
    (void)store->apply(change(ChangeKind::kInsert, "a", {{"id", "1"}, {"color", "red"}}));
    (void)store->apply(change(ChangeKind::kInsert, "b", {{"id", "2"}, {"color", "blue"}}));
    (void)store->apply(change(ChangeKind::kInsert, "c", {{"id", "3"}, {"color", "red"}}));
    (void)store->apply(change(ChangeKind::kUpdate, "a", {{"color", "blue"}}));
    (void)store->apply(change(ChangeKind::kDelete, "b", {{"id", "2"}}));
    (void)store->apply(change(ChangeKind::kInsert, "n", {{"id", "4"}, {"color", nullptr}}));
  }
  for (auto* store : {&indexed, &plain}) {
    auto red = store->lookup("color", "red");
    ASSERT_EQ(red.size(), 1u);
    EXPECT_EQ(red[0].key, "c");
    auto blue = store->lookup("color", "blue");
    ASSERT_EQ(blue.size(), 1u);
    EXPECT_EQ(blue[0].key, "a");
    EXPECT_EQ(store->lookup("color", nullptr).size(), 1u);
    EXPECT_TRUE(store->lookup("id", 1).empty());  // values are strings
    EXPECT_EQ(store->lookup("id", "1").size(), 1u);
  }
  indexed.clear();
  EXPECT_TRUE(indexed.lookup("color", "red").empty());
  EXPECT_EQ(indexed.count(), 0u);
}

TEST(ReplicaStore, AllIsOrderedByKey) {
  ReplicaStore store;
  (void)store.apply(change(ChangeKind::kInsert, "b", {{"id", "2"}}));
  (void)store.apply(change(ChangeKind::kInsert, "a", {{"id", "1"}}));
  auto rows = store.all();
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].key, "a");
  EXPECT_EQ(rows[1].key, "b");
}

TEST(ReplicaStore, ReadersRunBesideTheWriter) {
  ReplicaStore store({"n"});
  std::thread writer([&] {
    for (int i = 0; i < 2000; ++i)
      (void)store.apply(change(ChangeKind::kInsert, "k" + std::to_string(i % 50),
                               {{"n", std::to_string(i % 7)}}));
  });
  std::size_t seen = 0;
  for (int i = 0; i < 500; ++i) seen += store.lookup("n", "3").size() + store.all().size();
  writer.join();
  EXPECT_EQ(store.count(), 50u);
  EXPECT_GT(seen + 1, 0u);
}

}  // namespace
}  // namespace shapeproxy::client::detail

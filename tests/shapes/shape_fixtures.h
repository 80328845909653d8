// Fixtures for the tests of the registry's collaborators: a strand on a
// running io_context to call them on, and ready shapes on a hand-made table
// "items"(id int8 primary key, title text) fed with replicated inserts, so
// parking, durability and compaction are tested without a database.
#pragma once

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "common/on_strand.h"
#include "replication/transaction.h"
#include "shapes/lifetime.h"
#include "shapes/shape.h"
#include "shapes/shape_meta.h"
#include "support/file_limits.h"

namespace shapeproxy::shapes::fixtures {

// A strand of an io_context running on its own thread.
class Strand {
 public:
  Strand() : strand_(boost::asio::make_strand(io_)), thread_([this] { io_.run(); }) {}
  ~Strand() { stop(); }
  // Stops the io_context and joins its thread (before what runs there goes).
  void stop() {
    if (!thread_.joinable()) return;
    work_.reset();
    io_.stop();
    thread_.join();
  }
  boost::asio::any_io_executor executor() const { return strand_; }

  // Runs `work` on the strand and returns its result.
  template <typename Work>
  auto run(Work work) -> decltype(work()) {
    if (running_on(strand_)) return work();  // nested (e.g. inside eventually())
    std::promise<decltype(work())> done;
    boost::asio::post(strand_, [&] {
      if constexpr (std::is_void_v<decltype(work())>) {
        work();
        done.set_value();
      } else {
        done.set_value(work());
      }
    });
    return done.get_future().get();
  }

  // Waits (up to 10 s) until `condition`, checked on the strand, holds.
  template <typename Condition>
  bool eventually(Condition condition) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!run(condition)) {
      if (std::chrono::steady_clock::now() > until) return false;
      std::this_thread::yield();
    }
    return true;
  }

 private:
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_{
      io_.get_executor()};
  boost::asio::any_io_executor strand_;
  std::thread thread_;
};

// What collaborators lock before their callbacks run; reset() plays the
// registry going away.
struct Owner {
  std::shared_ptr<int> alive = std::make_shared<int>(0);
  Lifetime lifetime() {
    return [weak = std::weak_ptr<int>(alive)] { return std::weak_ptr<const void>(weak); };
  }
};

inline std::shared_ptr<const TableSchema> items_table() {
  auto table = std::make_shared<TableSchema>();
  table->oid = 16400;
  table->schema = "public";
  table->name = "items";
  TableColumn id;
  id.name = "id";
  id.type_oid = 20;
  id.type_name = "int8";
  id.not_null = true;
  id.pk_index = 0;
  TableColumn title;
  title.name = "title";
  title.type_oid = 25;
  title.type_name = "text";
  table->columns = {id, title};
  table->key_columns = {0};
  return table;
}

inline ShapeDefinition items_definition(std::optional<std::string> where = {}) {
  ShapeDefinitionRequest request;
  request.table = "items";
  request.where = std::move(where);
  auto made = ShapeDefinition::make(request, items_table());
  EXPECT_TRUE(std::holds_alternative<ShapeDefinition>(made));
  return std::get<ShapeDefinition>(std::move(made));
}

// A shape on items with an empty initial snapshot (every later change
// applies); persisted under `dir` when given.
inline std::shared_ptr<Shape> ready_shape(const std::string& handle,
                                          std::optional<std::filesystem::path> dir = {},
                                          std::optional<std::string> where = {},
                                          std::shared_ptr<StateStore> store = nullptr) {
  auto shape =
      std::make_shared<Shape>(items_definition(std::move(where)), handle, 4096, std::move(store));
  if (dir) {
    auto files = storage::ShapeFiles::create(*dir / handle, to_json(shape->meta()));
    EXPECT_TRUE(files) << files.error().to_string();
    if (files) shape->attach_files(std::move(files).value());
  }
  SnapshotRows snapshot;
  snapshot.snapshot = PgSnapshot{1, 1, {}};
  auto applied = shape->apply_snapshot(std::move(snapshot));
  EXPECT_TRUE(applied) << applied.error().to_string();
  return shape;
}

inline std::shared_ptr<const replication::Relation> items_relation() {
  static const auto relation = [] {
    auto made = std::make_shared<replication::Relation>();
    made->oid = 16400;
    made->schema = "public";
    made->name = "items";
    made->columns = {{true, "id", 20, -1}, {false, "title", 25, -1}};
    return made;
  }();
  return relation;
}

// A replicated transaction inserting rows `first`..`last` (titles "row <id>").
inline replication::Transaction inserts(replication::Xid xid, replication::Lsn commit_lsn,
                                        long first, long last) {
  replication::Transaction transaction;
  transaction.xid = xid;
  transaction.commit_lsn = commit_lsn;
  transaction.end_lsn = commit_lsn + 8;
  for (long id = first; id <= last; ++id) {
    replication::Change change;
    change.kind = replication::Change::Kind::kInsert;
    change.relation = items_relation();
    using Value = replication::ColumnValue;
    change.new_tuple = {Value{Value::Kind::kText, std::to_string(id)},
                        Value{Value::Kind::kText, "row " + std::to_string(id)}};
    transaction.changes.push_back(std::move(change));
  }
  return transaction;
}

// Applies `transaction` to the shape as the registry does; whether it grew.
inline bool apply(Shape& shape, const replication::Transaction& transaction) {
  std::vector<const replication::Change*> changes;
  for (const auto& change : transaction.changes) changes.push_back(&change);
  return shape.apply_transaction(transaction, changes);
}

}  // namespace shapeproxy::shapes::fixtures

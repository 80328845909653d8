// ShapeCatalog: indexes of shapes by key, handle and table; handles that
// sort after every earlier one, also across a restart; loading saved shapes
// (a broken one is dropped, the others come back); and the removal of idle
// shapes, driven by a manual clock (no sleeps).
#include "shapes/shape_catalog.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "shape_fixtures.h"
#include "support/manual_clock.h"
#include "support/storage_test_files.h"

namespace shapeproxy::shapes {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

class ShapeCatalogTest : public ::testing::Test {
 protected:
  void TearDown() override {
    owner_.alive.reset();
    strand_.run([] {});
    strand_.stop();
  }
  std::unique_ptr<ShapeCatalog> catalog(std::optional<fs::path> dir = {}) {
    return std::make_unique<ShapeCatalog>(strand_.executor(), nullptr, clock_, owner_.lifetime(),
                                          std::move(dir), 4096);
  }

  fixtures::Strand strand_;
  fixtures::Owner owner_;
  std::shared_ptr<testing::ManualClock> clock_ = std::make_shared<testing::ManualClock>();
  testing::TempDir temp_;
  const fs::path dir_ = temp_.path();
};

TEST_F(ShapeCatalogTest, IndexesAShapeByKeyHandleAndTableUntilErased) {
  auto shapes = catalog();
  strand_.run([&] {
    auto a = shapes->add(fixtures::items_definition());
    auto b = shapes->add(fixtures::items_definition("id > 5"));
    EXPECT_NE(a->handle(), b->handle());
    EXPECT_LT(a->handle().substr(9),
              b->handle().substr(9));  // "<hash>-<micros>": later sorts after
    EXPECT_EQ(shapes->by_handle(a->handle()), a);
    EXPECT_EQ(shapes->by_key(b->definition().key), b);
    ASSERT_NE(shapes->of_table(table_key("public", "items")), nullptr);
    EXPECT_EQ(shapes->of_table(table_key("public", "items"))->size(), 2u);
    EXPECT_EQ(shapes->shapes_held(), 2u);
    shapes->erase(a);
    EXPECT_EQ(shapes->by_handle(a->handle()), nullptr);
    EXPECT_EQ(shapes->by_key(a->definition().key), nullptr);
    EXPECT_EQ(shapes->of_table(table_key("public", "items"))->size(), 1u);
    EXPECT_EQ(shapes->size(), 1u);
    EXPECT_EQ(shapes->shapes_held(), 1u);
  });
}

TEST_F(ShapeCatalogTest, IdleShapesWithoutParkedReadersAreRemovedAfterTheTimeout) {
  auto shapes = catalog();
  std::vector<std::string> removed;
  std::shared_ptr<Shape> busy, idle, read_later;
  strand_.run([&] {
    busy = shapes->add(fixtures::items_definition("id > 1"));
    idle = shapes->add(fixtures::items_definition("id > 2"));
    read_later = shapes->add(fixtures::items_definition("id > 3"));
    for (const auto& shape : {busy, idle, read_later}) {
      SnapshotRows rows;
      rows.snapshot = PgSnapshot{1, 1, {}};
      EXPECT_TRUE(shape->apply_snapshot(std::move(rows)));
      shapes->note_read(*shape);
    }
    shapes->start_housekeeping(
        {.idle_timeout = 1h,
         .check_interval = 60s,
         .parked = [&](const std::shared_ptr<Shape>& shape) { return shape == busy; },
         .remove =
             [&](const ShapeCatalog::Shapes& gone) {
               for (const auto& shape : gone) {
                 removed.push_back(shape->handle());
                 shapes->erase(shape);
               }
             }});
  });
  // Each check runs when the clock passes it, then re-arms (pending again).
  auto check_after = [&](std::chrono::minutes by) {
    clock_->advance(by);
    ASSERT_TRUE(strand_.eventually([&] { return clock_->pending() == 1; }));
  };
  check_after(59min);
  EXPECT_TRUE(strand_.run([&] { return removed.empty(); }));
  strand_.run([&] { shapes->note_read(*read_later); });
  check_after(1min);
  ASSERT_EQ(strand_.run([&] { return removed.size(); }), 1u);
  EXPECT_EQ(strand_.run([&] { return removed[0]; }), idle->handle());
  check_after(59min);
  ASSERT_EQ(strand_.run([&] { return removed.size(); }), 2u);
  EXPECT_EQ(strand_.run([&] { return removed[1]; }), read_later->handle());
  EXPECT_EQ(strand_.run([&] { return shapes->size(); }), 1u);  // the one with a parked reader
}

TEST_F(ShapeCatalogTest, SavedShapesComeBackAndABrokenOneIsDropped) {
  std::string saved_handle;
  {
    auto first = catalog(dir_);
    strand_.run([&] {
      ASSERT_TRUE(first->load());
      auto shape = first->add(fixtures::items_definition());
      saved_handle = shape->handle();
      auto files = storage::ShapeFiles::create(dir_ / shape->handle(), to_json(shape->meta()));
      ASSERT_TRUE(files) << files.error().to_string();
      shape->attach_files(std::move(files).value());
      SnapshotRows rows;
      rows.snapshot = PgSnapshot{1, 1, {}};
      ASSERT_TRUE(shape->apply_snapshot(std::move(rows)));
      ASSERT_TRUE(fixtures::apply(*shape, fixtures::inserts(10, 1000, 1, 3)));
      ASSERT_TRUE(shape->files()->write());
    });
  }
  fs::create_directories(dir_ / "broken");
  std::ofstream(dir_ / "broken" / "meta.json") << "{not json";
  auto second = catalog(dir_);
  strand_.run([&] {
    auto loaded = second->load();
    ASSERT_TRUE(loaded) << loaded.error().to_string();
    EXPECT_EQ(loaded.value(), 1u);
    auto shape = second->by_handle(saved_handle);
    ASSERT_NE(shape, nullptr);
    EXPECT_EQ(shape->row_count(), 3u);
    EXPECT_EQ(second->shapes_held(), 1u);
    // A new handle sorts after the loaded one.
    auto next = second->add(fixtures::items_definition("id > 1"));
    EXPECT_LT(saved_handle.substr(9), next->handle().substr(9));
  });
  EXPECT_FALSE(fs::exists(dir_ / "broken"));
}

}  // namespace
}  // namespace shapeproxy::shapes

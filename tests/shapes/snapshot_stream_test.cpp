// SnapshotStream (rfc/0005): a new shape's snapshot rendered while its rows
// arrive. What its readers get must be exactly the first chunk the shape
// keeps, whenever they subscribe; what it renders must be exactly what the
// shape would render itself; a failure must cut its readers, never end them.
#include "shapes/snapshot_stream.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "shape_fixtures.h"
#include "shapes/shape_messages.h"

namespace shapeproxy::shapes {
namespace {

// docs(slug text, part text, title text, note text), keyed by (slug, part):
// keys hold '/' and '"', which the log's key format and JSON both escape.
std::shared_ptr<const TableSchema> docs_table() {
  auto table = std::make_shared<TableSchema>();
  table->oid = 16500;
  table->schema = "public";
  table->name = "docs";
  for (const char* name : {"slug", "part", "title", "note"}) {
    TableColumn column;
    column.name = name;
    column.type_oid = 25;
    column.type_name = "text";
    table->columns.push_back(column);
  }
  table->columns[0].pk_index = 0;
  table->columns[0].not_null = true;
  table->columns[1].pk_index = 1;
  table->columns[1].not_null = true;
  table->key_columns = {0, 1};
  return table;
}

std::shared_ptr<Shape> docs_shape(std::size_t chunk_bytes,
                                  std::optional<std::vector<std::string>> columns = {}) {
  ShapeDefinitionRequest request;
  request.table = "docs";
  request.columns = std::move(columns);
  auto made = ShapeDefinition::make(request, docs_table());
  EXPECT_TRUE(std::holds_alternative<ShapeDefinition>(made));
  return std::make_shared<Shape>(std::get<ShapeDefinition>(std::move(made)), "docs-1", chunk_bytes);
}

// Rows whose values need every kind of escaping, and some NULLs.
std::shared_ptr<const SnapshotRows> tricky_rows(int count) {
  auto rows = std::make_shared<SnapshotRows>();
  rows->snapshot = PgSnapshot{100, 105, {101, 103}};
  const std::vector<std::string> texts = {"plain",
                                          "a/b//c",
                                          "quote \" here",
                                          "back\\slash",
                                          "line\nbreak\ttab\r",
                                          std::string("nul-free \x01\x1f ctrl"),
                                          "unicode \xc3\xa9\xe2\x82\xac",
                                          "",
                                          "/"};
  for (int i = 0; i < count; ++i) {
    Row row(4);
    row[0] = texts[static_cast<std::size_t>(i) % texts.size()] + "/" + std::to_string(i);
    row[1] = "\"" + texts[static_cast<std::size_t>(i + 3) % texts.size()];
    if (i % 5 != 0) row[2] = texts[static_cast<std::size_t>(i + 1) % texts.size()];
    if (i % 7 != 0) row[3] = std::string(static_cast<std::size_t>(i % 90), 'x');
    rows->rows.push_back(std::move(row));
  }
  return rows;
}

// The chunks a shape renders itself for `rows` (the path without a stream).
ShapeLog::Chunks rendered_by_shape(const std::shared_ptr<const SnapshotRows>& rows,
                                   std::size_t chunk_bytes,
                                   std::optional<std::vector<std::string>> columns = {}) {
  auto shape = docs_shape(chunk_bytes, std::move(columns));
  auto applied = shape->apply_snapshot(rows, Shape::SnapshotStorage::kAfterServing);
  EXPECT_TRUE(applied) << applied.error().to_string();
  return shape->log().chunks();
}

std::vector<std::string> bodies(const ShapeLog::Chunks& chunks) {
  std::vector<std::string> out;
  for (const auto& chunk : chunks) out.push_back(chunk.body ? *chunk.body : "<null>");
  return out;
}

// A reader: the bytes it got and how its body ended (unset: not yet).
struct Reader {
  std::string bytes;
  int pieces = 0;
  std::optional<bool> complete;
  int ends = 0;

  BodyStream::Sink sink() {
    return {[this](std::shared_ptr<const std::string> piece) {
              EXPECT_FALSE(complete.has_value()) << "bytes after the end";
              bytes += *piece;
              ++pieces;
            },
            [this](bool whole) {
              complete = whole;
              ++ends;
            }};
  }
};

void add_in_batches(SnapshotStream& stream, const SnapshotRows& rows, std::size_t batch) {
  std::span<const Row> all(rows.rows);
  for (std::size_t at = 0; at < all.size(); at += batch)
    stream.add(all.subspan(at, std::min(batch, all.size() - at)));
}

// The renderer writes the escaped key straight into the message; the bytes
// are those of append_snapshot_message() with the shape's row key (the
// renderer a compaction still uses), whatever the key and values hold.
TEST(SnapshotStreamTest, TheRendererWritesTheBytesOfAppendSnapshotMessage) {
  for (auto columns : {std::optional<std::vector<std::string>>{},
                       std::optional<std::vector<std::string>>{{"slug", "part", "note"}}}) {
    auto shape = docs_shape(4096, columns);
    const SnapshotRenderer renderer = shape->renderer();
    const std::string relation_json = R"(["public","docs"])";
    auto rows = tricky_rows(60);
    for (const Row& row : rows->rows) {
      std::string rendered, expected;
      renderer.append_message(rendered, row);
      append_snapshot_message(expected, shape->table(), shape->definition().selected, relation_json,
                              shape->row_key(row), row);
      EXPECT_EQ(rendered, expected);
    }
  }
}

TEST(SnapshotStreamTest, RendersTheChunksTheShapeRendersItself) {
  for (std::size_t chunk_bytes : {std::size_t{1024}, std::size_t{4096}, std::size_t{1} << 20}) {
    for (std::size_t batch : {std::size_t{1}, std::size_t{7}, std::size_t{1000}}) {
      auto rows = tricky_rows(300);
      auto shape = docs_shape(chunk_bytes);
      auto stream = std::make_shared<SnapshotStream>(shape->renderer(), chunk_bytes,
                                                     std::function<void()>{}, 100);
      add_in_batches(*stream, *rows, batch);
      stream->finish(rows->snapshot);
      EXPECT_EQ(stream->rows(), 300u);
      auto expected = bodies(rendered_by_shape(rows, chunk_bytes));
      EXPECT_EQ(bodies(stream->take_chunks()), expected)
          << "chunk_bytes " << chunk_bytes << ", batch " << batch;
      if (chunk_bytes == 1024) {
        EXPECT_GT(expected.size(), 10u);  // many chunks compared
      }
    }
  }
  // Selected columns, and an empty snapshot (only its snapshot-end).
  auto rows = tricky_rows(50);
  auto shape = docs_shape(4096, std::vector<std::string>{"slug", "part", "note"});
  SnapshotStream stream(shape->renderer(), 4096);
  stream.add(rows->rows);
  stream.finish(rows->snapshot);
  EXPECT_EQ(
      bodies(stream.take_chunks()),
      bodies(rendered_by_shape(rows, 4096, std::vector<std::string>{"slug", "part", "note"})));
  auto none = std::make_shared<SnapshotRows>();
  none->snapshot = PgSnapshot{7, 7, {}};
  SnapshotStream empty(docs_shape(4096)->renderer(), 4096);
  empty.finish(none->snapshot);
  EXPECT_EQ(bodies(empty.take_chunks()), bodies(rendered_by_shape(none, 4096)));
}

TEST(SnapshotStreamTest, EveryReaderGetsTheWholeFirstChunkWheneverItSubscribes) {
  auto rows = tricky_rows(400);
  const std::size_t chunk_bytes = 16 * 1024;
  auto shape = docs_shape(chunk_bytes);
  int started = 0;
  auto stream = std::make_shared<SnapshotStream>(
      shape->renderer(), chunk_bytes, [&] { ++started; }, 512);
  Reader early, middle, late;
  auto unsubscribe_early = stream->subscribe(early.sink());
  EXPECT_FALSE(stream->started());
  EXPECT_EQ(early.pieces, 0);
  std::span<const Row> all(rows->rows);
  stream->add(all.first(20));
  EXPECT_TRUE(stream->started());
  EXPECT_EQ(started, 1);
  EXPECT_GT(early.pieces, 0);
  EXPECT_FALSE(early.complete);
  auto unsubscribe_middle = stream->subscribe(middle.sink());
  EXPECT_EQ(middle.bytes, early.bytes);  // what was out so far, at once
  stream->add(all.subspan(20));          // closes the first chunk (16 KB)
  EXPECT_EQ(early.complete, std::optional<bool>(true));
  EXPECT_EQ(middle.complete, std::optional<bool>(true));
  (void)stream->subscribe(late.sink());  // after the first chunk ended
  stream->finish(rows->snapshot);
  EXPECT_EQ(started, 1);
  auto chunks = stream->take_chunks();
  ASSERT_GT(chunks.size(), 1u);
  for (const Reader* reader : {&early, &middle, &late}) {
    EXPECT_EQ(reader->bytes, *chunks[0].body);
    EXPECT_EQ(reader->complete, std::optional<bool>(true));
    EXPECT_EQ(reader->ends, 1);
  }
  EXPECT_GT(early.pieces, 3);  // it came in pieces, not at the end
  EXPECT_EQ(stream->subscribers(), 0u);
  unsubscribe_early();  // after the end: nothing happens
  unsubscribe_middle();
}

TEST(SnapshotStreamTest, AFailedStreamCutsItsReadersAndRendersNothingMore) {
  auto rows = tricky_rows(100);
  auto shape = docs_shape(1 << 20);
  auto stream =
      std::make_shared<SnapshotStream>(shape->renderer(), 1 << 20, std::function<void()>{}, 256);
  Reader reader, gone;
  (void)stream->subscribe(reader.sink());
  auto unsubscribe = stream->subscribe(gone.sink());
  stream->add(std::span<const Row>(rows->rows).first(50));
  ASSERT_GT(reader.pieces, 0);
  unsubscribe();
  const int gone_pieces = gone.pieces;
  stream->fail();
  EXPECT_EQ(reader.complete, std::optional<bool>(false));
  EXPECT_EQ(gone.pieces, gone_pieces);
  EXPECT_FALSE(gone.complete);  // unsubscribed: no end either
  EXPECT_TRUE(stream->failed());
  EXPECT_FALSE(stream->started());
  // Later readers are cut at once; later rows and the end change nothing.
  Reader after;
  (void)stream->subscribe(after.sink());
  EXPECT_EQ(after.complete, std::optional<bool>(false));
  EXPECT_TRUE(after.bytes.empty());
  stream->add(std::span<const Row>(rows->rows).subspan(50));
  stream->finish(rows->snapshot);
  EXPECT_TRUE(stream->take_chunks().empty());
  EXPECT_EQ(reader.ends, 1);
  // A finished stream cannot fail any more.
  SnapshotStream done(shape->renderer(), 1 << 20);
  Reader whole;
  (void)done.subscribe(whole.sink());
  done.add(rows->rows);
  done.finish(rows->snapshot);
  done.fail();
  EXPECT_EQ(whole.complete, std::optional<bool>(true));
  EXPECT_FALSE(done.failed());
}

}  // namespace
}  // namespace shapeproxy::shapes

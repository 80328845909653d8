#include "shape_messages.h"

#include <gtest/gtest.h>

namespace shapeproxy::client::detail {
namespace {

ParsedBody parsed(const std::variant<ParsedBody, std::string>& result) {
  if (auto* error = std::get_if<std::string>(&result)) {
    ADD_FAILURE() << *error;
    return {};
  }
  return std::get<ParsedBody>(result);
}

TEST(ShapeMessages, ParsesChangesAndTrailingUpToDate) {
  auto result = parse_shape_body(R"([
    {"key":"\"public\".\"items\"/\"1\"","value":{"id":"1","title":"a"},
     "headers":{"operation":"insert","relation":["public","items"]}},
    {"key":"\"public\".\"items\"/\"1\"","value":{"id":"1","title":"b"},"old_value":{"title":"a"},
     "headers":{"operation":"update","lsn":"123","op_position":0}},
    {"key":"\"public\".\"items\"/\"2\"","value":{"id":"2"},"headers":{"operation":"delete"}},
    {"headers":{"control":"up-to-date","global_last_seen_lsn":"123"}}])");
  const auto body = parsed(result);
  ASSERT_EQ(body.messages.size(), 4u);
  EXPECT_TRUE(body.ends_up_to_date);
  EXPECT_FALSE(body.must_refetch);
  const auto& insert = std::get<ChangeMessage>(body.messages[0]);
  EXPECT_EQ(insert.kind, ChangeKind::kInsert);
  EXPECT_EQ(insert.key, "\"public\".\"items\"/\"1\"");
  EXPECT_EQ(insert.value["title"], "a");
  const auto& update = std::get<ChangeMessage>(body.messages[1]);
  EXPECT_EQ(update.kind, ChangeKind::kUpdate);
  EXPECT_EQ(update.old_value["title"], "a");
  EXPECT_EQ(std::get<ChangeMessage>(body.messages[2]).kind, ChangeKind::kDelete);
}

TEST(ShapeMessages, UpToDateCountsOnlyAsTheLastMessage) {
  const auto body = parsed(parse_shape_body(
      R"([{"headers":{"control":"up-to-date"}},{"key":"k","value":{},"headers":{"operation":"insert"}}])"));
  EXPECT_FALSE(body.ends_up_to_date);
}

TEST(ShapeMessages, MustRefetchAndSnapshotEndAreControls) {
  const auto body = parsed(parse_shape_body(
      R"([{"headers":{"control":"snapshot-end","xmin":"1"}},{"headers":{"control":"must-refetch"}}])"));
  EXPECT_TRUE(body.must_refetch);
  EXPECT_EQ(std::get<ControlMessage>(body.messages[0]).kind, ControlKind::kSnapshotEnd);
}

TEST(ShapeMessages, EmptyBodiesAreEmptyArrays) {
  EXPECT_TRUE(parsed(parse_shape_body("")).messages.empty());
  EXPECT_TRUE(parsed(parse_shape_body("[]")).messages.empty());
}

TEST(ShapeMessages, MalformedBodiesAreErrorsNotExceptions) {
  for (std::string_view bad :
       {"{", "{}", "[1]", R"([{"key":"k"}])", R"([{"headers":{"operation":"upsert"},"key":"k"}])",
        R"([{"headers":{"operation":"insert"}}])"}) {
    auto result = parse_shape_body(bad);
    EXPECT_TRUE(std::holds_alternative<std::string>(result)) << bad;
  }
}

}  // namespace
}  // namespace shapeproxy::client::detail

#include "shapes/shape_messages.h"

#include "shapes/json_text.h"

namespace shapeproxy::shapes {

void append_row_values(std::string& out, const TableSchema& table, const Row& row,
                       const std::vector<std::size_t>& columns) {
  out += '{';
  bool first = true;
  for (std::size_t index : columns) {
    if (!first) out += ',';
    first = false;
    append_json_string(out, table.columns[index].name);
    out += ':';
    if (index < row.size() && row[index]) {
      append_json_string(out, *row[index]);
    } else {
      out += "null";
    }
  }
  out += '}';
}

void append_snapshot_message(std::string& out, const TableSchema& table,
                             const std::vector<std::size_t>& selected,
                             const std::string& relation_json, std::string_view key,
                             const Row& row) {
  out += "{\"key\":";
  append_json_string(out, key);
  out += ",\"value\":";
  append_row_values(out, table, row, selected);
  out += ",\"headers\":{\"operation\":\"insert\",\"relation\":";
  out += relation_json;
  out += "}}";
}

SnapshotRenderer::SnapshotRenderer(std::shared_ptr<const TableSchema> table,
                                   std::vector<std::size_t> selected,
                                   const std::string& relation_json, const std::string& key_prefix)
    : table_(std::move(table)), selected_(std::move(selected)) {
  head_ = "{\"key\":";
  append_json_string(head_, key_prefix);
  head_.pop_back();  // the key goes on
  for (std::size_t i = 0; i < selected_.size(); ++i) {
    std::string name = i > 0 ? "," : "";
    append_json_string(name, table_->columns[selected_[i]].name);
    name += ':';
    names_.push_back(std::move(name));
  }
  tail_ = "},\"headers\":{\"operation\":\"insert\",\"relation\":" + relation_json + "}}";
}

void SnapshotRenderer::append_message(std::string& out, const Row& row) const {
  out += head_;
  // row_key()'s bytes, escaped for JSON as they are made.
  for (std::size_t index : table_->key_columns) {
    out += '/';
    if (index >= row.size() || !row[index]) {
      out += '_';
      continue;
    }
    out += "\\\"";
    std::string_view value = *row[index];
    for (std::size_t slash = value.find('/'); slash != std::string_view::npos;
         slash = value.find('/')) {
      append_json_escaped(out, value.substr(0, slash + 1));
      out += '/';
      value.remove_prefix(slash + 1);
    }
    append_json_escaped(out, value);
    out += "\\\"";
  }
  out += "\",\"value\":{";
  for (std::size_t i = 0; i < selected_.size(); ++i) {
    out += names_[i];
    const std::size_t index = selected_[i];
    if (index < row.size() && row[index]) {
      append_json_string(out, *row[index]);
    } else {
      out += "null";
    }
  }
  out += tail_;
}

std::string snapshot_end_message(const PgSnapshot& snapshot) {
  std::string out = R"({"headers":{"control":"snapshot-end","xmin":")" +
                    std::to_string(snapshot.xmin) + R"(","xmax":")" +
                    std::to_string(snapshot.xmax) + R"(","xip_list":[)";
  for (std::size_t i = 0; i < snapshot.xip.size(); ++i)
    out += (i > 0 ? ",\"" : "\"") + std::to_string(snapshot.xip[i]) + '"';
  return out + "]}}";
}

void SnapshotChunkWriter::add(std::string_view message) {
  if (starts_body(message)) close_body();
  if (body_.size() == 1 && body_.capacity() < 2 * message.size()) {
    // Sized from the first message of the body: one allocation for the
    // whole body instead of doubling (and copying) its way up.
    const double estimate =
        static_cast<double>(expected_ - std::min(seen_, expected_)) * (message.size() + 1) * 1.1;
    body_.reserve(static_cast<std::size_t>(
        std::min(estimate + 64, static_cast<double>(chunk_bytes_) + message.size() + 2)));
  }
  if (body_.size() > 1) body_ += ',';
  body_ += message;
  ++seen_;
}

ShapeLog::Chunks SnapshotChunkWriter::finish() {
  close_body();
  return std::move(chunks_);
}

std::string SnapshotChunkWriter::take_body() {
  body_ += ']';
  return std::exchange(body_, "[");
}

void SnapshotChunkWriter::close_body() {
  chunks_.push_back({std::make_shared<const std::string>(take_body()), {}});
}

namespace {

bool replay_parsed(ShapeState& rows, const TableSchema& table, const nlohmann::json& parsed) {
  if (!parsed.is_object()) return false;
  if (auto headers = parsed.find("headers");
      headers != parsed.end() && headers->is_object() && headers->contains("control"))
    return true;  // snapshot-end: no row
  auto key = parsed.find("key");
  if (key == parsed.end() || !key->is_string()) return false;
  std::string operation = "insert";
  if (auto headers = parsed.find("headers"); headers != parsed.end() && headers->is_object()) {
    auto found = headers->find("operation");
    if (found != headers->end()) {
      if (!found->is_string()) return false;
      operation = found->get<std::string>();
    }
  }
  const auto& row_key = key->get_ref<const std::string&>();
  if (operation == "delete") {
    rows.erase(row_key);
    return true;
  }
  auto value = parsed.find("value");
  if (value == parsed.end() || !value->is_object()) return false;
  for (const auto& [name, column] : value->items()) {
    if (!column.is_null() && !column.is_string()) return false;
  }
  Row row = rows.get(row_key).value_or(Row{});
  if (row.size() != table.columns.size()) row.assign(table.columns.size(), std::nullopt);
  for (const auto& [name, column] : value->items()) {
    auto index = table.column_index(name);
    if (!index) continue;
    row[*index] =
        column.is_null() ? std::nullopt : std::optional<std::string>(column.get<std::string>());
  }
  rows.put(row_key, std::move(row));
  return true;
}

}  // namespace

bool replay_message(ShapeState& rows, const TableSchema& table, std::string_view message) {
  auto parsed = nlohmann::json::parse(message, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_array()) {
    bool all = true;
    for (const auto& each : parsed) all = replay_parsed(rows, table, each) && all;
    return all;
  }
  return replay_parsed(rows, table, parsed);
}

Result<ShapeLog::Chunks> store_chunks(const std::filesystem::path& path,
                                      const ShapeLog::Chunks& chunks,
                                      const std::function<bool()>& stopped) {
  std::vector<std::string_view> bodies;
  bodies.reserve(chunks.size());
  for (const auto& chunk : chunks) bodies.emplace_back(*chunk.body);
  auto stored = storage::ShapeFiles::write_chunk_file(path, bodies, stopped);
  if (!stored) return stored.error();
  return ShapeLog::on_disk(stored.value());
}

}  // namespace shapeproxy::shapes

#include "replication/publication.h"

#include <spdlog/spdlog.h>

#include "common/text.h"
#include "pg/async_connection.h"

namespace shapeproxy::replication {
namespace asio = boost::asio;

namespace {

Error explain_privilege_error(const Error& error, const std::string& what) {
  if (error.code != "42501") return error;
  return Error{"insufficient_privilege", error.message + " (" + what + ")",
               "the role needs CREATE on the database to create the publication, and must own "
               "the tables it serves; or have an administrator run CREATE PUBLICATION / ALTER "
               "PUBLICATION ... ADD TABLE"};
}

}  // namespace

asio::awaitable<Result<void>> ensure_publication(pg::AsyncConnection& connection,
                                                 const std::string& publication) {
  std::vector<std::optional<std::string>> params{publication};
  auto found = co_await connection.query_params("SELECT 1 FROM pg_publication WHERE pubname = $1",
                                                std::move(params));
  if (!found) co_return found.error();
  if (PQntuples(found->get()) > 0) co_return Result<void>{};
  auto created =
      co_await connection.query("CREATE PUBLICATION " + pg::quote_identifier(publication));
  if (!created && created.error().code != "42710") {  // 42710: created concurrently
    co_return explain_privilege_error(created.error(), "creating publication " + publication);
  }
  spdlog::info("replication: created publication \"{}\"", publication);
  co_return Result<void>{};
}

asio::awaitable<Result<void>> add_table_to_publication(pg::AsyncConnection& connection,
                                                       const std::string& publication,
                                                       const TableName& table) {
  std::vector<std::optional<std::string>> params{publication, table.schema, table.name};
  auto present = co_await connection.query_params(
      "SELECT p.puballtables OR EXISTS (SELECT 1 FROM pg_publication_tables t "
      "WHERE t.pubname = p.pubname AND t.schemaname = $2 AND t.tablename = $3) "
      "FROM pg_publication p WHERE p.pubname = $1",
      std::move(params));
  if (!present) co_return present.error();
  if (PQntuples(present->get()) == 0) {
    // Not created yet: a shape asked for right after start, before the
    // proxy's background preparation made it (it got a 503 for that).
    auto ensured = co_await ensure_publication(connection, publication);
    if (!ensured) co_return ensured.error();
  } else if (pg::get_value(present->get(), 0, 0).value_or("f") == "t") {
    co_return Result<void>{};
  }
  auto added = co_await connection.query("ALTER PUBLICATION " + pg::quote_identifier(publication) +
                                         " ADD TABLE " + pg::quote_identifier(table.schema) + "." +
                                         pg::quote_identifier(table.name));
  if (!added && added.error().code != "42710") {  // 42710: already a member
    co_return explain_privilege_error(added.error(), "adding " + table.schema + "." + table.name +
                                                         " to publication " + publication);
  }
  spdlog::info("replication: added {}.{} to publication \"{}\"", text::log_safe(table.schema),
               text::log_safe(table.name), publication);
  co_return Result<void>{};
}

}  // namespace shapeproxy::replication

// The publication that decides which tables the slot streams. It is created
// empty (any role with CREATE on the database may do that, no superuser
// needed), and tables are added as they are served: ALTER PUBLICATION ... ADD
// TABLE needs only ownership of the table.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <string>

#include "common/result.h"

namespace shapeproxy::pg {
class AsyncConnection;
}

namespace shapeproxy::replication {

struct TableName {
  std::string schema = "public";
  std::string name;
};

// Creates the publication if it does not exist.
boost::asio::awaitable<Result<void>> ensure_publication(pg::AsyncConnection& connection,
                                                        const std::string& publication);

// Adds the table to the publication unless it is already in it (or the
// publication is FOR ALL TABLES); creates the publication first if it does
// not exist yet (a shape asked for before the proxy's start-up made it).
boost::asio::awaitable<Result<void>> add_table_to_publication(pg::AsyncConnection& connection,
                                                              const std::string& publication,
                                                              const TableName& table);

}  // namespace shapeproxy::replication

#include "app/demo_data.h"

#include "pg/connection.h"

namespace shapeproxy::app {

Result<void> ensure_demo_data(const embedded::EmbeddedPostgres& cluster,
                              const std::string& publication) {
  auto admin = pg::Connection::open(cluster.conninfo("postgres"));
  if (!admin) return admin.error();
  auto exists = admin->exec_params("SELECT 1 FROM pg_database WHERE datname = $1",
                                   {std::string(kDemoDatabase)});
  if (!exists) return exists.error();
  if (PQntuples(exists->get()) == 0) {
    auto created = admin->exec(std::string("CREATE DATABASE ") + kDemoDatabase);
    if (!created) return created.error();
  }
  auto role =
      admin->exec_params("SELECT 1 FROM pg_roles WHERE rolname = $1", {std::string(kProxyRole)});
  if (!role) return role.error();
  if (PQntuples(role->get()) == 0) {
    const std::string name = pg::quote_identifier(kProxyRole);
    auto created = admin->exec("CREATE ROLE " + name +
                               " LOGIN REPLICATION; GRANT pg_read_all_data TO " + name);
    if (!created) return created.error();
  }
  auto demo = pg::Connection::open(cluster.conninfo(kDemoDatabase));
  if (!demo) return demo.error();
  auto seeded = demo->exec(
      "CREATE TABLE IF NOT EXISTS items ("
      "  id bigserial PRIMARY KEY,"
      "  title text NOT NULL,"
      "  done boolean NOT NULL DEFAULT false,"
      "  created_at timestamptz NOT NULL DEFAULT now());"
      "INSERT INTO items (title, done) SELECT * FROM (VALUES"
      "  ('Read the shapeproxy README', true),"
      "  ('Curl /v1/shape?table=items&offset=-1', false),"
      "  ('Insert a row and watch it arrive live', false),"
      "  ('Stop replication and see fallback mode', false)) AS seed"
      " WHERE NOT EXISTS (SELECT 1 FROM items)");
  if (!seeded) return seeded.error();
  auto found = demo->exec_params("SELECT 1 FROM pg_publication WHERE pubname = $1", {publication});
  if (!found) return found.error();
  if (PQntuples(found->get()) == 0) {
    auto created =
        demo->exec("CREATE PUBLICATION " + pg::quote_identifier(publication) + " FOR ALL TABLES");
    if (!created) return created.error();
  }
  return {};
}

}  // namespace shapeproxy::app

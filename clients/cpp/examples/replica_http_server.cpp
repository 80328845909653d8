// Example: keep a replica of one shape and serve it over HTTP, so reads never
// touch the database or the proxy.
//
//   replica_http_server --endpoint http://127.0.0.1:3000 --table items --port 8080
//   curl localhost:8080/rows            # every row, as a JSON array
//   curl localhost:8080/rows/<key>      # one row by shape key (URL-encoded)
//   curl localhost:8080/count           # {"count": N}
//   curl localhost:8080/status          # sync state, fallback flag, offset, handle
//
// One thread accepts and answers requests one at a time (enough for an
// example); the replica syncs on its own I/O thread.
#include <shapeproxy/replica_client.h>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <string>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using shapeproxy::client::ReplicaClient;

namespace {

std::string percent_decode(std::string_view in) {
  std::string out;
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%' && i + 2 < in.size()) {
      out += static_cast<char>(std::stoi(std::string(in.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += in[i];
    }
  }
  return out;
}

nlohmann::json row_json(const shapeproxy::client::Row& row) {
  return {{"key", row.key}, {"value", row.value}};
}

http::response<http::string_body> answer(const ReplicaClient& replica, std::string_view target) {
  http::response<http::string_body> response(http::status::ok, 11);
  response.set(http::field::content_type, "application/json");
  nlohmann::json body;
  if (target == "/rows") {
    body = nlohmann::json::array();
    for (const auto& row : replica.all()) body.push_back(row_json(row));
  } else if (target.starts_with("/rows/")) {
    auto row = replica.get(percent_decode(target.substr(6)));
    if (row) {
      body = row_json(*row);
    } else {
      response.result(http::status::not_found);
      body = {{"message", "no row with that key"}};
    }
  } else if (target == "/count") {
    body = {{"count", replica.count()}};
  } else if (target == "/status") {
    auto status = replica.status();
    body = {{"state", shapeproxy::client::to_string(status.state)},
            {"endpoint", status.endpoint},
            {"fallback", replica.is_fallback()},
            {"offset", replica.last_offset()},
            {"handle", replica.handle()}};
  } else {
    response.result(http::status::not_found);
    body = {{"message", "routes: /rows, /rows/<key>, /count, /status"}};
  }
  response.body() = body.dump();
  response.prepare_payload();
  return response;
}

}  // namespace

int main(int argc, char** argv) {
  shapeproxy::client::ReplicaClientOptions options;
  unsigned short port = 8080;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--endpoint")
      options.endpoints.push_back(argv[i + 1]);
    else if (flag == "--table")
      options.table = argv[i + 1];
    else if (flag == "--where")
      options.where = argv[i + 1];
    else if (flag == "--port")
      port = static_cast<unsigned short>(std::atoi(argv[i + 1]));
    else {
      std::cerr
          << "usage: replica_http_server --endpoint URL... --table T [--where SQL] [--port N]\n";
      return 2;
    }
  }
  if (options.endpoints.empty()) options.endpoints.push_back("http://127.0.0.1:3000");
  if (options.table.empty()) options.table = "items";

  ReplicaClient replica(options);
  auto logging = replica.on_status([](const shapeproxy::client::SyncStatus& status) {
    std::cerr << "replica: " << shapeproxy::client::to_string(status.state) << " "
              << status.endpoint << " " << status.detail << std::endl;
  });
  if (!replica.start()) {
    std::cerr << "cannot start: " << replica.status().detail << std::endl;
    return 1;
  }

  asio::io_context ioc;
  asio::ip::tcp::acceptor acceptor(ioc, {asio::ip::make_address("127.0.0.1"), port});
  std::cerr << "serving the replica of '" << options.table
            << "' on http://127.0.0.1:" << acceptor.local_endpoint().port() << std::endl;
  while (true) {
    asio::ip::tcp::socket socket(ioc);
    acceptor.accept(socket);
    beast::flat_buffer buffer;
    http::request<http::empty_body> request;
    beast::error_code ec;
    http::read(socket, buffer, request, ec);
    if (ec) continue;
    auto response = answer(replica, request.target());
    http::write(socket, response, ec);
    socket.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  }
}

#include "support/http_test_client.h"

#include <gtest/gtest.h>
#include <poll.h>

#include <algorithm>
#include <boost/asio/buffer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <cctype>
#include <cerrno>

namespace shapeproxy::testing {

namespace net = boost::asio;
namespace bhttp = boost::beast::http;

HttpTestConnection::HttpTestConnection(net::io_context& ioc, unsigned short port) : socket_(ioc) {
  socket_.connect({net::ip::make_address("127.0.0.1"), port});
}

void HttpTestConnection::send(HttpVerb method, std::string_view target,
                              const HttpHeaders& headers) {
  bhttp::request<bhttp::empty_body> request{method, target, 11};
  request.set(bhttp::field::host, "localhost");
  for (const auto& field : headers) request.set(field.name_string(), field.value());
  bhttp::write(socket_, request);
}

void HttpTestConnection::send_raw(std::string_view bytes) {
  net::write(socket_, net::buffer(bytes.data(), bytes.size()));
}

HttpResponse HttpTestConnection::read_response() {
  HttpResponse response;
  bhttp::read(socket_, buffer_, response);
  return response;
}

HttpResponse HttpTestConnection::request(HttpVerb method, std::string_view target,
                                         const HttpHeaders& headers) {
  send(method, target, headers);
  return read_response();
}

void HttpTestConnection::read_header() {
  bhttp::response_parser<bhttp::string_body> parser;
  bhttp::read_header(socket_, buffer_, parser);
}

// Bytes already buffered by an earlier parsed read come first.
static std::string take_buffered(boost::beast::flat_buffer& buffer) {
  std::string data(static_cast<const char*>(buffer.data().data()), buffer.size());
  buffer.consume(buffer.size());
  return data;
}

std::string HttpTestConnection::read_raw_response() {
  std::string data = take_buffered(buffer_);
  char buf[4096];
  size_t header_end;
  while ((header_end = data.find("\r\n\r\n")) == std::string::npos) {
    size_t n = socket_.read_some(net::buffer(buf));
    data.append(buf, n);
  }
  std::string head = data.substr(0, header_end);
  std::transform(head.begin(), head.end(), head.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  size_t cl = head.find("\r\ncontent-length: ");
  EXPECT_NE(cl, std::string::npos) << data;
  size_t length = cl == std::string::npos ? 0 : std::stoul(head.substr(cl + 18));
  size_t total = header_end + 4 + length;
  while (data.size() < total) {
    size_t n = socket_.read_some(net::buffer(buf));
    data.append(buf, n);
  }
  EXPECT_EQ(data.size(), total) << "bytes after the response";
  return data;
}

const std::string& HttpTestConnection::read_until(std::string& so_far, std::string_view needle) {
  so_far += take_buffered(buffer_);
  char buf[4096];
  while (so_far.find(needle) == std::string::npos) {
    boost::system::error_code ec;
    size_t n = socket_.read_some(net::buffer(buf), ec);
    if (ec) break;
    so_far.append(buf, n);
  }
  return so_far;
}

bool HttpTestConnection::closed_by_server(std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd readable{socket_.native_handle(), POLLIN, 0};
    int ready = ::poll(&readable, 1, static_cast<int>(std::max<long>(0, left.count())));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return false;  // still open after `limit`
    char c;
    boost::system::error_code ec;
    socket_.read_some(net::buffer(&c, 1), ec);
    return ec == net::error::eof || ec == net::error::connection_reset;
  }
}

void HttpTestConnection::close() {
  boost::system::error_code ignored;
  socket_.close(ignored);
}

HttpResponse HttpTestClient::request(HttpVerb method, std::string_view target,
                                     const HttpHeaders& headers) {
  auto connection = connect();
  return connection.request(method, target, headers);
}

HttpResponse HttpTestClient::raw(std::string_view bytes) {
  auto connection = connect();
  connection.send_raw(bytes);
  return connection.read_response();
}

HttpResponse parse_http_response(std::string_view raw) {
  bhttp::response_parser<bhttp::string_body> parser;
  parser.eager(true);
  boost::system::error_code ec;
  parser.put(net::buffer(raw.data(), raw.size()), ec);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_TRUE(parser.is_done());
  return parser.release();
}

}  // namespace shapeproxy::testing

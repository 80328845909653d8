// A small synchronous HTTP/1.1 client for the tests of the proxy's HTTP
// layer (transport, shape API, status endpoints): requests with any method,
// target and headers on a fresh or a kept-alive connection, raw bytes where
// a test needs the exact wire form, and a check that the server closed a
// connection. One implementation, so every suite speaks HTTP the same way.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/verb.hpp>
#include <chrono>
#include <string>
#include <string_view>

namespace shapeproxy::testing {

using HttpResponse = boost::beast::http::response<boost::beast::http::string_body>;
using HttpHeaders = boost::beast::http::fields;
using HttpVerb = boost::beast::http::verb;

// One client connection to the server; it stays open (keep-alive) until the
// object goes or close() is called. Reads block until the server answers.
class HttpTestConnection {
 public:
  HttpTestConnection(boost::asio::io_context& ioc, unsigned short port);

  // Writes a request without a body (HTTP/1.1, Host: localhost, plus
  // `headers`).
  void send(HttpVerb method, std::string_view target, const HttpHeaders& headers = {});
  void send_get(std::string_view target, const HttpHeaders& headers = {}) {
    send(HttpVerb::get, target, headers);
  }
  // Writes `bytes` as they are (malformed requests, partial headers).
  void send_raw(std::string_view bytes);

  // Reads one response; the connection can carry the next request.
  HttpResponse read_response();
  // send() then read_response().
  HttpResponse request(HttpVerb method, std::string_view target, const HttpHeaders& headers = {});
  // Reads the header of a response, leaving its body unread.
  void read_header();
  // Reads exactly one content-length framed response, as the bytes on the
  // wire (fails the test when it has no content-length or more bytes follow).
  std::string read_raw_response();
  // Appends what arrives to `so_far` until it holds `needle` (or the
  // connection ends); returns `so_far`.
  const std::string& read_until(std::string& so_far, std::string_view needle);

  // True when the server closes the connection (EOF or reset) within `limit`.
  bool closed_by_server(std::chrono::milliseconds limit);
  void close();

  boost::asio::ip::tcp::socket& socket() { return socket_; }

 private:
  boost::asio::ip::tcp::socket socket_;
  boost::beast::flat_buffer buffer_;
};

// Connections to a server on 127.0.0.1:`port`.
class HttpTestClient {
 public:
  explicit HttpTestClient(unsigned short port) : port_(port) {}
  HttpTestClient(const HttpTestClient&) = delete;
  HttpTestClient& operator=(const HttpTestClient&) = delete;

  HttpTestConnection connect() { return HttpTestConnection(ioc_, port_); }
  // One request on a fresh connection.
  HttpResponse request(HttpVerb method, std::string_view target, const HttpHeaders& headers = {});
  HttpResponse get(std::string_view target, const HttpHeaders& headers = {}) {
    return request(HttpVerb::get, target, headers);
  }
  // Sends `bytes` on a fresh connection and reads one response.
  HttpResponse raw(std::string_view bytes);

 private:
  boost::asio::io_context ioc_;  // only for the sockets: all I/O is synchronous
  unsigned short port_;
};

// Parses one complete response from its raw bytes (fails the test when they
// are malformed or incomplete).
HttpResponse parse_http_response(std::string_view raw);

}  // namespace shapeproxy::testing

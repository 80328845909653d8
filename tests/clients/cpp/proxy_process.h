// Test helper: runs the real shapeproxy binary as a child process on a free
// port with a temp data dir, waits until it is healthy, and kills it in the
// destructor (it also dies with the test process). Plus a tiny blocking HTTP
// client for the test's own requests (DELETE /v1/shape, /v1/status).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace shapeproxy::testing {

struct HttpReply {
  int status = 0;  // 0: no answer
  std::string body;
};

HttpReply http_request(const std::string& method, unsigned short port, const std::string& target);

unsigned short free_port();

class ProxyProcess {
 public:
  // `args` come after the database URL, port, data dir, slot and publication.
  ProxyProcess(std::string database_url, std::string name, std::vector<std::string> args = {});
  ~ProxyProcess();
  ProxyProcess(const ProxyProcess&) = delete;
  ProxyProcess& operator=(const ProxyProcess&) = delete;

  // Waits for GET /v1/health to say active; false (and the log tail) on timeout.
  bool wait_healthy(std::chrono::milliseconds timeout);
  void kill_now();  // SIGKILL, as a crash
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  unsigned short port() const { return port_; }
  std::string log_tail() const;

 private:
  std::string dir_;
  unsigned short port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace shapeproxy::testing

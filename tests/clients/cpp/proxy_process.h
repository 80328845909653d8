// Test helper: runs the real shapeproxy binary as a child process on a free
// port with a temp data dir, waits until it is healthy, and kills it in the
// destructor (it also dies with the test process). Plus a tiny blocking HTTP
// client for the test's own requests (DELETE /v1/shape, /v1/status).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace shapeproxy::testing {

struct HttpReply {
  int status = 0;  // 0: no answer
  std::string body;
};

HttpReply http_request(const std::string& method, unsigned short port, const std::string& target);

unsigned short free_port();

// A child process with its output in `log_path`; SIGTERM (then SIGKILL) in
// the destructor, and SIGKILL if the test process dies first.
class ChildProcess {
 public:
  ChildProcess(std::vector<std::string> argv, const std::string& log_path);
  ~ChildProcess() { terminate(); }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  bool running();  // false once it has exited (reaped)
  void terminate();
  void kill_now();

 private:
  pid_t pid_ = -1;
};

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
  std::unique_ptr<ChildProcess> process_;
};

}  // namespace shapeproxy::testing

#include "proxy_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/http/verb.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "support/http_test_client.h"

namespace shapeproxy::testing {

namespace asio = boost::asio;
namespace http = boost::beast::http;

HttpReply http_request(const std::string& method, unsigned short port, const std::string& target) {
  try {
    HttpTestClient client(port);
    auto response = client.request(http::string_to_verb(method), target);
    return {static_cast<int>(response.result_int()), response.body()};
  } catch (const std::exception&) {
    return {};  // status 0: no answer
  }
}

unsigned short free_port() {
  asio::io_context ioc;
  asio::ip::tcp::acceptor acceptor(ioc, {asio::ip::make_address("127.0.0.1"), 0});
  return acceptor.local_endpoint().port();
}

ChildProcess::ChildProcess(std::vector<std::string> argv, const std::string& log_path) {
  pid_t parent = getpid();
  pid_ = fork();
  if (pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    std::vector<char*> raw;
    for (auto& arg : argv) raw.push_back(arg.data());
    raw.push_back(nullptr);
    execv(raw[0], raw.data());
    _exit(127);
  }
}

bool ChildProcess::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) pid_ = -1;
  return pid_ > 0;
}

void ChildProcess::terminate() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  for (int i = 0; i < 100 && running(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  kill_now();
}

void ChildProcess::kill_now() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

ProxyProcess::ProxyProcess(std::string database_url, std::string name,
                           std::vector<std::string> args) {
  std::string tmpl = "/tmp/shapeproxy-client-test-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) return;
  dir_ = tmpl;
  port_ = free_port();
  std::vector<std::string> argv = {
      SHAPEPROXY_BIN, "--database-url",      database_url, "--listen",     "127.0.0.1",
      "--port",       std::to_string(port_), "--data-dir", dir_ + "/data", "--slot",
      name,           "--publication",       name,         "--log-level",  "info"};
  argv.insert(argv.end(), args.begin(), args.end());
  process_ = std::make_unique<ChildProcess>(std::move(argv), dir_ + "/proxy.log");
}

ProxyProcess::~ProxyProcess() {
  process_.reset();
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
}

void ProxyProcess::kill_now() {
  if (process_) process_->kill_now();
}

bool ProxyProcess::wait_healthy(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto reply = http_request("GET", port_, "/v1/health");
    if (reply.status == 200) return true;
    if (!process_ || !process_->running()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

std::string ProxyProcess::log_tail() const {
  std::ifstream in(dir_ + "/proxy.log");
  std::stringstream all;
  all << in.rdbuf();
  std::string text = all.str();
  return text.size() > 4000 ? text.substr(text.size() - 4000) : text;
}

}  // namespace shapeproxy::testing

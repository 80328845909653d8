// EmbeddedPostgres: initdb/pg_ctl driven through fork+execv (argv vectors, no
// shell), dropping to an unprivileged user when running as root. Layout of a
// cluster directory: <data_dir>/pgdata (the cluster), <data_dir>/socket (unix
// socket, or a mkdtemp dir under /tmp when that path is too long) and
// <data_dir>/postgres.log (server log plus initdb/pg_ctl output).
#include "embedded/embedded_postgres.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <system_error>
#include <utility>

#include "pg/connection.h"

namespace shapeproxy::embedded {
namespace {

namespace fs = std::filesystem;

constexpr const char* kDefaultBinDir = "/usr/lib/postgresql/15/bin";
constexpr const char* kInstallHint = "apt-get install postgresql-15";
constexpr const char* kConfInclude = "include_if_exists = 'shapeproxy.conf'";
// sun_path holds 108 bytes; the socket file is "<dir>/.s.PGSQL.<port>".
constexpr std::size_t kMaxSocketDirLength = 107 - 16;
constexpr int kStartAttempts = 5;

// ---------------------------------------------------------------------------
// Processes

// Who the server runs as: this process, or (when root) an unprivileged user.
struct RunUser {
  bool drop = false;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string name;
  std::vector<gid_t> groups;
};

Result<RunUser> resolve_run_user() {
  RunUser user;
  if (geteuid() != 0) return user;
  const passwd* pw = getpwnam("postgres");
  if (pw == nullptr) pw = getpwnam("nobody");
  if (pw == nullptr) {
    return Error{"no_unprivileged_user",
                 "running as root, but neither a 'postgres' nor a 'nobody' user exists",
                 "create a 'postgres' system user or run shapeproxy as a normal user"};
  }
  user.drop = true;
  user.uid = pw->pw_uid;
  user.gid = pw->pw_gid;
  user.name = pw->pw_name;
  int count = 64;
  user.groups.resize(static_cast<std::size_t>(count));
  if (getgrouplist(pw->pw_name, pw->pw_gid, user.groups.data(), &count) < 0) {
    user.groups.resize(static_cast<std::size_t>(count));
    getgrouplist(pw->pw_name, pw->pw_gid, user.groups.data(), &count);
  }
  user.groups.resize(static_cast<std::size_t>(std::max(count, 0)));
  return user;
}

void write_stderr(const char* text) {
  ssize_t ignored = write(STDERR_FILENO, text, std::strlen(text));
  (void)ignored;
}

// In the forked child: only async-signal-safe calls from here on.
void close_inherited_fds() {
  if (close_range(3, ~0U, 0) == 0) return;
  long max = sysconf(_SC_OPEN_MAX);
  if (max < 0 || max > 65536) max = 65536;
  for (int fd = 3; fd < max; ++fd) close(fd);
}

[[noreturn]] void child_setup_and_exec(char* const* argv, const RunUser& user, int out_fd) {
  int devnull = open("/dev/null", O_RDWR);
  if (devnull >= 0) dup2(devnull, STDIN_FILENO);
  int target = out_fd >= 0 ? out_fd : devnull;
  if (target >= 0) {
    dup2(target, STDOUT_FILENO);
    dup2(target, STDERR_FILENO);
  }
  close_inherited_fds();
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  signal(SIGPIPE, SIG_DFL);
  if (user.drop) {
    if (setgroups(user.groups.size(), user.groups.data()) != 0 || setgid(user.gid) != 0 ||
        setuid(user.uid) != 0) {
      write_stderr("shapeproxy: could not drop privileges before exec\n");
      _exit(126);
    }
  }
  if (chdir("/") != 0) _exit(126);
  execv(argv[0], argv);
  write_stderr("shapeproxy: could not execute ");
  write_stderr(argv[0]);
  write_stderr(": ");
  write_stderr(strerror(errno));
  write_stderr("\n");
  _exit(127);
}

// Waits for `pid`; returns its exit code, or 128 + signal number.
int wait_for(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Spawns argv (argv[0] is an absolute path) with stdout+stderr on out_fd
// (or /dev/null when -1).
Result<pid_t> spawn(const std::vector<std::string>& args, const RunUser& user, int out_fd) {
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (const auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) return Error{"fork_failed", std::string("fork failed: ") + strerror(errno), ""};
  if (pid == 0) child_setup_and_exec(argv.data(), user, out_fd);
  return pid;
}

Result<int> run(const std::vector<std::string>& args, const RunUser& user, int out_fd) {
  auto pid = spawn(args, user, out_fd);
  if (!pid) return pid.error();
  return wait_for(pid.value());
}

// Runs args and returns what it printed on stdout/stderr; nullopt unless exit 0.
std::optional<std::string> capture(const std::vector<std::string>& args) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return std::nullopt;
  auto pid = spawn(args, RunUser{}, fds[1]);
  close(fds[1]);
  if (!pid) {
    close(fds[0]);
    return std::nullopt;
  }
  std::string out;
  char buffer[4096];
  for (;;) {
    ssize_t n = read(fds[0], buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buffer, static_cast<std::size_t>(n));
  }
  close(fds[0]);
  if (wait_for(pid.value()) != 0) return std::nullopt;
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

// ---------------------------------------------------------------------------
// Files

// A log file opened for appending by children, remembering where this
// command's output starts.
class LogFile {
 public:
  static Result<LogFile> open(const fs::path& path, const RunUser& user) {
    int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
      return Error{"log_open_failed",
                   "could not open log file " + path.string() + ": " + strerror(errno), ""};
    }
    if (user.drop && fchown(fd, user.uid, user.gid) != 0) {
      spdlog::warn("could not chown {}: {}", path.string(), strerror(errno));
    }
    struct stat st {};
    off_t offset = fstat(fd, &st) == 0 ? st.st_size : 0;
    return LogFile(path, fd, offset);
  }
  LogFile(LogFile&& other) noexcept
      : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)), start_(other.start_) {}
  LogFile(const LogFile&) = delete;
  ~LogFile() {
    if (fd_ >= 0) close(fd_);
  }

  int fd() const { return fd_; }
  // The last lines written since open() (across all writers of the file).
  std::string tail(std::size_t max_chars = 2000) const {
    std::ifstream in(path_, std::ios::binary);
    in.seekg(start_);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.size() > max_chars) {
      text = text.substr(text.size() - max_chars);
      auto newline = text.find('\n');
      if (newline != std::string::npos) text = text.substr(newline + 1);
    }
    while (!text.empty() && text.back() == '\n') text.pop_back();
    return text;
  }

 private:
  LogFile(fs::path path, int fd, off_t start) : path_(std::move(path)), fd_(fd), start_(start) {}
  fs::path path_;
  int fd_;
  off_t start_;
};

Error with_log(Error error, const LogFile& log) {
  std::string tail = log.tail();
  if (!tail.empty()) error.message += "; log tail:\n" + tail;
  return error;
}

fs::path pgdata_of(const fs::path& data_dir) { return data_dir / "pgdata"; }
fs::path log_of(const fs::path& data_dir) { return data_dir / "postgres.log"; }

void chown_path(const fs::path& path, const RunUser& user) {
  if (user.drop && lchown(path.c_str(), user.uid, user.gid) != 0) {
    spdlog::warn("could not chown {}: {}", path.string(), strerror(errno));
  }
}

// Gives `dir` (recursively, when it is not the user's yet) to the run user.
void chown_tree(const fs::path& dir, const RunUser& user) {
  struct stat st {};
  if (!user.drop || lstat(dir.c_str(), &st) != 0 || st.st_uid == user.uid) return;
  chown_path(dir, user);
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    chown_path(it->path(), user);
  }
}

Result<void> write_file(const fs::path& path, const std::string& content, const RunUser& user) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  out.close();
  if (!out) return Error{"write_failed", "could not write " + path.string(), ""};
  chown_path(path, user);
  return {};
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

bool is_within(const fs::path& path, const fs::path& dir) {
  auto rel = path.lexically_relative(dir);
  return !rel.empty() && *rel.begin() != "..";
}

// As the run user: can it traverse `dir`? (fork + setuid + access).
bool accessible_by(const fs::path& dir, const RunUser& user, int mode) {
  if (!user.drop) return access(dir.c_str(), mode) == 0;
  pid_t pid = fork();
  if (pid < 0) return true;  // cannot tell; initdb will report it
  if (pid == 0) {
    if (setgroups(user.groups.size(), user.groups.data()) != 0 || setgid(user.gid) != 0 ||
        setuid(user.uid) != 0) {
      _exit(2);
    }
    _exit(access(dir.c_str(), mode) == 0 ? 0 : 1);
  }
  return wait_for(pid) == 0;
}

// ---------------------------------------------------------------------------
// Settings and paths

std::string quote_conf(const std::string& value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

std::string quote_conninfo(const std::string& value) {
  bool plain = !value.empty() && value.find_first_of(" '\\\t\n") == std::string::npos;
  if (plain) return value;
  std::string out = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

std::string percent_encode(const std::string& value) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : value) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

bool has_server_binaries(const fs::path& dir) {
  return access((dir / "initdb").c_str(), X_OK) == 0 && access((dir / "pg_ctl").c_str(), X_OK) == 0;
}

// `pg_config --bindir` of the first pg_config on PATH, if any.
std::optional<fs::path> pg_config_bindir() {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return std::nullopt;
  std::stringstream dirs(path);
  for (std::string dir; std::getline(dirs, dir, ':');) {
    fs::path pg_config = fs::path(dir.empty() ? "." : dir) / "pg_config";
    if (access(pg_config.c_str(), X_OK) != 0) continue;
    auto out = capture({pg_config.string(), "--bindir"});
    if (out) return fs::path(*out);
    return std::nullopt;
  }
  return std::nullopt;
}

// options.bin_dir, else $SHAPEPROXY_PG_BINDIR, else the Debian PG15 path,
// else `pg_config --bindir`.
Result<fs::path> find_bin_dir(const fs::path& configured) {
  std::vector<fs::path> searched;
  const char* env = std::getenv("SHAPEPROXY_PG_BINDIR");
  if (!configured.empty()) {
    searched.push_back(configured);
  } else if (env != nullptr && *env != '\0') {
    searched.emplace_back(env);
  } else {
    searched.emplace_back(kDefaultBinDir);
    if (!has_server_binaries(searched.back())) {
      if (auto bindir = pg_config_bindir()) searched.push_back(*bindir);
    }
  }
  if (has_server_binaries(searched.back())) return fs::absolute(searched.back());
  std::string list;
  for (const auto& dir : searched) list += (list.empty() ? "" : ", ") + dir.string();
  return Error{"initdb_not_found",
               "PostgreSQL 15 server binaries (initdb, pg_ctl) not found in: " + list,
               std::string(kInstallHint) + ", or set SHAPEPROXY_PG_BINDIR to its bin directory"};
}

void warn_if_not_15(const fs::path& bin_dir) {
  auto version = capture({(bin_dir / "pg_ctl").string(), "--version"});
  if (version && version->find(" 15.") == std::string::npos &&
      version->find(" 15beta") == std::string::npos) {
    spdlog::warn("embedded PostgreSQL: expected version 15, found '{}' in {}", *version,
                 bin_dir.string());
  }
}

Result<std::uint16_t> free_loopback_port() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Error{"socket_failed", std::string("socket: ") + strerror(errno), ""};
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
            getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  int saved = errno;
  close(fd);
  if (!ok) return Error{"bind_failed", std::string("bind 127.0.0.1:0: ") + strerror(saved), ""};
  return ntohs(addr.sin_port);
}

// <data_dir>/socket, or a fresh mkdtemp dir when that path would be too long.
Result<fs::path> make_socket_dir(const fs::path& data_dir, const RunUser& user) {
  fs::path dir = data_dir / "socket";
  if (dir.string().size() > kMaxSocketDirLength) {
    std::string tmpl = "/tmp/shapeproxy-pg-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) {
      return Error{"mkdtemp_failed", std::string("mkdtemp for socket dir: ") + strerror(errno), ""};
    }
    dir = tmpl;
  } else {
    std::error_code ec;
    fs::create_directory(dir, ec);
    if (ec)
      return Error{"mkdir_failed", "could not create " + dir.string() + ": " + ec.message(), ""};
    chmod(dir.c_str(), 0700);
  }
  chown_path(dir, user);
  return dir;
}

std::string normalize_spaces(const std::string& line) {
  std::stringstream in(line);
  std::string word, out;
  while (in >> word) out += (out.empty() ? "" : " ") + word;
  return out;
}

// Puts trust lines for 127.0.0.1 (normal and replication) first in pg_hba.conf
// unless initdb already wrote them.
Result<void> ensure_loopback_trust(const fs::path& hba, const RunUser& user) {
  const std::vector<std::string> wanted = {"host all all 127.0.0.1/32 trust",
                                           "host replication all 127.0.0.1/32 trust"};
  std::string content = read_file(hba);
  std::stringstream lines(content);
  std::vector<bool> present(wanted.size(), false);
  for (std::string line; std::getline(lines, line);) {
    auto normalized = normalize_spaces(line);
    for (std::size_t i = 0; i < wanted.size(); ++i)
      present[i] = present[i] || normalized == wanted[i];
  }
  std::string prefix;
  for (std::size_t i = 0; i < wanted.size(); ++i) {
    if (!present[i]) prefix += wanted[i] + "\n";
  }
  if (prefix.empty()) return {};
  return write_file(hba, "# added by shapeproxy\n" + prefix + content, user);
}

Result<void> validate_settings(const std::vector<std::string>& settings) {
  for (const auto& setting : settings) {
    if (setting.find_first_of("\r\n") != std::string::npos ||
        setting.find('=') == std::string::npos) {
      return Error{"invalid_setting", "invalid extra setting '" + setting + "'",
                   "use one 'name = value' per entry"};
    }
  }
  return {};
}

// Writes <pgdata>/shapeproxy.conf and includes it from postgresql.conf.
Result<void> write_settings(const fs::path& pgdata, std::uint16_t port, const fs::path& socket_dir,
                            const std::vector<std::string>& extra, const RunUser& user) {
  std::string conf =
      "# Written by shapeproxy on every start of the embedded cluster; edits are lost.\n"
      "listen_addresses = '127.0.0.1'\n"
      "port = " +
      std::to_string(port) + "\n" + "unix_socket_directories = " + quote_conf(socket_dir.string()) +
      "\n" +
      "wal_level = logical\n"
      "max_replication_slots = 20\n"
      "max_wal_senders = 20\n";
  for (const auto& setting : extra) conf += setting + "\n";
  if (auto written = write_file(pgdata / "shapeproxy.conf", conf, user); !written) return written;
  fs::path main_conf = pgdata / "postgresql.conf";
  if (read_file(main_conf).find(kConfInclude) != std::string::npos) return {};
  std::ofstream out(main_conf, std::ios::app);
  out << "\n" << kConfInclude << "\n";
  out.close();
  if (!out) return Error{"write_failed", "could not append to " + main_conf.string(), ""};
  return {};
}

Result<void> prepare_data_dir(const fs::path& data_dir, const RunUser& user) {
  std::error_code ec;
  fs::create_directories(data_dir, ec);
  if (ec) {
    return Error{"mkdir_failed",
                 "could not create data dir " + data_dir.string() + ": " + ec.message(), ""};
  }
  if (!user.drop) return {};
  if (!accessible_by(data_dir.parent_path(), user, X_OK)) {
    return Error{"data_dir_not_accessible",
                 "PostgreSQL runs as user '" + user.name + "' (it refuses root), but a parent of " +
                     data_dir.string() + " is not traversable by that user",
                 "use a data dir under /tmp or /var/lib, or make its parent directories "
                 "traversable (chmod o+x)"};
  }
  chown_tree(data_dir, user);
  if (!accessible_by(data_dir, user, R_OK | W_OK | X_OK)) {
    return Error{"data_dir_not_accessible",
                 "data dir " + data_dir.string() + " is not writable by user '" + user.name + "'",
                 "use a data dir under /tmp or /var/lib"};
  }
  return {};
}

// 0: running, 3: not running, 4: no accessible data directory.
int pg_ctl_status(const fs::path& bin_dir, const fs::path& pgdata, const RunUser& user) {
  auto code = run({(bin_dir / "pg_ctl").string(), "status", "-D", pgdata.string()}, user, -1);
  return code ? code.value() : -1;
}

std::string postmaster_pid(const fs::path& pgdata) {
  std::string content = read_file(pgdata / "postmaster.pid");
  return content.substr(0, content.find('\n'));
}

// A new cluster as a streaming standby: a base backup of the primary.
Result<void> copy_primary(const EmbeddedPostgresOptions& options, const RunUser& user,
                          const LogFile& log) {
  const fs::path pgdata = pgdata_of(options.data_dir);
  spdlog::info("embedded PostgreSQL: copying the primary into {} (standby)", pgdata.string());
  // -R: standby.signal + primary_conninfo; the copied configuration is
  // rewritten with this cluster's port and socket at start.
  std::vector<std::string> args = {(options.bin_dir / "pg_basebackup").string(),
                                   "-D",
                                   pgdata.string(),
                                   "-d",
                                   options.standby_of,
                                   "-R",
                                   "-X",
                                   "stream",
                                   "-c",
                                   "fast",
                                   "--no-sync"};
  auto result = run(args, user, log.fd());
  if (!result) return result.error();
  if (result.value() != 0) {
    std::error_code ec;
    fs::remove_all(pgdata, ec);
    return with_log(Error{"basebackup_failed",
                          "pg_basebackup failed (exit " + std::to_string(result.value()) +
                              ") for " + pgdata.string(),
                          "see " + log_of(options.data_dir).string()},
                    log);
  }
  return {};
}

}  // namespace

// ---------------------------------------------------------------------------

EmbeddedPostgres::EmbeddedPostgres(EmbeddedPostgresOptions options)
    : options_(std::move(options)) {}

Result<std::unique_ptr<EmbeddedPostgres>> EmbeddedPostgres::start(EmbeddedPostgresOptions options) {
  if (options.data_dir.empty()) {
    return Error{"invalid_options", "embedded PostgreSQL needs a data dir", ""};
  }
  if (auto valid = validate_settings(options.extra_settings); !valid) return valid.error();
  auto bin_dir = find_bin_dir(options.bin_dir);
  if (!bin_dir) return bin_dir.error();
  options.bin_dir = bin_dir.value();
  options.data_dir = fs::absolute(options.data_dir).lexically_normal();
  if (!options.data_dir.has_filename()) options.data_dir = options.data_dir.parent_path();
  warn_if_not_15(options.bin_dir);

  auto user = resolve_run_user();
  if (!user) return user.error();
  if (auto prepared = prepare_data_dir(options.data_dir, user.value()); !prepared) {
    return prepared.error();
  }
  std::unique_ptr<EmbeddedPostgres> server(new EmbeddedPostgres(std::move(options)));
  auto socket_dir = make_socket_dir(server->options_.data_dir, user.value());
  if (!socket_dir) return socket_dir.error();
  server->socket_dir_ = socket_dir.value();

  if (auto init = server->init_cluster(); !init) return init.error();
  if (auto started = server->start_server(); !started) return started.error();
  // From now on restarts reuse this port.
  server->options_.port = server->port_;
  return server;
}

Result<void> EmbeddedPostgres::init_cluster() {
  const fs::path pgdata = pgdata_of(options_.data_dir);
  if (fs::exists(pgdata / "PG_VERSION")) return {};
  auto user = resolve_run_user();
  if (!user) return user.error();
  std::error_code ec;
  fs::remove_all(pgdata, ec);  // a half-initialized cluster from an interrupted initdb
  auto log = LogFile::open(log_of(options_.data_dir), user.value());
  if (!log) return log.error();

  if (!options_.standby_of.empty()) return copy_primary(options_, user.value(), log.value());
  spdlog::info("embedded PostgreSQL: initializing cluster in {}", pgdata.string());
  int code = -1;
  for (const char* locale : {"--locale=C.UTF-8", "--locale=C"}) {
    std::vector<std::string> args = {(options_.bin_dir / "initdb").string(),
                                     "-D",
                                     pgdata.string(),
                                     "-A",
                                     "trust",
                                     "-U",
                                     options_.superuser,
                                     "-E",
                                     "UTF8",
                                     locale,
                                     "--no-sync",
                                     "--no-instructions"};
    auto result = run(args, user.value(), log->fd());
    if (!result) return result.error();
    code = result.value();
    if (code == 0) break;
    fs::remove_all(pgdata, ec);
  }
  if (code != 0) {
    return with_log(
        Error{"initdb_failed",
              "initdb failed (exit " + std::to_string(code) + ") for " + pgdata.string(),
              "see " + log_of(options_.data_dir).string()},
        log.value());
  }
  return ensure_loopback_trust(pgdata / "pg_hba.conf", user.value());
}

Result<void> EmbeddedPostgres::start_server() {
  const fs::path pgdata = pgdata_of(options_.data_dir);
  auto user = resolve_run_user();
  if (!user) return user.error();
  if (pg_ctl_status(options_.bin_dir, pgdata, user.value()) == 0) {
    options_.keep_data_on_stop = true;  // never delete a directory another server uses
    return Error{"already_running",
                 "a PostgreSQL server (pid " + postmaster_pid(pgdata) + ") is already running on " +
                     pgdata.string(),
                 "stop it with: " + (options_.bin_dir / "pg_ctl").string() + " -D " +
                     pgdata.string() + " stop -m fast, or use another data dir"};
  }
  Error last{"start_failed", "could not start PostgreSQL", ""};
  for (int attempt = 0; attempt < kStartAttempts; ++attempt) {
    std::uint16_t port = options_.port;
    if (port == 0) {
      auto free_port = free_loopback_port();
      if (!free_port) return free_port.error();
      port = free_port.value();
    }
    auto written = write_settings(pgdata, port, socket_dir_, options_.extra_settings, user.value());
    if (!written) return written;
    auto log = LogFile::open(log_of(options_.data_dir), user.value());
    if (!log) return log.error();
    std::vector<std::string> args = {(options_.bin_dir / "pg_ctl").string(),
                                     "start",
                                     "-D",
                                     pgdata.string(),
                                     "-w",
                                     "-t",
                                     std::to_string(options_.start_timeout.count()),
                                     "-l",
                                     log_of(options_.data_dir).string()};
    auto code = run(args, user.value(), log->fd());
    if (!code) return code.error();
    if (code.value() == 0) {
      port_ = port;
      running_ = true;
      spdlog::info("embedded PostgreSQL running on 127.0.0.1:{} (socket {}, data {})", port_,
                   socket_dir_.string(), options_.data_dir.string());
      return {};
    }
    last = with_log(Error{"start_failed",
                          "pg_ctl start failed (exit " + std::to_string(code.value()) + ") for " +
                              pgdata.string(),
                          "see " + log_of(options_.data_dir).string()},
                    log.value());
    bool port_taken = log->tail(100000).find("Address already in use") != std::string::npos;
    if (!port_taken || options_.port != 0) break;
    spdlog::warn("embedded PostgreSQL: port {} taken, retrying on another port", port);
  }
  return last;
}

Result<void> EmbeddedPostgres::stop() {
  if (!running_) return {};
  const fs::path pgdata = pgdata_of(options_.data_dir);
  auto user = resolve_run_user();
  if (!user) return user.error();
  auto log = LogFile::open(log_of(options_.data_dir), user.value());
  if (!log) return log.error();
  auto code = run({(options_.bin_dir / "pg_ctl").string(), "stop", "-D", pgdata.string(), "-m",
                   "fast", "-w", "-t", std::to_string(options_.start_timeout.count())},
                  user.value(), log->fd());
  if (!code) return code.error();
  if (code.value() != 0 && pg_ctl_status(options_.bin_dir, pgdata, user.value()) == 0) {
    return with_log(
        Error{"stop_failed", "pg_ctl stop failed (exit " + std::to_string(code.value()) + ")",
              "see " + log_of(options_.data_dir).string()},
        log.value());
  }
  running_ = false;
  return {};
}

Result<void> EmbeddedPostgres::restart() {
  if (auto stopped = stop(); !stopped) return stopped;
  return start_server();
}

EmbeddedPostgres::~EmbeddedPostgres() {
  if (auto stopped = stop(); !stopped) {
    spdlog::error("embedded PostgreSQL: {}", stopped.error().to_string());
    auto user = resolve_run_user();
    if (user) {
      auto code = run({(options_.bin_dir / "pg_ctl").string(), "stop", "-D",
                       pgdata_of(options_.data_dir).string(), "-m", "immediate", "-w"},
                      user.value(), -1);
      if (code && code.value() == 0) running_ = false;
    }
  }
  std::error_code ec;
  if (!socket_dir_.empty() && !is_within(socket_dir_, options_.data_dir)) {
    fs::remove_all(socket_dir_, ec);
  }
  if (!options_.keep_data_on_stop && !running_) fs::remove_all(options_.data_dir, ec);
}

std::string EmbeddedPostgres::conninfo(const std::string& database, const std::string& user) const {
  return "host=" + quote_conninfo(socket_dir_.string()) + " port=" + std::to_string(port_) +
         " dbname=" + quote_conninfo(database) +
         " user=" + quote_conninfo(user.empty() ? options_.superuser : user);
}

std::string EmbeddedPostgres::uri(const std::string& database, const std::string& user) const {
  return "postgresql://" + percent_encode(user.empty() ? options_.superuser : user) +
         "@127.0.0.1:" + std::to_string(port_) + "/" + percent_encode(database);
}

Result<void> EmbeddedPostgres::execute(const std::string& sql, const std::string& database) const {
  auto conn = pg::Connection::open(conninfo(database));
  if (!conn) return conn.error();
  auto result = conn->exec(sql);
  if (!result) return result.error();
  return {};
}

}  // namespace shapeproxy::embedded

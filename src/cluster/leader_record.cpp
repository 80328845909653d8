#include "cluster/leader_record.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cluster/data_dir_lock.h"

namespace shapeproxy::cluster {
namespace {

constexpr const char* kRecordFile = "leader.json";
constexpr const char* kClaimFile = "claim.json";

Error write_error(const std::filesystem::path& path, const char* what) {
  return Error{"cluster.leader_record",
               std::string(what) + " " + path.string() + ": " + std::strerror(errno), ""};
}

Result<void> write_all_and_sync(const std::filesystem::path& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return write_error(path, "cannot create");
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      auto error = write_error(path, "cannot write");
      ::close(fd);
      return error;
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    auto error = write_error(path, "cannot sync");
    ::close(fd);
    return error;
  }
  ::close(fd);
  return {};
}

Result<void> write_record_file(const std::filesystem::path& data_dir, const char* file,
                               const LeaderRecord& record) {
  nlohmann::json json = {
      {"instance_id", record.instance_id}, {"url", record.url}, {"since_ms", record.since_ms}};
  json["backend_pid"] = record.backend_pid ? nlohmann::json(*record.backend_pid) : nlohmann::json();
  const auto dir = DataDirLock::directory(data_dir);
  const auto final_path = dir / file;
  const auto temporary = dir / (std::string(file) + ".tmp");
  if (auto written = write_all_and_sync(temporary, json.dump() + "\n"); !written) return written;
  if (::rename(temporary.c_str(), final_path.c_str()) != 0) {
    return write_error(final_path, "cannot rename over");
  }
  if (const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
  return {};
}

std::optional<LeaderRecord> read_record_file(const std::filesystem::path& data_dir,
                                             const char* file) {
  std::ifstream in(DataDirLock::directory(data_dir) / file);
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  auto json = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (!json.is_object() || !json["instance_id"].is_string() || !json["url"].is_string() ||
      !json["since_ms"].is_number_integer()) {
    return std::nullopt;
  }
  LeaderRecord record;
  record.instance_id = json["instance_id"].get<std::string>();
  record.url = json["url"].get<std::string>();
  record.since_ms = json["since_ms"].get<std::int64_t>();
  if (json["backend_pid"].is_number_integer()) {
    record.backend_pid = json["backend_pid"].get<std::int64_t>();
  }
  return record;
}

}  // namespace

Result<void> write_leader_record(const std::filesystem::path& data_dir,
                                 const LeaderRecord& record) {
  return write_record_file(data_dir, kRecordFile, record);
}

std::optional<LeaderRecord> read_leader_record(const std::filesystem::path& data_dir) {
  return read_record_file(data_dir, kRecordFile);
}

Result<void> write_claim(const std::filesystem::path& data_dir, const LeaderRecord& claim) {
  return write_record_file(data_dir, kClaimFile, claim);
}

std::optional<LeaderRecord> read_claim(const std::filesystem::path& data_dir) {
  return read_record_file(data_dir, kClaimFile);
}

}  // namespace shapeproxy::cluster

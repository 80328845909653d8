// record_pgoutput: records the raw bytes of a pgoutput logical replication
// stream into fixture files, so decoder unit tests run on bytes a real
// PostgreSQL server produced rather than on bytes we wrote by hand.
//
// Usage: record_pgoutput <conninfo> <out_dir> [max_messages] [idle_timeout_s]
//
// Streams slot "s", publication "p" (proto_version 1, messages on) from 0/0
// and writes, in <out_dir>:
//   pgoutput_messages.bin  every XLogData payload, each framed as a 4-byte
//                          big-endian length followed by the bytes;
//   xlogdata.bin           the first whole 'w' CopyData message;
//   keepalive.bin          the first whole 'k' CopyData message.
// Stops after max_messages payloads, or when no data arrived for
// idle_timeout_s seconds. See record_fixtures.sh for the workload.
#include <libpq-fe.h>
#include <sys/select.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>

namespace {

constexpr std::size_t kXLogDataHeader = 25;  // 'w' + 3 x Int64

bool write_file(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return static_cast<bool>(out);
}

void append_frame(std::string& frames, std::string_view payload) {
  auto len = static_cast<std::uint32_t>(payload.size());
  for (int shift = 24; shift >= 0; shift -= 8) frames.push_back(static_cast<char>(len >> shift));
  frames.append(payload);
}

// Waits up to `seconds` for the socket to become readable; false on timeout.
bool wait_readable(PGconn* conn, int seconds) {
  int fd = PQsocket(conn);
  fd_set set;
  FD_ZERO(&set);
  FD_SET(fd, &set);
  timeval tv{seconds, 0};
  return select(fd + 1, &set, nullptr, nullptr, &tv) > 0;
}

struct Recording {
  std::string frames;
  std::string first_xlogdata;
  std::string first_keepalive;
  int messages = 0;
};

// Reads CopyData until max_messages payloads or idle_timeout of silence.
bool stream(PGconn* conn, int max_messages, int idle_timeout, Recording& rec) {
  while (rec.messages < max_messages) {
    char* buf = nullptr;
    int len = PQgetCopyData(conn, &buf, /*async=*/1);
    if (len == 0) {
      if (!wait_readable(conn, idle_timeout)) return true;  // idle: done
      if (!PQconsumeInput(conn)) return false;
      continue;
    }
    if (len < 0) return len == -1;  // -1: stream ended, -2: error
    std::string_view msg(buf, static_cast<std::size_t>(len));
    if (msg[0] == 'w' && msg.size() >= kXLogDataHeader) {
      if (rec.first_xlogdata.empty()) rec.first_xlogdata = msg;
      append_frame(rec.frames, msg.substr(kXLogDataHeader));
      ++rec.messages;
    } else if (msg[0] == 'k' && rec.first_keepalive.empty()) {
      rec.first_keepalive = msg;
    }
    PQfreemem(buf);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s <conninfo> <out_dir> [max_messages] [idle_timeout_s]\n",
                 argv[0]);
    return 2;
  }
  std::string conninfo = std::string(argv[1]) + " replication=database options='-c TimeZone=UTC'";
  std::string out_dir = argv[2];
  int max_messages = argc > 3 ? std::atoi(argv[3]) : 1000;
  int idle_timeout = argc > 4 ? std::atoi(argv[4]) : 3;

  PGconn* conn = PQconnectdb(conninfo.c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    std::fprintf(stderr, "connect: %s", PQerrorMessage(conn));
    return 1;
  }
  PGresult* res = PQexec(conn,
                         "START_REPLICATION SLOT s LOGICAL 0/0 (proto_version '1', "
                         "publication_names '\"p\"', messages 'true')");
  if (PQresultStatus(res) != PGRES_COPY_BOTH) {
    std::fprintf(stderr, "START_REPLICATION: %s", PQerrorMessage(conn));
    return 1;
  }
  PQclear(res);

  Recording rec;
  bool ok = stream(conn, max_messages, idle_timeout, rec);
  PQfinish(conn);
  if (!ok) {
    std::fprintf(stderr, "stream error\n");
    return 1;
  }
  ok = write_file(out_dir + "/pgoutput_messages.bin", rec.frames) &&
       write_file(out_dir + "/xlogdata.bin", rec.first_xlogdata) &&
       write_file(out_dir + "/keepalive.bin", rec.first_keepalive);
  std::printf("recorded %d messages, keepalive %s\n", rec.messages,
              rec.first_keepalive.empty() ? "missing" : "present");
  return ok && !rec.first_keepalive.empty() ? 0 : 1;
}

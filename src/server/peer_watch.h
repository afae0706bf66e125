#pragma once
// Notices a client that hung up while its non-streaming request runs.
// A streaming reply learns it from a failed write; a non-streaming one writes
// nothing until the end, so without this a departed client would hold its
// slot until max_tokens. cpp-httplib 0.11 does not hand handlers their
// socket, so the watch finds it among the process's descriptors by the
// request's address pair (local port, peer address and port): unique while
// the handler runs, since the connection stays open until it returns.
#include <httplib.h>

namespace ds4::server {

class PeerWatch {
 public:
  explicit PeerWatch(const httplib::Request& req);
  // True when the peer closed or reset the connection. A request is read
  // whole before its handler runs and connections carry one request, so any
  // end of stream seen here means the client is gone.
  bool gone() const;
  bool found() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

}  // namespace ds4::server

#pragma once
// Checkpoint files: a session's state at some position (the backend's
// canonical layout, backend/cpu/session.h) plus its token history, behind a
// versioned header that names the model it belongs to and checksums the
// payload. docs/prefix-cache.md describes the byte layout.
//
// Writes are crash safe: the bytes go to a uniquely named temporary file in
// the target's directory, which is fsynced, renamed over the target and the
// directory fsynced, so a reader sees either the old file, the new one or
// none, never a mix. Any failure (ENOSPC included) removes the temporary file
// and throws ds4::Error naming the target.
#include <sys/types.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "backend/backend.h"
#include "engine/session.h"
#include "model/weights.h"
#include "util/error.h"

namespace ds4::engine {

inline constexpr uint32_t kCheckpointVersion = 1;
inline constexpr size_t kCheckpointHeaderBytes = 128;

// What a checkpoint's state belongs to. Each part is an xxh3-64 of a
// canonical serialization (docs/prefix-cache.md §Fingerprint), kept apart so a
// mismatch can say which part differs.
struct Fingerprint {
  uint64_t hparams = 0;    // general.architecture and every architecture key
  uint64_t tensors = 0;    // tensor names, types and shapes
  uint64_t weights = 0;    // a sample of each tensor's bytes (first/last 64)
  uint64_t tokenizer = 0;  // every tokenizer.* key
  backend::NumericsMode numerics = backend::NumericsMode::faithful;
  bool operator==(const Fingerprint&) const = default;
};
Fingerprint model_fingerprint(const model::Model& m, backend::NumericsMode numerics);
// "" when equal, else which part differs ("tokenizer differs", ...).
std::string fingerprint_mismatch(const Fingerprint& file, const Fingerprint& want);

// Why a checkpoint was written (kept in the header, shown in logs).
enum class SaveReason : uint8_t { unknown = 0, cold = 1, continued = 2, evict = 3, shutdown = 4, spill = 5, cli = 6 };
std::string_view save_reason_name(SaveReason r);

struct Checkpoint {
  Session::Snapshot snapshot;  // state bytes + token history
  // Opaque bytes that travel with the state (the server's exact-DSML replay
  // map for tool ids); covered by the checksum like the rest.
  std::string extra;
  SaveReason reason = SaveReason::unknown;
  uint64_t created_unix = 0;
  // What the state depends on besides the model and its tokens: a hash of
  // the steering it was computed with (scales and directions); 0 for none.
  uint64_t variant = 0;
};

// The header and token history, without the state (what a directory scan needs).
struct CheckpointHead {
  Fingerprint fp;
  SaveReason reason = SaveReason::unknown;
  uint64_t created_unix = 0;
  uint64_t state_bytes = 0, extra_bytes = 0;
  uint64_t file_bytes = 0;
  uint64_t variant = 0;
  std::vector<int32_t> tokens;
};

// Bytes the file of this checkpoint takes.
uint64_t checkpoint_file_bytes(const Checkpoint& c);

// Writes `c` to `path` atomically (see above). Throws ds4::Error naming `path`.
void write_checkpoint(const std::string& path, const Fingerprint& fp, const Checkpoint& c);
// The same with another reason in the header (a RAM entry spilled or flushed
// at shutdown), without copying the state.
void write_checkpoint(const std::string& path, const Fingerprint& fp, const Checkpoint& c, SaveReason reason);

// Reads and verifies the whole file: size, magic, version, header checksum,
// the fingerprint against `want`, payload checksum. Throws CheckpointError
// with one reason naming the file. `head_only` skips reading the state (the
// token history and extra bytes are still checked against the header sizes,
// not the payload checksum).
class CheckpointError : public Error {
 public:
  enum class Kind { io, vanished, truncated, not_checkpoint, old_version, corrupt, foreign };
  CheckpointError(Kind k, const std::string& msg) : Error(msg), kind(k) {}
  Kind kind;
};
Checkpoint read_checkpoint(const std::string& path, const Fingerprint& want);
CheckpointHead read_checkpoint_head(const std::string& path, const Fingerprint& want);

// Test seam: every write of checkpoint bytes goes through this function
// (default ::write), so tests can inject ENOSPC or short writes.
using WriteFn = ssize_t (*)(int fd, const void* buf, size_t n);
void set_checkpoint_write_fn(WriteFn fn);  // nullptr restores ::write

}  // namespace ds4::engine

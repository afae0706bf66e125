#pragma once
// DS4 chat: conversation types, the DS4 prompt renderer and the DSML tool-call
// parsers (reference-behavior.md §2 and §4). Works on text only: the output is
// a list of segments that the tokenizer maps to ids, and the parsers consume
// decoded text pieces.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ds4::chat {

// Key order matters everywhere a client's JSON is echoed into the prompt
// (schemas, canonical DSML), so JSON values keep insertion order.
using Json = nlohmann::ordered_json;

// ---- special tokens (§2.1) -------------------------------------------------
inline constexpr std::string_view kBos = "<｜begin▁of▁sentence｜>";
inline constexpr std::string_view kEos = "<｜end▁of▁sentence｜>";
inline constexpr std::string_view kUser = "<｜User｜>";
inline constexpr std::string_view kAssistant = "<｜Assistant｜>";
inline constexpr std::string_view kThinkOpen = "<think>";
inline constexpr std::string_view kThinkClose = "</think>";
inline constexpr std::string_view kDsml = "｜DSML｜";

// ---- thinking modes (§2.2) -------------------------------------------------
enum class ThinkMode { None, High, Max };

// Think Max needs a context of at least this many tokens; below it ds4 uses
// ordinary thinking.
inline constexpr int64_t kThinkMaxMinContext = 393216;
ThinkMode effective_think_mode(ThinkMode requested, int64_t ctx_size);
std::string_view think_mode_name(ThinkMode m);  // "none" / "high" / "max"
std::string_view think_max_prefix();

// ---- conversation ---------------------------------------------------------
// API adapters map their roles here: developer -> System, function -> Tool;
// unknown roles are dropped by the adapter (§2.4).
enum class Role { System, User, Assistant, Tool };

struct ToolCall {
  std::string id;
  std::string name;
  std::string arguments;  // JSON text as the client sent it (normally an object)
};

struct Message {
  Role role = Role::User;
  std::string content;
  std::optional<std::string> reasoning;  // assistant only
  std::vector<ToolCall> tool_calls;      // assistant only
  std::string tool_call_id;              // tool only (not rendered)
  // Exact DSML block the model sampled for these calls (§4.5), including its
  // leading "\n\n". When set it is replayed verbatim instead of the canonical
  // rendering of tool_calls.
  std::string raw_dsml;
};

struct ToolDef {
  std::string name;
  std::string description;
  Json parameters = Json::object();
  // The schema line exactly as the client sent it (§2.5: ds4 echoes the raw
  // bytes). When empty the line is {"name":..,"description":..,"parameters":..}
  // serialized compactly.
  std::string raw_json;
};

struct RenderOptions {
  ThinkMode think = ThinkMode::High;  // already passed through effective_think_mode
  std::vector<ToolDef> tools;         // empty, or tool_choice "none": no tools block
};

// ---- rendered prompt --------------------------------------------------------
struct Segment {
  enum class Kind { Special, Text };
  Kind kind = Kind::Text;
  std::string text;  // Special: the token's spelling; Text: BPE-encode without special parsing
  bool operator==(const Segment&) const = default;
};
using Segments = std::vector<Segment>;

std::string join(const Segments& s);

// §2.4 multi-turn rendering (server chat / Anthropic / Responses).
Segments render_chat(const std::vector<Message>& messages, const RenderOptions& opt);
// §2.3 single prompt: BOS [max prefix] [system] User text Assistant think-marker.
Segments render_single(std::string_view system, std::string_view user, ThinkMode think);
// §2.8 /v1/completions: a chat turn with the fixed system prompt.
inline constexpr std::string_view kDefaultSystem = "You are a helpful assistant";
Segments render_completion(std::string_view prompt, ThinkMode think);

// ---- DSML (§2.6) ------------------------------------------------------------
// Canonical DSML block for calls (leading "\n\n", no trailing newline).
std::string canonical_dsml(const std::vector<ToolCall>& calls);
// Splits text the model itself produced (e.g. a replayed DSML block) at the
// special spellings so they map back to the same tokens.
Segments split_specials(std::string_view text);

// ---- parsing generated text (§4.2) -----------------------------------------
struct ParsedCall {
  std::string id;
  std::string name;
  std::string arguments;  // ds4's form: {"k": v, ...} (", " and ": " separators)
};

struct ParsedMessage {
  bool ok = true;  // false: malformed DSML; content holds the whole raw text
  std::string content;
  std::optional<std::string> reasoning;
  std::vector<ParsedCall> calls;
  std::string raw_dsml;  // block from its start (incl. "\n\n") to the end marker
};

// Final parse of a whole generation. thinking: the turn was opened with
// <think>, so DSML before the last </think> is not executable.
ParsedMessage parse_completion(std::string_view text, bool thinking);

// Arguments as clients receive them: compact JSON, or "{}" when the parsed
// text is not a JSON object (§4.2 step 6).
std::string compact_arguments(std::string_view arguments);

// ---- tool-call ids (§4.4) ---------------------------------------------------
enum class IdStyle { OpenAI, Anthropic };  // call_<32 hex> / toolu_<32 hex>

class IdGenerator {
 public:
  // Random bytes come from `random16` (16 bytes per call); default reads
  // std::random_device. `taken` lets the caller reject ids already in use.
  explicit IdGenerator(IdStyle style, std::function<void(uint8_t*)> random16 = {},
                       std::function<bool(const std::string&)> taken = {});
  std::string next();

 private:
  IdStyle style_;
  std::function<void(uint8_t*)> random16_;
  std::function<bool(const std::string&)> taken_;
  std::vector<std::string> issued_;
};

// ---- streaming parser (§4.3) ------------------------------------------------
struct StreamEvent {
  enum class Kind { Reasoning, Text, ToolStart, ToolArgs, ToolEnd };
  Kind kind = Kind::Text;
  std::string text;  // Reasoning/Text: delta; ToolStart: name; ToolArgs: JSON fragment
  int index = -1;    // tool call index within the block
  std::string id;    // ToolStart
  bool operator==(const StreamEvent&) const = default;
};

struct StreamOptions {
  bool thinking = true;  // the prompt ended with <think>
  bool tools = true;     // tool calls are active for this request
};

class StreamParser {
 public:
  StreamParser(StreamOptions opt, IdGenerator ids);
  // Feed a decoded piece; returns events that are now certain.
  std::vector<StreamEvent> feed(std::string_view piece);
  // End of generation: flushes held-back text and returns the final events.
  std::vector<StreamEvent> finish();
  // After finish(): the final parse (§4.2) of everything fed, with the ids
  // shown during streaming reused for the parsed calls.
  const ParsedMessage& result() const { return result_; }
  // A tool block started but its end marker never came (§4.8: turn error).
  bool unterminated() const { return unterminated_; }
  // The end marker was seen: the caller stops decoding (§4.1).
  bool done() const { return state_ == State::Done; }

 private:
  enum class State { Reasoning, Text, Tool, Done };
  enum class Tool { BeforeInvoke, InInvoke, InValue, Lost };
  void step(std::vector<StreamEvent>& out, bool final);
  bool step_tool(std::vector<StreamEvent>& out, bool final);
  void emit(std::vector<StreamEvent>& out, StreamEvent::Kind k, std::string_view s);

  StreamOptions opt_;
  IdGenerator ids_;
  State state_;
  std::string all_;      // everything fed (for the final parse)
  std::string pending_;  // not yet decided
  bool start_checked_ = false;  // a leading <think> was looked for
  int style_ = 0;        // 0 DSML, 1 plain XML, 2 short DSML
  Tool tool_ = Tool::BeforeInvoke;
  bool value_is_string_ = true;
  bool first_param_ = true;
  int call_index_ = -1;
  std::vector<std::string> shown_ids_;
  bool unterminated_ = false;
  ParsedMessage result_;
};

}  // namespace ds4::chat

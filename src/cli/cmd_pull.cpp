// `ds4 pull NAME|URL [-o DIR] [--token T] [--sha256 HEX]`: fetch a model GGUF
// and make it the default model of `ds4 run` (docs/model-download.md). The
// download itself lives in src/download/.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "cli/commands.h"
#include "download/download.h"
#include "util/default_model.h"

namespace ds4::cli {
namespace {

struct PullArgs {
  std::string source, out_dir, token, sha256;
  int retries = 3;
  bool list = false, no_default = false;
};

void list_known() {
  for (const auto& m : download::known_models())
    std::printf("%-11s %s\n            %s\n", std::string(m.name).c_str(), std::string(m.about).c_str(),
                download::known_model_url(m).c_str());
}

void pull(const PullArgs& a) {
  if (a.list) return list_known();
  download::PullOptions o;
  // Like antirez/ds4's download script: ./gguf unless DS4_GGUF_DIR or -o says otherwise.
  const char* env_dir = std::getenv("DS4_GGUF_DIR");
  o.out_dir = !a.out_dir.empty() ? a.out_dir : (env_dir && *env_dir) ? env_dir : "gguf";
  o.token = download::resolve_token(a.token);
  o.sha256 = a.sha256;
  o.retries = a.retries;
  o.tty = isatty(STDERR_FILENO) != 0;
  const download::PullResult r = download::pull(a.source, o);
  if (!r.main_model) {
    std::fprintf(stderr, "ds4: %s is a draft (MTP) file, not a model on its own: the default model is unchanged\n",
                 r.paths.front().c_str());
    return;
  }
  if (a.no_default) return;
  write_default_model(r.paths.front());
  std::fprintf(stderr, "ds4: default model is now %s (recorded in %s): `ds4 run` and `make run` use it without -m\n",
               r.paths.front().c_str(), default_model_record().c_str());
}

Registration reg("pull", 5, [](CLI::App& app) {
  auto a = std::make_shared<PullArgs>();
  CLI::App* sub = app.add_subcommand("pull", "Download a model: a known name (see --list) or an http(s) GGUF URL");
  sub->add_option("source", a->source, "Known model name (q2-imatrix, q4-imatrix, q2, q4, mtp) or a .gguf URL");
  sub->add_option("-o,--output-dir", a->out_dir, "Directory to store the file in (default: $DS4_GGUF_DIR, else ./gguf)");
  sub->add_option("--token", a->token, "Hugging Face token for gated repositories (default: $HF_TOKEN)");
  sub->add_option("--sha256", a->sha256, "Expected SHA-256 of the file (default: what the server states, if anything)");
  sub->add_option("--retries", a->retries, "Resume a cut transfer this many times before giving up")->capture_default_str();
  sub->add_flag("--list", a->list, "List the known model names and exit");
  sub->add_flag("--no-default", a->no_default, "Do not make the downloaded model the default of `ds4 run`");
  sub->callback([a] { pull(*a); });
});

}  // namespace
}  // namespace ds4::cli

// `ds4 steer build` turns paired prompt sets into a steering direction file;
// `ds4 steer capture` writes one prompt's captured component at every layer
// (before and after steering), to inspect or to check a direction
// (docs/steering.md).
#include <fmt/format.h>

#include <cstdio>
#include <memory>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/engine_options.h"
#include "cli/steering_flags.h"
#include "engine/steering_build.h"
#include "util/error.h"

namespace ds4::cli {
namespace {

struct SteerOpts {
  std::string model, backend = "cpu", numerics = "faithful", component = "ffn", out;
  std::string system = "You are a helpful assistant.";
  std::string good, bad, control, prompt;
  bool think = false, pair_normalize = false, no_orthogonalize = false;
  int threads = 0;
  SteeringFlags steering;
};

backend::Component parse_component(const std::string& s) {
  if (s == "ffn") return backend::Component::ffn;
  if (s == "attn") return backend::Component::attn;
  fail("invalid value for --component: '{}' (expected ffn or attn)", s);
}

void write_floats(const std::string& path, const std::vector<float>& a, const std::vector<float>& b) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (!f) fail("{}: cannot open for writing", path);
  for (const auto* v : {&a, &b})
    if (std::fwrite(v->data(), sizeof(float), v->size(), f.get()) != v->size()) fail("{}: write failed", path);
  if (std::fclose(f.release()) != 0) fail("{}: write failed (disk full?)", path);
}

void capture(const SteerOpts& o) {
  const engine::Engine e(engine_options(o.model, o.backend, o.threads, o.numerics, &o.steering));
  engine::CaptureOptions co{parse_component(o.component), o.think, o.system};
  const backend::Capture cap = engine::capture_prompt(e, o.prompt, co, e.default_steering());
  write_floats(o.out, cap.pre, cap.post);
  std::fprintf(stderr, "ds4 steer capture: wrote %s: %s output before and after steering, 2 x %u layers x %u floats\n",
               o.out.c_str(), o.component.c_str(), e.model().config.n_layer, e.model().config.n_embd);
}

void build(const SteerOpts& o) {
  const engine::Engine e(engine_options(o.model, o.backend, o.threads, o.numerics));
  const auto& c = e.model().config;
  engine::CaptureOptions co{parse_component(o.component), o.think, o.system};
  const bool tty = ::isatty(2) != 0;
  auto run_set = [&](const std::string& path, const char* name) {
    std::vector<std::vector<float>> caps;
    if (path.empty()) return caps;
    const auto prompts = engine::read_prompt_lines(path);
    for (size_t i = 0; i < prompts.size(); ++i) {
      caps.push_back(engine::capture_prompt(e, prompts[i], co).pre);
      std::fprintf(stderr, tty ? "\rds4 steer build: %s prompts %zu/%zu" : "ds4 steer build: %s prompts %zu/%zu\n",
                   name, i + 1, prompts.size());
    }
    if (tty) std::fprintf(stderr, "\n");
    return caps;
  };
  const auto good = run_set(o.good, "good"), bad = run_set(o.bad, "bad"), control = run_set(o.control, "control");
  engine::DirectionOptions dopt{o.pair_normalize, !o.no_orthogonalize};
  model::SteeringVectors v;
  v.path = o.out;
  v.n_layer = c.n_layer;
  v.n_embd = c.n_embd;
  v.dirs = engine::build_direction(good, bad, control, c.n_layer, c.n_embd, dopt);
  v.metadata = {{"format", "ds4-directional-steering-v1"},
                {"shape", {c.n_layer, c.n_embd}},
                {"component", o.component},
                {"thinking", o.think},
                {"pair_normalize", o.pair_normalize},
                {"orthogonalize_control_mean", !o.no_orthogonalize},
                {"control", o.control.empty() ? "mean of good and bad" : o.control},
                {"good_file", o.good},
                {"bad_file", o.bad},
                {"prompts", {{"good", good.size()}, {"bad", bad.size()}, {"control", control.size()}}},
                {"model", o.model},
                {"system", o.system}};
  v.save(o.out);
  std::fprintf(stderr, "ds4 steer build: wrote %s and %s (%u layers x %u floats, unit norm per layer)\n", o.out.c_str(),
               model::steering_metadata_path(o.out).c_str(), c.n_layer, c.n_embd);
}

void common_flags(CLI::App* sub, SteerOpts& o) {
  sub->add_option("-m,--model", o.model, "Model .gguf")->required();
  sub->add_option("--component", o.component, "ffn (default) or attn")->capture_default_str();
  sub->add_flag("--think", o.think, "Prompts end with <think> (thinking mode) instead of </think>");
  sub->add_option("--system", o.system, "System text of the rendered prompts")->capture_default_str();
  sub->add_option("-o,--out", o.out, "Output .f32 file")->required();
  sub->add_option("-t,--threads", o.threads, "CPU threads (0: all)");
  sub->add_option("--backend", o.backend, "cpu (default)");
  sub->add_option("--numerics", o.numerics, "faithful (default) or exact");
}

Registration reg("steer", 85, [](CLI::App& app) {
  CLI::App* steer = app.add_subcommand("steer", "Directional steering: build a direction file, capture components");
  steer->require_subcommand(1);
  auto b = std::make_shared<SteerOpts>();
  CLI::App* sb = steer->add_subcommand("build", "Direction file from good/bad prompt sets (one prompt per line)");
  common_flags(sb, *b);
  sb->add_option("--good,--good-file", b->good, "Prompts showing the trait")->required();
  sb->add_option("--bad,--bad-file", b->bad, "Contrasting prompts")->required();
  sb->add_option("--control,--control-file", b->control, "Control prompts (default: good and bad together)");
  sb->add_flag("--pair-normalize", b->pair_normalize, "Average normalized pair differences");
  sb->add_flag("--no-orthogonalize", b->no_orthogonalize, "Keep the component along the control mean");
  sb->callback([b] { build(*b); });
  auto c = std::make_shared<SteerOpts>();
  CLI::App* sc = steer->add_subcommand("capture", "Write a prompt's component at every layer, before and after steering");
  common_flags(sc, *c);
  sc->add_option("-p,--prompt", c->prompt, "Prompt text")->required();
  add_steering_flags(sc, c->steering);
  sc->callback([c] { capture(*c); });
});

}  // namespace
}  // namespace ds4::cli

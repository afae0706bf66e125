#include "model/synth.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <future>
#include <numeric>

#include "gguf/gguf.h"
#include "model/convert.h"
#include "model/random_blocks.h"
#include "model/tensor_specs.h"
#include "quant/quant.h"
#include "util/error.h"
#include "util/log.h"
#include "util/thread_pool.h"


namespace ds4::model {
namespace {

float normal(SplitMix& g) {
  const double u = g.uniform(), v = g.uniform();
  return static_cast<float>(std::sqrt(-2 * std::log(u)) * std::cos(2 * M_PI * v));
}

// Small non-matrix tensors (norms near 1, HC scales in [0.5, 1.5], small
// biases): drawn as floats and converted, their cost is negligible.
float draw(SplitMix& g, TensorRole role) {
  switch (role) {
    case TensorRole::matrix: return normal(g);
    case TensorRole::norm: return 1.0f + 0.2f * normal(g);
    case TensorRole::hc_scale: return 0.5f + static_cast<float>(g.uniform());
    case TensorRole::hc_base:
    case TensorRole::sinks:
    case TensorRole::ape: return 0.5f * normal(g);
    case TensorRole::router_bias: return 0.1f * normal(g);
    case TensorRole::tid2eid: return 0;
  }
  return 0;
}

// Random bits are drawn in independent streams of a fixed number of blocks
// (about 1 MiB), each seeded from (seed, tensor, stream): the bytes do not
// depend on the thread count or on how streams are grouped into writes.
constexpr size_t kStreamBytes = size_t{1} << 20;
constexpr int64_t kStreamsPerWrite = 32;

// Double-buffered output: the pool fills one buffer while the previous one is
// written, so generation and disk writes overlap.
class Output {
 public:
  explicit Output(gguf::Writer& w) : w_(w) {}
  ~Output() {
    if (pending_.valid()) pending_.wait();
  }
  std::vector<uint8_t>& buffer(size_t n) {
    auto& b = bufs_[cur_];
    b.resize(n);
    return b;
  }
  // Writes buffer(n) as the next chunk of `name` in the background.
  void submit(const std::string& name) {
    wait();
    auto& b = bufs_[cur_];
    pending_ = std::async(std::launch::async, [this, name, &b] { w_.write_tensor_chunk(name, b); });
    cur_ ^= 1;
  }
  void wait() {
    if (pending_.valid()) pending_.get();  // rethrows a write error
  }

 private:
  gguf::Writer& w_;
  std::vector<uint8_t> bufs_[2];
  int cur_ = 0;
  std::future<void> pending_;
};

// The header, then a file extended to the full size without writing the data
// (a hole on filesystems with sparse files), renamed into place like the
// writer does.
void write_header_only(const gguf::Writer& w, const std::string& path) {
  const std::vector<uint8_t> header = w.header_bytes();
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail("{}: cannot create: {}", tmp, std::strerror(errno));
  const bool ok = std::fwrite(header.data(), 1, header.size(), f) == header.size() && std::fflush(f) == 0 &&
                  ::ftruncate(::fileno(f), static_cast<off_t>(header.size() + w.data_size())) == 0;
  const int err = errno;
  std::fclose(f);
  if (!ok) {
    std::remove(tmp.c_str());
    fail("{}: write failed: {}", tmp, std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail("{}: cannot rename to {}: {}", tmp, path, std::strerror(errno));
}

}  // namespace

void synth(const SynthOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  ModelConfig c = opt.shape.size() > 5 && opt.shape.ends_with(".json") ? config_from_hf_json(opt.shape) : preset_config(opt.shape);
  if (opt.layers > 0) {
    if (static_cast<uint32_t>(opt.layers) > c.n_layer) fail("synth: --layers {} exceeds the shape's {} layers", opt.layers, c.n_layer);
    c.n_layer = static_cast<uint32_t>(opt.layers);
    c.compress_ratios.resize(c.n_layer);
    c.swiglu_clamp.resize(c.n_layer);
    c.n_hash_layers = std::min(c.n_hash_layers, c.n_layer);
    c.validate();
  }
  // Optional tensors (a bias hash layers do not use) are left out.
  std::vector<TensorSpec> specs = tensor_specs(c);
  std::erase_if(specs, [](const TensorSpec& s) { return !s.required; });
  std::vector<GgmlType> types;
  gguf::Writer w;
  for (auto& [k, v] : c.to_metadata()) w.set(k, std::move(v));
  w.set("general.name", gguf::Value::str(fmt::format("synth-{}-seed{}", opt.shape, opt.seed)));
  if (!opt.tokenizer_json.empty()) embed_tokenizer(w, c, opt.tokenizer_json);
  for (const auto& s : specs) {
    types.push_back(s.role == TensorRole::tid2eid ? GgmlType::I32 : recipe_type(opt.recipe, s.name, s.ne));
    w.add_tensor_info(s.name, types.back(), s.ne);
  }
  if (opt.header_only) {
    write_header_only(w, opt.output);
    log::info("synth: wrote {} ({} layers, recipe {}): header only, {:.2f} GB of weights left as a hole", opt.output,
              c.n_layer, opt.recipe, static_cast<double>(w.data_size()) * 1e-9);
    return;
  }
  ThreadPool pool(opt.threads);
  w.begin(opt.output);
  Output out(w);
  uint64_t total = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorSpec& s = specs[i];
    const int64_t cols = s.ne[0];
    int64_t rows = 1;
    for (size_t d = 1; d < s.ne.size(); ++d) rows *= s.ne[d];
    const uint64_t tseed = mix_seed(opt.seed, i);
    if (s.role == TensorRole::tid2eid) {
      // each token: n_expert_used distinct experts (partial Fisher-Yates)
      SplitMix g(tseed);
      std::vector<uint8_t>& bytes = out.buffer(static_cast<size_t>(cols * rows) * 4);
      std::vector<int32_t> perm(c.n_expert);
      for (int64_t r = 0; r < rows; ++r) {
        std::iota(perm.begin(), perm.end(), 0);
        for (int64_t k = 0; k < cols; ++k) {
          const auto j = static_cast<size_t>(k + static_cast<int64_t>(g.next() % static_cast<uint64_t>(c.n_expert - k)));
          std::swap(perm[static_cast<size_t>(k)], perm[j]);
        }
        std::memcpy(bytes.data() + r * cols * 4, perm.data(), static_cast<size_t>(cols) * 4);
      }
      out.submit(s.name);
    } else if (s.role != TensorRole::matrix || !RandomBlocks::supports(types[i])) {
      SplitMix g(tseed);
      const size_t rb = quant::row_bytes(types[i], cols);
      std::vector<uint8_t>& bytes = out.buffer(rb * static_cast<size_t>(rows));
      std::vector<float> row(static_cast<size_t>(cols));
      const float scale = s.role == TensorRole::matrix ? 1.0f / std::sqrt(static_cast<float>(cols)) : 1.0f;
      for (int64_t r = 0; r < rows; ++r) {
        for (auto& x : row) x = draw(g, s.role) * scale;
        quant::quantize_row(types[i], row.data(), bytes.data() + static_cast<size_t>(r) * rb, cols);
      }
      out.submit(s.name);
    } else {
      // Matrices: each output of x @ W has about unit variance when the rows'
      // elements have rms 1/sqrt(fan_in) and x has unit rms.
      const RandomBlocks gen(types[i], 1.0f / std::sqrt(static_cast<float>(cols)));
      const int64_t n_blocks = cols * rows / gen.block_size();
      const int64_t per_stream = std::max<int64_t>(1, static_cast<int64_t>(kStreamBytes / gen.block_bytes()));
      const int64_t n_streams = (n_blocks + per_stream - 1) / per_stream;
      for (int64_t s0 = 0; s0 < n_streams; s0 += kStreamsPerWrite) {
        const int64_t s1 = std::min(n_streams, s0 + kStreamsPerWrite);
        const int64_t b0 = s0 * per_stream, b1 = std::min(n_blocks, s1 * per_stream);
        std::vector<uint8_t>& buf = out.buffer(static_cast<size_t>(b1 - b0) * gen.block_bytes());
        pool.parallel_for(s1 - s0, [&](int64_t lo, int64_t hi) {
          for (int64_t k = s0 + lo; k < s0 + hi; ++k) {
            const int64_t kb0 = k * per_stream, kb1 = std::min(n_blocks, kb0 + per_stream);
            gen.fill(mix_seed(tseed, static_cast<uint64_t>(k)), buf.data() + static_cast<size_t>(kb0 - b0) * gen.block_bytes(),
                     kb1 - kb0);
          }
        });
        out.submit(s.name);
      }
    }
    total += quant::row_bytes(types[i], cols) * static_cast<size_t>(rows);
    log::info("[{}/{}] {} {} {}", i + 1, specs.size(), s.name, ggml_type_name(types[i]), fmt::format("[{}]", fmt::join(s.ne, ", ")));
  }
  out.wait();
  w.finish();
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log::info("synth: wrote {} ({} layers, recipe {}, seed {}): {:.2f} GB in {:.1f} s, {:.0f} MB/s", opt.output, c.n_layer,
            opt.recipe, opt.seed, static_cast<double>(total) * 1e-9, sec, static_cast<double>(total) * 1e-6 / sec);
}

}  // namespace ds4::model
